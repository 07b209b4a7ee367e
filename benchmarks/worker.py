"""The worker process: build one configuration, then answer timing requests.

Protocol: the first stdin line is the spec (``{"kind": ..., ...}``); the worker builds
the target and answers ``{"ready": true, "setup_seconds": ...}``. Each later line is a
request ``{"op": ..., ...}`` answered by one JSON line. Framework chatter goes to stderr
(the parent's log file): stdout is reserved for answers.

Kinds: ``engine`` (an alexbench engine on the shared stream, here),
``plain_torch`` and ``plain_keras`` (:mod:`benchmarks.baselines`), ``gemm`` and
``gemm_tf`` (:mod:`benchmarks.mfu`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

import numpy as np

from benchmarks.arrays import load_arrays
from benchmarks.process import cpu_seconds, max_rss_bytes


class EngineTarget:
    """An alexbench engine fed by the shared :class:`~alexbench.data.stream.BatchStream`, as ``train`` does."""

    def __init__(self, spec: dict) -> None:
        from alexbench.config import validate
        from alexbench.data.stream import BatchStream
        from alexbench.engines import make_engine
        from alexbench.frameworks import set_threads
        from alexbench.models import MODELS
        from alexbench.prepare import run_normalization

        self.cfg = validate(spec["config"], "benchmark config")
        set_threads(self.cfg.threads)
        arrays = load_arrays(spec["data_dir"])
        # the stream gathers batches from RAM, as in a real run (not from the memory map)
        self.x, self.y = np.ascontiguousarray(arrays["x_train"]), np.ascontiguousarray(arrays["y_train"])
        self.x_test = np.ascontiguousarray(arrays["x_test"])
        self.y_test = np.ascontiguousarray(arrays["y_test"])
        input_size = self.cfg.input_size or MODELS[self.cfg.model].input_size
        self.norm = run_normalization(self.cfg, self.x)
        self.engine: Any = make_engine(self.cfg, int(spec.get("num_classes", 10)), self.norm, input_size)
        self.engine.build()
        a = self.cfg.augment
        self.stream = BatchStream(self.x, self.y, self.cfg.batch_size, self.cfg.seed, augment=a.enabled,
                                  pad=a.crop_padding, flip=a.flip)
        self.epoch = 0
        self.lr = float(spec.get("lr", 1e-3))

    def _batches(self):  # noqa: ANN202 - endless iterator over epochs, like consecutive train epochs
        while True:
            yield from self.stream.batches(self.epoch)
            self.epoch += 1

    def op_train(self, steps: int, warmup: int, prefetch: bool = True, **_: object) -> dict:
        """``warmup`` untimed steps, then ``steps`` timed ones; data wait is timed as ``train`` does."""
        from alexbench.data.stream import prefetch as prefetch_fn

        self.engine.train_mode()
        gen = self._batches()
        it: Any = prefetch_fn(gen) if prefetch else gen
        bs = self.cfg.batch_size
        waits: list[float] = []
        step_times: list[float] = []
        first_step: float | None = None
        t_start: float | None = None
        loss = float("nan")
        t_wait = time.perf_counter()
        try:
            for i in range(warmup + steps):
                if i == warmup:
                    t_start = t_wait
                xb, yb = next(it)
                t0 = time.perf_counter()
                loss, _n = self.engine.train_step(xb, yb, self.lr)
                t1 = time.perf_counter()
                if i == 0:
                    first_step = t1 - t0
                if i >= warmup:
                    waits.append(t0 - t_wait)
                    step_times.append(t1 - t0)
                t_wait = t1
            t_end = time.perf_counter()
        finally:
            it.close()
            self.epoch += 1  # next block starts a fresh epoch plan
        elapsed = (t_end - t_start) if steps and t_start is not None else 0.0
        return {"images": steps * bs, "seconds": elapsed, "ips": steps * bs / elapsed if steps else None,
                "data_wait_seconds": sum(waits), "data_share": sum(waits) / elapsed if steps else None,
                "step_seconds_median": float(np.median(step_times)) if step_times else None,
                "first_step_seconds": first_step, "loss": float(loss), "max_rss_bytes": max_rss_bytes(),
                "precision": self.engine.precision}

    def op_stream(self, batches: int, **_: object) -> dict:
        """What the stream itself costs per batch (gather + crop + flip), without prefetch."""
        plan = self.stream.plan(10_000 + self.epoch)
        t0 = time.perf_counter()
        for s in range(batches):
            self.stream.batch(plan, s % len(self.stream))
        sec = (time.perf_counter() - t0) / batches
        return {"seconds_per_batch": sec}

    def op_prep(self, batches: int, **_: object) -> dict:
        """In-engine normalise (+ resize to the model's input) on whole batches, timed alone."""
        plan = self.stream.plan(20_000 + self.epoch)
        xs = [self.stream.batch(plan, s % len(self.stream))[0] for s in range(batches)]
        if self.engine.framework == "torch":
            torch = self.engine.torch

            def run(xb):  # noqa: ANN001, ANN202
                with torch.no_grad():
                    return self.engine._prep(xb)
        else:
            from alexbench.engines.keras_steps import prepare

            eng = self.engine
            if eng.backend == "tensorflow":
                import tensorflow as tf

                fn = tf.function(lambda xb: prepare(eng, xb))
            elif eng.backend == "jax":
                import jax

                fn = jax.jit(lambda xb: prepare(eng, xb))
            else:
                fn = lambda xb: prepare(eng, eng.keras.ops.convert_to_tensor(xb))  # noqa: E731

            def run(xb):  # noqa: ANN001, ANN202
                return eng.keras.ops.convert_to_numpy(fn(xb)).shape

        run(xs[0])
        t0 = time.perf_counter()
        for xb in xs:
            run(xb)
        return {"seconds_per_batch": (time.perf_counter() - t0) / batches}

    def op_eval(self, images: int, batch: int, **_: object) -> dict:
        from alexbench.data.stream import eval_batches

        n = min(images, len(self.y_test))
        t0 = time.perf_counter()
        probs, _labels = self.engine.predict(eval_batches(self.x_test[:n], self.y_test[:n], batch))
        sec = time.perf_counter() - t0
        return {"images": n, "seconds": sec, "ips": n / sec,
                "accuracy": float((probs.argmax(1) == self.y_test[:n]).mean())}

    def op_profile(self, steps: int, top: int = 15, **_: object) -> dict:
        from benchmarks.profiles import profile_engine

        self.engine.train_mode()
        plan = self.stream.plan(30_000 + self.epoch)
        batches = [self.stream.batch(plan, s % len(self.stream)) for s in range(steps + 2)]
        return profile_engine(self.engine, batches, self.lr, top=top)


def build(spec: dict) -> Any:
    kind = spec["kind"]
    if kind == "engine":
        return EngineTarget(spec)
    if kind == "plain_torch":
        from benchmarks.baselines import PlainTorchLoop

        return PlainTorchLoop(spec)
    if kind == "plain_keras":
        from benchmarks.baselines import PlainKerasFit

        return PlainKerasFit(spec)
    if kind == "gemm":
        from benchmarks.mfu import GemmTarget

        return GemmTarget(spec)
    if kind == "gemm_tf":
        from benchmarks.mfu import TfGemmTarget

        return TfGemmTarget(spec)
    raise ValueError(f"unknown worker kind {kind!r}")


def main() -> int:
    # stdout carries answers only; anything else printed (by us or C++ code) goes to stderr
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj: dict) -> None:
        answers.write(json.dumps(obj) + "\n")
        answers.flush()

    spec = json.loads(sys.stdin.readline())
    t0 = time.perf_counter()
    try:
        target = build(spec)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        reply({"error": f"setup failed: {type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        return 1
    reply({"ready": True, "setup_seconds": time.perf_counter() - t0, "max_rss_bytes": max_rss_bytes()})
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        if op == "exit":
            break
        cpu0 = cpu_seconds()
        try:
            out = getattr(target, f"op_{op}")(**req)
        except BaseException as exc:  # noqa: BLE001
            reply({"error": f"{op} failed: {type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
            continue
        out["cpu_seconds"] = cpu_seconds() - cpu0  # this process and its reaped children (DataLoader workers)
        reply(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
