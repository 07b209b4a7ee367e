"""One preset entry trained until its first validation pass has read every batch.

usage: python -m support.entryrun CONFIG.json OUT RESULT.json   (tests/ on PYTHONPATH, KERAS_BACKEND set)

tests/test_presets.py runs every entry this way: in its own process through
:func:`run_entry`, and here, in a process of its own, the entries whose Keras backend the
test process cannot switch to (it runs Keras on TensorFlow). The entry trains on the toy set
(20 images: ``synthetic_dataset(2, 1)``) with :class:`StopAfterValidation` watching it;
RESULT.json gets the step losses, the number of validation batches and the Keras backend
the run used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from alexbench.hooks import Hooks


class Stop(Exception):
    """Raised when the first validation pass has read its last batch."""


class StopAfterValidation(Hooks):
    """Counts the steps and stops the run when the first validation pass has read its last batch."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.evaluated = 0

    def step_end(self, global_step: int, loss: float) -> None:
        self.losses.append(loss)

    def eval_end(self, batches: int) -> None:
        self.evaluated = batches
        raise Stop


def run_entry(cfg: Any, out: Path) -> StopAfterValidation:  # cfg: a TrainConfig
    """Train ``cfg`` on the toy set until its first validation pass ends; returns the hooks that watched it."""
    from alexbench.train import train
    from support.toydata import synthetic_dataset

    hooks = StopAfterValidation()
    try:
        train(cfg, out, data=synthetic_dataset(2, 1), quiet=True, hooks=hooks)
    except Stop:
        return hooks
    raise AssertionError(f"{out}: the run ended without a validation pass")


def main(argv: list[str]) -> int:
    from alexbench.config import validate
    from alexbench.frameworks import keras_backend_in_process

    cfg = validate(json.loads(Path(argv[0]).read_text()))
    hooks = run_entry(cfg, Path(argv[1]))
    backend = keras_backend_in_process() if cfg.framework == "keras" else None
    Path(argv[2]).write_text(json.dumps({"losses": hooks.losses, "evaluated": hooks.evaluated, "backend": backend}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
