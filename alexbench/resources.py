"""A light resource sampler: CPU, memory and (where a GPU is used) GPU load over a run's wall time.

A daemon thread wakes every ``interval`` seconds and appends one row to the run
folder's ``resources.csv``: the process's CPU utilisation (100 = one core busy, so up
to 100 x cores), the whole machine's CPU utilisation (0-100), the process's resident
memory and, on a GPU, the device's utilisation and memory in use (NVML, from the
``nvidia-ml-py`` package; torch's allocator figure where NVML is missing). A resumed run
appends to the same file, so wall time counts from the run's first sample.

Each sample republishes the whole file atomically (:mod:`alexbench.atomic`; a few
kilobytes per hour of training), so a killed run never leaves a torn file. ``summarize``
gives the figures ``metrics.json`` keeps (mean CPU %, peak RSS, peak GPU memory).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from alexbench.atomic import atomic_write_text
from alexbench.rundir import RESOURCES

__all__ = ["RESOURCES", "COLUMNS", "ResourceSampler", "read_resources", "summarize"]

COLUMNS = ("unix_time", "elapsed_seconds", "cpu_percent", "system_cpu_percent", "rss_bytes", "gpu_util_percent",
           "gpu_memory_bytes")


def _gpu_index(device: str) -> int | None:
    """The GPU a run uses, from the engine's device name (torch's "cuda", "cuda:1"; Keras's "gpu", "gpu:1",
    "/GPU:0"); None on CPU."""
    d = device.lower()
    if not (d.startswith("cuda") or d.startswith("/gpu") or d.startswith("gpu")):
        return None
    tail = d.rsplit(":", 1)[-1] if ":" in d else "0"
    return int(tail) if tail.isdigit() else 0


def _gpu_probe(index: int) -> Callable[[], tuple[float | None, float | None]] | None:
    """``() -> (utilisation %, memory bytes in use)`` for GPU ``index`` as the process numbers it."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    nvml_index = int(ids[index]) if index < len(ids) and ids[index].isdigit() else index
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)

        def nvml() -> tuple[float | None, float | None]:
            return (float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                    float(pynvml.nvmlDeviceGetMemoryInfo(handle).used))
        return nvml
    except Exception:  # noqa: BLE001 - no NVML library or package: torch's own figure if it is there
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return lambda: (None, float(torch.cuda.memory_reserved(index)))
    return None


class ResourceSampler:
    """Samples until :meth:`stop`; use as a context manager around the training."""

    def __init__(self, run_dir: str | os.PathLike, interval: float = 2.0, device: str = "cpu") -> None:
        import psutil

        self.path = Path(run_dir) / RESOURCES
        self.interval = float(interval)
        self._proc = psutil.Process()
        self._psutil = psutil
        gpu = _gpu_index(device)
        self._gpu = _gpu_probe(gpu) if gpu is not None else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.time()
        rows = read_resources(self.path)
        if rows:  # a resumed run: wall time goes on from the run's start
            self._t0 = rows[0]["unix_time"] - (rows[0]["elapsed_seconds"] or 0.0)  # type: ignore[operator]  # the sampler writes unix_time on every row
        self._lines = [_format(r.get(c) for c in COLUMNS) for r in rows]

    def _sample(self) -> None:
        now = time.time()
        cpu = self._proc.cpu_percent(None)
        system = self._psutil.cpu_percent(None)
        rss = self._proc.memory_info().rss
        util, mem = self._gpu() if self._gpu is not None else (None, None)
        self._lines.append(_format((now, now - self._t0, cpu, system, rss, util, mem)))
        atomic_write_text(self.path, "\n".join([",".join(COLUMNS), *self._lines]) + "\n")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except Exception:  # noqa: BLE001 - a failed sample (disk full, GPU gone) never stops training
                pass

    def start(self) -> "ResourceSampler":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the first cpu_percent calls only set the baseline; utilisation is measured between samples
        self._proc.cpu_percent(None)
        self._psutil.cpu_percent(None)
        self._thread = threading.Thread(target=self._run, name="alexbench-resources", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and take a last sample (a run shorter than one interval still gets a row)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        try:
            self._sample()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "ResourceSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _format(values) -> str:  # noqa: ANN001 - iterable of float | int | None
    return ",".join("" if v is None else (f"{v:.3f}" if isinstance(v, float) and not float(v).is_integer()
                                          else str(int(v))) for v in values)


def read_resources(path: str | os.PathLike) -> list[dict[str, float | None]]:
    """The rows of a ``resources.csv`` (empty cells are None); malformed lines are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    if not lines:
        return []
    header = lines[0].split(",")
    if "unix_time" not in header or "cpu_percent" not in header:
        return []
    rows = []
    for line in lines[1:]:
        cells = line.split(",")
        if len(cells) != len(header):
            continue
        try:
            row = {h: (float(c) if c != "" else None) for h, c in zip(header, cells)}
        except ValueError:
            continue
        if row["unix_time"] is None or not math.isfinite(row["unix_time"]):
            continue
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, float | None]], interval: float | None = None) -> dict:
    """``metrics.json``'s ``resources`` block: counts, means and peaks over the samples."""

    def col(name: str) -> list[float]:
        return [v for r in rows if (v := r.get(name)) is not None]

    def mean(v: list[float]) -> float | None:
        return sum(v) / len(v) if v else None

    cpu, system, rss, util, mem = (col(c) for c in ("cpu_percent", "system_cpu_percent", "rss_bytes",
                                                    "gpu_util_percent", "gpu_memory_bytes"))
    return {"samples": len(rows), "interval_seconds": interval, "mean_cpu_percent": mean(cpu),
            "max_cpu_percent": max(cpu) if cpu else None, "mean_system_cpu_percent": mean(system),
            "peak_rss_bytes": int(max(rss)) if rss else None, "mean_gpu_util_percent": mean(util),
            "peak_gpu_memory_bytes": int(max(mem)) if mem else None}
