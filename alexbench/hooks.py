"""Hook points of the training loop, for code that must watch or steer a run without patching it.

Pass a :class:`Hooks` subclass to :func:`alexbench.train.train` (or
:func:`alexbench.runner.run`); override only what you need. The loop calls:

    step_start ─► engine.train_step ─► step_end          (every optimizer step)
    eval_start, eval_batch(0) … eval_batch(n-1), eval_end  (every evaluation pass: val each epoch, then test)
    checkpoint_written(name, path, progress)              (after checkpoints/last.* or best.* is in place)

The evaluation calls come from inside ``engine.predict`` as it reads its batches.

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

    def eval_start(self) -> None:
        """An evaluation pass asks for its first batch."""

    def eval_batch(self, index: int) -> None:
        """Batch ``index`` (0-based) of an evaluation pass is about to go to the engine."""

    def eval_end(self, batches: int) -> None:
        """The pass has read all its ``batches`` batches (the engine has not returned yet)."""

    def checkpoint_written(self, name: str, path: Path, progress: dict[str, Any]) -> None:
        """After checkpoint ``name`` ("last" or "best") was written to ``path``; ``progress`` is
        the loop state saved in it (epoch, step, global_step, ...)."""


def observe_eval(batches: Iterable[T], hooks: Hooks) -> Iterator[T]:
    """``batches``, telling ``hooks`` of the pass's start, of each batch and of its end."""
    hooks.eval_start()
    n = 0
    for batch in batches:
        hooks.eval_batch(n)
        yield batch
        n += 1
    hooks.eval_end(n)
