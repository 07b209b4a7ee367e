"""The one exception type that means "the user gave us something bad".

The CLI turns a :class:`UserError` into one line on stderr and exit code 2. Anything
else is an internal error (exit code 1). Messages should name the file or field and
the problem, e.g. ``config.yaml: optimizer.lr: must be > 0 (got -0.1)``.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or usage. Printed as one line; exit code 2."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""
