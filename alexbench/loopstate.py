"""The training loop's state and its terminal: what a checkpoint saves to resume exactly, the run's log, Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WARMUP_STEPS = 2  # steps excluded from img/s after every (re)start: tracing, allocator warm-up

__all__ = ["Progress", "RunLog", "Interrupt", "progress_bar"]


class RunLog:
    """Appends timestamped lines to the run's log.txt and, unless quiet, echoes them to stderr."""

    def __init__(self, path: Path | None, quiet: bool) -> None:
        self.path, self.quiet = path, quiet  # path None: a data-parallel rank other than 0 (silent)

    def __call__(self, msg: str) -> None:
        if self.path is None:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)


@dataclass
class Progress:
    """Everything needed to continue a run exactly where it stopped."""

    epoch: int = 0  # epoch in progress (0-based)
    step: int = 0  # next step inside that epoch
    global_step: int = 0
    history: list = field(default_factory=list)
    loss_sum: float = 0.0  # running sums of the epoch in progress
    correct: int = 0
    seen: int = 0
    epoch_seconds: float = 0.0
    timed_images: int = 0
    timed_seconds: float = 0.0
    data_seconds: float = 0.0
    step_seconds: float = 0.0
    train_seconds: float = 0.0
    best_val: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False

    def to_meta(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_meta(cls, meta: dict, where: str = "checkpoint") -> "Progress":
        """The progress stored in a checkpoint, each field checked against its type (one line if not)."""
        from alexbench.resume import checked_progress

        return cls(**checked_progress(meta, cls(), where))


class Interrupt:
    """Ctrl-C sets a flag; the loop checkpoints after the current step and exits cleanly."""

    def __init__(self) -> None:
        self.flag = False
        self._old: Any = None  # the SIGINT handler this replaced (a callable, SIG_DFL/SIG_IGN, or None)

    def __enter__(self) -> "Interrupt":
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, *_: object) -> None:
        if self.flag:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def progress_bar(quiet: bool):  # noqa: ANN201 - a rich Progress or None
    """A transient progress bar on a terminal; None when quiet, under CI or when stderr is not a terminal."""
    if quiet or os.environ.get("CI") or not sys.stderr.isatty():
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=True)
