"""Where a training step's time goes: per-op tables for both engines.

- PyTorch: ``torch.profiler`` (CPU activity) over a few steps after two untimed ones;
  rows are ATen ops by *self* time, so the rows add up to the step's wall time.
- Keras/TensorFlow: ``tf.profiler`` over the same number of steps; the trace
  (``*.xplane.pb``) is read directly and the op events of TensorFlow's compute thread
  are summed, by op type and by op. alexbench runs TF with one inter-op thread, so
  the ops run one after another and their times add up to the step's wall time too.
- Keras on torch: ``torch.profiler``, as for the PyTorch engine (Keras's ops are torch ops).
- Keras on JAX: ``jax.profiler``; its trace is the same ``*.xplane.pb`` format, read with
  TensorFlow's reader; the events of XLA's CPU thunks (one per HLO instruction of the
  compiled step) are summed by HLO kind (``convolution``, ``fusion``, ``dot``...).
"""

from __future__ import annotations

import collections
import glob
import os
import tempfile
import time
from typing import Any


def _torch_profile(engine: Any, batches: list, lr: float, top: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    for xb, yb in batches[:2]:
        engine.train_step(xb, yb, lr)
    steps = batches[2:]
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for xb, yb in steps:
            engine.train_step(xb, yb, lr)
    wall = (time.perf_counter() - t0) / len(steps)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    table = [{"op": e.key, "ms_per_step": e.self_cpu_time_total / 1e3 / len(steps),
              "share": e.self_cpu_time_total / total, "calls_per_step": e.count / len(steps)} for e in rows]
    return {"tool": f"torch.profiler {torch.__version__}", "steps": len(steps), "wall_ms_per_step": wall * 1e3,
            "profiled_ms_per_step": total / 1e3 / len(steps), "by_op": table}


def _xplane_trace(engine: Any, batches: list, lr: float, start: Any, stop: Any, prefix: str) -> tuple[int, float, Any]:
    """Two warm-up steps, then the other batches traced between ``start(logdir)`` and ``stop()``
    (TensorFlow's or JAX's profiler, both write XPlane): (steps traced, wall seconds per step, the XSpace)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    for xb, yb in batches[:2]:
        engine.train_step(xb, yb, lr)
    steps = batches[2:]
    with tempfile.TemporaryDirectory(prefix=prefix) as logdir:
        t0 = time.perf_counter()
        start(logdir)
        for xb, yb in steps:
            engine.train_step(xb, yb, lr)
        stop()
        wall = (time.perf_counter() - t0) / len(steps)
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(sorted(paths)[-1], "rb") as fh:
            space.ParseFromString(fh.read())
    return len(steps), wall, space


def _keras_profile(engine: Any, batches: list, lr: float, top: int) -> dict:
    import tensorflow as tf

    n, wall, space = _xplane_trace(engine, batches, lr, tf.profiler.experimental.start,
                                   tf.profiler.experimental.stop, "alexbench-tfprof-")
    by_type: collections.Counter = collections.Counter()
    by_op: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        meta = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for ev in line.events:
                name = meta[ev.metadata_id].name
                if ":" not in name or "::" in name:  # executor bookkeeping, not an op
                    continue
                op_name, op_type = name.rsplit(":", 1)
                ms = ev.duration_ps / 1e9
                by_type[op_type] += ms
                by_op[op_name] += ms
                calls[op_type] += 1
    total = sum(by_type.values())
    return {"tool": f"tf.profiler (TensorFlow {tf.__version__})", "steps": n, "wall_ms_per_step": wall * 1e3,
            "profiled_ms_per_step": total / n,
            "by_op_type": [{"op": k, "ms_per_step": v / n, "share": v / total, "calls_per_step": calls[k] / n}
                           for k, v in by_type.most_common(top)],
            "by_op": [{"op": k, "ms_per_step": v / n, "share": v / total} for k, v in by_op.most_common(top)]}


def _jax_profile(engine: Any, batches: list, lr: float, top: int) -> dict:
    import re

    import jax

    # jax writes the same trace format as TensorFlow
    n, wall, space = _xplane_trace(engine, batches, lr, jax.profiler.start_trace, jax.profiler.stop_trace,
                                   "alexbench-jaxprof-")
    by_kind: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    hlo = re.compile(r"^([a-z][a-z0-9_-]*?)(\.\d+)*$")  # "convolution.3", "fusion.12", "dot.1"
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        meta = plane.event_metadata
        for line in plane.lines:
            for ev in line.events:
                m = hlo.match(meta[ev.metadata_id].name)
                if not m:  # Python, runtime and dispatch events
                    continue
                by_kind[m.group(1)] += ev.duration_ps / 1e9
                calls[m.group(1)] += 1
    total = sum(by_kind.values())
    return {"tool": f"jax.profiler (jax {jax.__version__})", "steps": n, "wall_ms_per_step": wall * 1e3,
            "profiled_ms_per_step": total / n,
            "by_op_type": [{"op": k, "ms_per_step": v / n, "share": v / total if total else None,
                            "calls_per_step": calls[k] / n} for k, v in by_kind.most_common(top)]}


def profile_engine(engine: Any, batches: list, lr: float, top: int = 15) -> dict:
    """Profile ``len(batches) - 2`` training steps of ``engine`` (the first two are untimed)."""
    if engine.framework == "torch" or getattr(engine, "backend", "tensorflow") == "torch":
        return _torch_profile(engine, batches, lr, top)
    if engine.backend == "jax":
        return _jax_profile(engine, batches, lr, top)
    return _keras_profile(engine, batches, lr, top)
