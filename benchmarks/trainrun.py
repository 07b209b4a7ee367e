"""One ``alexbench.train.train`` run in a fresh process, so ``ru_maxrss`` belongs to that run alone.

Usage (by :mod:`benchmarks.run`): ``python -m benchmarks.trainrun CONFIG_JSON DATA OUT_DIR``.
Prints one JSON line with the run's speed, data share, evaluation time and peak RSS,
read from its ``metrics.json``.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    cfg_json, data, out_dir = argv
    import os

    os.environ.setdefault("ALEXBENCH_QUIET", "1")
    from alexbench.config import validate
    from alexbench.train import train

    cfg = validate(json.loads(cfg_json), "benchmark train config")
    m = train(cfg, out_dir, data=data, quiet=True)
    n_test = m["dataset"]["test"]
    print(json.dumps({
        "model": m["model"], "framework": m["framework"], "precision": m["system"]["precision"],
        "train_images": m["dataset"]["train"], "val_images": m["dataset"]["val"], "test_images": n_test,
        "images_per_second": m["images_per_second"], "data_share": m["data_share"],
        "data_seconds_per_step": m["data_seconds_per_step"], "eval_seconds": m["eval_seconds"],
        "eval_images_per_second": n_test / m["eval_seconds"] if m["eval_seconds"] else None,
        "train_seconds": m["train_seconds"], "peak_rss_bytes": m["peak_rss_bytes"],
        "test_accuracy": m["test"]["accuracy"], "dataset": m["dataset"]["name"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
