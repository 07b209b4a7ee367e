"""What watches a run without touching its arithmetic: TensorBoard event files and the resource sampler.

The loop opens one :class:`RunMonitors` around training and evaluation, hands it each
epoch's history row and, before ``metrics.json`` is written, the metrics dict, to which
it adds the resource summary. Config keys: ``tensorboard`` and ``resource_interval_seconds``
(0 turns the sampler off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from alexbench.resources import ResourceSampler, read_resources, summarize
from alexbench.tblog import EventWriter

__all__ = ["RunMonitors"]


class RunMonitors:
    def __init__(self, run_dir: Path, cfg: Any, device: str) -> None:
        self.run_dir = Path(run_dir)
        self.interval = float(cfg.resource_interval_seconds)
        self.tb = EventWriter(run_dir) if cfg.tensorboard else None
        self.sampler = ResourceSampler(run_dir, self.interval, device) if self.interval > 0 else None

    def __enter__(self) -> "RunMonitors":
        if self.sampler is not None:
            self.sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.tb is not None:
            self.tb.close()

    def epoch(self, row: Mapping[str, float]) -> None:
        if self.tb is not None:
            self.tb.epoch(row)

    def finish(self, metrics: dict) -> None:
        """Stop sampling; add ``resources``, ``mean_cpu_percent`` and ``peak_gpu_memory_bytes`` to
        ``metrics``; log the test metrics to TensorBoard at the last epoch."""
        if self.sampler is not None:
            self.sampler.stop()
            res = summarize(read_resources(self.sampler.path), self.interval)
            metrics["resources"] = res
            metrics["mean_cpu_percent"] = res["mean_cpu_percent"]
            metrics["peak_gpu_memory_bytes"] = res["peak_gpu_memory_bytes"]
        if self.tb is not None:
            self.tb.test(len(metrics.get("epochs") or []), metrics["test"])
