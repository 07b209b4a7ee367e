"""alexbench's one logger, and the one place that decides what reaches stderr.

Every module writes through a child of the ``"alexbench"`` logger::

    from alexbench.log import get_logger
    log = get_logger(__name__)        # "alexbench.data.cache", ...
    log.info("downloading %s", url)   # a plain line on stderr
    log.warning("cache not written")  # "warning: cache not written"

:func:`configure` is called once, by the CLI (``alexbench --quiet`` / ``--verbose``).
Levels: ``--quiet`` shows warnings and errors only, the default adds progress lines
(INFO), ``--verbose`` adds DEBUG. Lines are written to whatever ``sys.stderr`` is at
the time (so redirections and test capture see them), one per record, flushed.
Without :func:`configure` (alexbench used as a library) the application's own logging
setup applies; with none at all, Python prints warnings and errors bare.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

__all__ = ["LOGGER_NAME", "QUIET", "NORMAL", "VERBOSE", "get_logger", "configure", "verbosity_level",
           "progress_enabled"]

LOGGER_NAME = "alexbench"
QUIET, NORMAL, VERBOSE = -1, 0, 1  # the CLI switch's three settings
_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}
_PREFIX = {logging.DEBUG: "debug: ", logging.WARNING: "warning: "}  # INFO and ERROR lines are shown as written


def get_logger(name: str | None = None) -> logging.Logger:
    """The ``alexbench`` logger, or its child for a module (``get_logger(__name__)``)."""
    if not name or name == LOGGER_NAME:
        return logging.getLogger(LOGGER_NAME)
    if not name.startswith(f"{LOGGER_NAME}."):
        name = f"{LOGGER_NAME}.{name}"
    return logging.getLogger(name)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return _PREFIX.get(record.levelno, "") + text


class _StderrHandler(logging.StreamHandler):
    """A stream handler bound to the *current* ``sys.stderr``, looked up at each record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:  # whatever sys.stderr is now
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - StreamHandler.__init__ assigns it; ignored
        pass


def verbosity_level(verbosity: int) -> int:
    """The logging level for a verbosity (:data:`QUIET`, :data:`NORMAL` or :data:`VERBOSE`)."""
    if verbosity not in _LEVELS:
        raise ValueError(f"verbosity must be one of {sorted(_LEVELS)} (got {verbosity!r})")
    return _LEVELS[verbosity]


def configure(verbosity: int = NORMAL) -> logging.Logger:
    """Send the ``alexbench`` logger's records at or above the verbosity's level to stderr.

    Idempotent: calling it again replaces the handler it installed before (the CLI
    calls it once per ``main``; tests call it between runs).
    """
    logger = logging.getLogger(LOGGER_NAME)
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(verbosity_level(verbosity))
    return logger


def progress_enabled() -> bool:
    """Whether to draw progress bars: stderr is a terminal, not under CI, and not ``--quiet``."""
    return (sys.stderr.isatty() and not os.environ.get("CI")
            and logging.getLogger(LOGGER_NAME).isEnabledFor(logging.INFO))
