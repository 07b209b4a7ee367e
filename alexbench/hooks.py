"""Hook points of the training loop, for code that must watch or steer a run without patching it.

Pass a :class:`Hooks` subclass to :func:`alexbench.train.train` (or
:func:`alexbench.runner.run`); override only what you need. The loop calls:

    step_start ─► engine.train_step ─► step_end        (every optimizer step)
    eval_batch(0) … eval_batch(n-1), eval_batch(n)      (every evaluation pass: val each epoch, then test)
    checkpoint_written(name, path, progress)            (after checkpoints/last.* or best.* is in place)

Every file the product writes goes through :mod:`alexbench.atomic`; to watch those
writes (in any command, not only ``train``), register a file hook with
:func:`alexbench.atomic.add_file_hook`.

A hook runs inside the loop: an exception it raises stops the run as any other
error would. Hooks must not change what the run computes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

__all__ = ["Hooks", "observe_eval"]

T = TypeVar("T")


class Hooks:
    """No-op hooks; subclass and override."""

    def step_start(self, global_step: int) -> None:
        """Before optimizer step ``global_step`` (0-based, counted over the whole run) runs."""

    def step_end(self, global_step: int, loss: float) -> None:
        """After optimizer step ``global_step`` ran and returned ``loss``."""

    def eval_batch(self, index: int) -> None:
        """Before batch ``index`` of an evaluation pass goes to the engine; once more, with
        ``index`` equal to the number of batches, when the pass has read them all."""

    def checkpoint_written(self, name: str, path: Path, progress: dict[str, Any]) -> None:
        """After checkpoint ``name`` ("last" or "best") was written to ``path``; ``progress`` is
        the loop state saved in it (epoch, step, global_step, ...)."""


def observe_eval(batches: Iterable[T], hooks: Hooks) -> Iterator[T]:
    """``batches``, calling ``hooks.eval_batch`` before each one and once after the last."""
    n = 0
    for batch in batches:
        hooks.eval_batch(n)
        yield batch
        n += 1
    hooks.eval_batch(n)
