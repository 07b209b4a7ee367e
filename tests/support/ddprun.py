"""One tiny BatchNorm-free, dropout-free training: torch alone or as one rank under torchrun, or
Keras on one device or several (``--devices N``: N logical CPU devices; MirroredStrategy on TensorFlow,
keras.distribution.DataParallel with ``--keras-backend jax``).

usage: python tests/support/ddprun.py OUT [--data SOURCE] [--epochs N] [--resume] [--stop-after STEP]
       python -m torch.distributed.run --standalone --nproc-per-node 2 tests/support/ddprun.py OUT ...
       python tests/support/ddprun.py OUT --framework keras --devices 1 2 ...

Without --data it trains on the toy dataset of toydata.py. The config is :func:`config`
(``alexbench train --config`` takes the same as YAML).

Keras runs with several ``--devices`` counts train one after the other in this process (TensorFlow's
CPU is split once, into the largest count of logical devices), each into OUT/devices-N, and each
writes init.npz: its weights before the first step. ``--also-stopped STEP`` then trains the
largest count once more into OUT/stopped, stopped after STEP; ``--then-resume`` resumes it in this
process to the end (its steps.json then holds the resumed steps).

Rank 0 writes OUT/steps.json: the loss of every step (the global batch's, as the loop sees
it) and the world size recorded in metrics.json. Every rank writes OUT/labels-RANK.json:
the labels of each batch its engine trained on (the engine's train_step is wrapped here
to see them). ``--stop-after`` raises from a hook after that step (a run stopped
mid-epoch, to resume).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))

from alexbench.engines.keras_engine import KerasEngine, split_cpu
from alexbench.engines.torch_engine import TorchEngine
from alexbench.frameworks import import_keras
from alexbench.hooks import Hooks
from alexbench.train import train
from support.toydata import synthetic_dataset, tiny_config

LABELS: list[list[int]] = []
INIT = Path("init.npz")
_train_step = TorchEngine.train_step


def _recording_step(self, xb, yb, lr):
    LABELS.append(yb.tolist())
    return _train_step(self, xb, yb, lr)


_build = KerasEngine.build


def _recording_build(self):
    _build(self)
    np.savez(INIT, *[self._numpy(v) for v in self.model.variables])


class Stop(Exception):
    pass


class Record(Hooks):
    def __init__(self, stop_after: int | None) -> None:
        self.losses: dict[int, float] = {}
        self.stop_after = stop_after

    def step_end(self, global_step: int, loss: float) -> None:
        self.losses[global_step] = loss
        if self.stop_after is not None and global_step >= self.stop_after:
            raise Stop


def config(epochs: int = 2, framework: str = "torch", devices: int = 1, keras_backend: str = "tensorflow"):
    """alexnet_cifar at 1/8 width without BatchNorm or dropout, a constant lr high enough to move every
    weight in a few steps, a checkpoint after every step (on CPU: ``devices`` logical CPU devices for Keras)."""
    extra = {"device": "cpu", "devices": devices, "keras_backend": keras_backend} if framework == "keras" else {}
    return tiny_config(framework, model_options={"width": 0.125, "norm": "none", "dropout": 0.0}, epochs=epochs,
                       batch_size=16, checkpoint_minutes=1e-6, optimizer={"lr": 0.05},
                       schedule={"name": "constant"}, **extra)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--data", default=None)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after", type=int, default=None)
    p.add_argument("--framework", default="torch")
    p.add_argument("--devices", type=int, nargs="+", default=[1])
    p.add_argument("--keras-backend", default="tensorflow")
    p.add_argument("--also-stopped", type=int, default=None)
    p.add_argument("--then-resume", action="store_true")
    a = p.parse_args()
    TorchEngine.train_step = _recording_step  # this process only: the harness runs as a script
    KerasEngine.build = _recording_build
    if a.framework == "keras" and max(a.devices) > 1:  # Keras as the engine imports it, its CPU split
        import_keras(1, backend=a.keras_backend, cpu_devices=max(a.devices))
        if a.keras_backend == "tensorflow":
            split_cpu(max(a.devices))
    runs = [(n, a.stop_after, Path(a.out) if len(a.devices) == 1 else Path(a.out) / f"devices-{n}")
            for n in a.devices]
    if a.also_stopped is not None:  # then the largest count again, stopped after that step (to resume)
        runs.append((max(a.devices), a.also_stopped, Path(a.out) / "stopped"))
        if a.then_resume:  # and resumed here, into OUT/stopped
            runs.append((max(a.devices), None, Path(a.out) / "stopped"))
    for i, (n, stop_after, out) in enumerate(runs):
        rec = Record(stop_after)
        INIT = out / "init.npz"
        try:
            m = train(config(a.epochs, a.framework, n, a.keras_backend), out, data=a.data or synthetic_dataset(),
                      resume=a.resume or i == len(a.devices) + 1, hooks=rec, quiet=True)
        except Stop:
            m = None
        (out / f"labels-{os.environ.get('RANK', '0')}.json").write_text(json.dumps(LABELS))
        LABELS.clear()
        if os.environ.get("RANK", "0") == "0":
            (out / "steps.json").write_text(json.dumps({"losses": rec.losses, "world_size": m and m["world_size"],
                                                       "strategy": m and m["strategy"]}))
