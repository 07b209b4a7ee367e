"""TensorBoard event files in the run folder, so ``tensorboard --logdir runs/`` shows every run.

Written with the ``tensorboard`` package's own record writer and protocol buffers,
which import neither TensorFlow nor torch: a PyTorch run stays free of TensorFlow, and
both engines get the same tags because the shared loop writes them. The event files
are a view: ``history.csv`` and ``metrics.json`` stay the source of truth.

Tags, at step = epoch: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``lr``,
``images_per_second``; at the last epoch: ``test/accuracy``, ``test/top5_accuracy``,
``test/loss`` and ``test/per_class_accuracy/<class>``.
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping

__all__ = ["EPOCH_TAGS", "EventWriter"]

# history column -> tag
EPOCH_TAGS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss", "val_acc": "val/acc",
              "lr": "lr", "images_per_second": "images_per_second"}


class EventWriter:
    """Appends scalar summaries to a new event file in ``logdir`` (one file per process that writes)."""

    def __init__(self, logdir: str | os.PathLike) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        # the name TensorBoard looks for (rundir.EVENTS_GLOB)
        self.path = logdir / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        self._fh = open(self.path, "ab")
        self._writer = RecordWriter(self._fh)
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))
        self._fh.flush()

    def _write(self, event) -> None:  # noqa: ANN001 - event_pb2.Event
        self._writer.write(event.SerializeToString())

    def scalars(self, step: int, values: Mapping[str, float | None]) -> None:
        """One event holding every finite value in ``values`` (tag -> value) at ``step``; flushed."""
        vals = [self._summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()
                if v is not None and math.isfinite(float(v))]
        if vals:
            self._write(self._event(wall_time=time.time(), step=int(step), summary=self._summary(value=vals)))
            self._fh.flush()

    def epoch(self, row: Mapping[str, Any]) -> None:
        """One history row (see ``rundir.HISTORY_COLUMNS``) at step = its epoch."""
        self.scalars(int(row["epoch"]), {tag: row.get(col) for col, tag in EPOCH_TAGS.items()})

    def test(self, step: int, test: Mapping) -> None:
        """The final test metrics (``metrics.json``'s ``test``) at ``step`` (the last epoch)."""
        values = {f"test/{k}": test.get(k) for k in ("accuracy", "top5_accuracy", "loss")}
        for name, acc in (test.get("per_class_accuracy") or {}).items():
            values[f"test/per_class_accuracy/{str(name).replace('/', '_')}"] = acc
        self.scalars(step, values)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._fh.close()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
