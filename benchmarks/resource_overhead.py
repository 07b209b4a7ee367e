"""Cost of the resource sampler: the same training run with it on and off, side by side.

``python -m benchmarks.resource_overhead [--data SOURCE] [--pairs N] [--images N]``

One process, one dataset load, one untimed warm-up run; then ``N`` pairs of identical
runs (``alexnet_cifar``, torch, one epoch), the order inside each pair alternating
(off-on, on-off, ...), differing only in ``resource_interval_seconds`` (0 = off, 2 =
the default). Before each run it waits (bounded) for other processes to quieten and
records how busy they kept the machine. Printed: training img/s per run, the median of
each arm, the median and range of the per-pair on/off ratios, and the sampler's own CPU
time per sample (200 samples timed directly), as a share of one core at the default interval.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Machine


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset source (default: the embedded sample)")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--images", type=int, default=4000, help="training images per run")
    ap.add_argument("--width", type=float, default=0.5, help="alexnet_cifar width multiplier")
    args = ap.parse_args(argv)

    from alexbench.config import validate
    from alexbench.data import load_dataset
    from alexbench.frameworks import cpu_name
    from alexbench.resources import ResourceSampler
    from alexbench.train import train

    ds = load_dataset(args.data or "embedded")
    base = {"model": "alexnet_cifar", "framework": "torch", "model_options": {"width": args.width}, "epochs": 1,
            "batch_size": 128, "max_train_images": args.images, "max_test_images": 500, "val_fraction": 0.05,
            "tensorboard": False, "tta_flip": False}
    machine = Machine(max_wait=20.0, budget=300.0)
    results: dict[str, list[float]] = {"off": [], "on": []}
    pairs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        def one(arm: str, i: int) -> float:
            cfg = validate({**base, "resource_interval_seconds": 2.0 if arm == "on" else 0.0})
            gate = machine.wait_quiet()
            m = train(cfg, Path(tmp) / f"{arm}{i}", data=ds, quiet=True)
            ips = float(m["images_per_second"])
            print(f"  {arm:>3s} run {i}: {ips:7.1f} img/s, train {m['train_seconds']:.1f}s, "
                  f"others busy before {gate['others_busy_before'] or 0:.0%}", flush=True)
            return ips

        one("off", -1)  # warm-up: first-touch allocation, thread pools; not counted
        for i in range(args.pairs):
            order = ("off", "on") if i % 2 == 0 else ("on", "off")
            got = {arm: one(arm, i) for arm in order}
            for arm, v in got.items():
                results[arm].append(v)
            pairs.append(got["on"] / got["off"])

        sampler = ResourceSampler(Path(tmp) / "direct", interval=2.0).start()
        sampler.stop()
        t0 = time.process_time()
        for _ in range(200):
            sampler._sample()  # timing the sampling itself
        per_sample = (time.process_time() - t0) / 200

    med_off, med_on = statistics.median(results["off"]), statistics.median(results["on"])
    print(f"\nmachine: {cpu_name()}, {platform.python_version()}, date {time.strftime('%Y-%m-%d')}")
    print(f"data: {ds.name}, {args.images} train images, alexnet_cifar width {args.width}, torch, batch 128")
    print(f"median img/s: off {med_off:.1f}, on {med_on:.1f} (on/off {med_on / med_off:.3f})")
    print(f"per-pair on/off ratios: median {statistics.median(pairs):.3f}, range {min(pairs):.3f}-{max(pairs):.3f}")
    print(f"sampler CPU time per sample: {per_sample * 1e3:.2f} ms = {per_sample / 2.0:.4%} of one core at 2 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
