"""Run a tiny training in a subprocess (used by the kill/resume tests).

usage: python tests/killrun.py OUT FRAMEWORK [--resume] [--ckpt-minutes M] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import synthetic_dataset, tiny_config  # noqa: E402

from alexbench.errors import UserError  # noqa: E402
from alexbench.train import train  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("framework")
p.add_argument("--resume", action="store_true")
p.add_argument("--ckpt-minutes", type=float, default=10.0)
p.add_argument("--epochs", type=int, default=3)
a = p.parse_args()
cfg = tiny_config(a.framework, epochs=a.epochs, checkpoint_minutes=a.ckpt_minutes)
try:
    m = train(cfg, a.out, data=synthetic_dataset(), resume=a.resume, quiet=True)
except UserError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
print(json.dumps({"accuracy": m["test"]["accuracy"], "loss": m["test"]["loss"]}))
