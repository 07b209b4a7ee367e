"""Data-parallel PyTorch training (alexbench/distributed.py): 2 gloo processes on loopback.

The equality test: alexnet_cifar at 1/8 width with ``norm: none`` and dropout 0 (no
BatchNorm, nothing random in the step), global batch 16, 8 steps. One process, then two
processes under torchrun with 8 images each. DDP averages the two ranks' gradients,
which is the gradient of the global batch's mean loss, so the runs differ by float
summation order only. Measured on this project's 2-core CPU machine (fp32, 1 thread
per process): losses within 1.7e-7 relative, weights within 1.5e-8 absolute (largest
weight 0.19) after 8 steps. The bounds below are about 60x those figures, and 100x
below the smallest change any weight tensor makes during the run (checked), so a
wrong share or summed instead of averaged gradients cannot pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.toydata import synthetic_dataset, write_image_folder

HERE = Path(__file__).parent
SRC = str(HERE.parent)
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-6

pytestmark = pytest.mark.slow


def _env(tmp: Path) -> dict:
    return {**os.environ, "PYTHONPATH": SRC, "ALEXBENCH_DATA": str(tmp / "home"), "ALEXBENCH_QUIET": "1"}


def _run(cmd: list[str], tmp: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=_env(tmp), capture_output=True, text=True, timeout=timeout, cwd=SRC)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"]


def _weights(run: Path) -> dict[str, np.ndarray]:
    import torch

    blob = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in blob["model"].items()}


def _losses(run: Path) -> list[float]:
    steps = json.loads((run / "steps.json").read_text())["losses"]
    return [steps[str(i)] for i in range(len(steps))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same training in 1 process and in 2 (plain torchrun), on one small image folder."""
    tmp = tmp_path_factory.mktemp("ddp")
    data = write_image_folder(tmp / "data", classes=("cat", "dog"), per_class=40)
    script = str(HERE / "support" / "ddprun.py")
    _run([sys.executable, script, str(tmp / "one"), "--data", str(data)], tmp)
    _run([*_torchrun(2), script, str(tmp / "two"), "--data", str(data)], tmp)
    return tmp, data


def test_two_processes_match_one_step_for_step(runs):
    tmp, _ = runs
    one, two = _losses(tmp / "one"), _losses(tmp / "two")
    assert len(one) == len(two) == 8  # 64 training images, global batch 16, 2 epochs, on every rank
    np.testing.assert_allclose(two, one, rtol=LOSS_RTOL, atol=0)
    # each rank trained on its half of every global batch, rank 0 on the first half
    whole = json.loads((tmp / "one" / "labels-0.json").read_text())
    halves = [json.loads((tmp / "two" / f"labels-{r}.json").read_text()) for r in (0, 1)]
    assert [len(b) for b in whole] == [16] * 8 and [len(b) for h in halves for b in h] == [8] * 16
    assert [a + b for a, b in zip(*halves)] == whole
    w1, w2 = _weights(tmp / "one"), _weights(tmp / "two")
    assert w1.keys() == w2.keys() and not any(k.startswith("module.") for k in w2)
    assert not any(".bn" in k or "running_mean" in k for k in w1)  # norm: none really has no BatchNorm
    start = _weights_at_init()
    for k in w1:
        assert np.abs(w1[k] - start[k]).max() > 1e-4, f"{k} did not train"  # the comparison is not vacuous
        np.testing.assert_allclose(w2[k], w1[k], rtol=0, atol=WEIGHT_ATOL, err_msg=k)


def _weights_at_init() -> dict[str, np.ndarray]:
    """The weights both runs started from (the builder is seeded by ``seed``)."""
    from support.ddprun import config

    from alexbench.frameworks import import_torch
    from alexbench.models import create_model

    torch = import_torch(1)
    cfg = config()
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, "torch", num_classes=2, **cfg.model_options)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_rank_zero_alone_writes_and_metrics_record_world_size(runs):
    tmp, _ = runs
    for name, world in (("one", 1), ("two", 2)):
        metrics = json.loads((tmp / name / "metrics.json").read_text())
        assert metrics["world_size"] == world
        assert metrics["system"]["threads"] == 1
        log = (tmp / name / "log.txt").read_text()
        assert log.count("epoch 2/2:") == 1, log  # one writer: each line once
        assert sorted(p.name for p in (tmp / name / "checkpoints").iterdir()) == ["best.pt", "last.prev.pt", "last.pt"]
    assert "2 processes (gloo), 8 images each per step" in (tmp / "two" / "log.txt").read_text()
    # the test split, evaluated in two shares and gathered, is the 1-process evaluation
    p1 = np.load(tmp / "one" / "predictions.npz")
    p2 = np.load(tmp / "two" / "predictions.npz")
    np.testing.assert_array_equal(p1["y_true"], p2["y_true"])
    np.testing.assert_allclose(p2["probs"], p1["probs"], atol=1e-5)


def test_resume_with_two_processes_through_the_cli(runs):
    """A 2-process run stopped mid-epoch 2, resumed by ``alexbench train --nproc 2 --resume``,
    ends where the uninterrupted 2-process run ended."""
    tmp, data = runs
    out = tmp / "stopped"
    _run([*_torchrun(2), str(HERE / "support" / "ddprun.py"), str(out), "--data", str(data), "--stop-after", "5"],
         tmp)
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "running" and not (out / "metrics.json").exists()
    proc = _run([sys.executable, "-m", "alexbench", "train", "--model", "alexnet_cifar", "--framework", "torch",
                 "--data", str(data), "--out", str(out), "--resume", "--nproc", "2"], tmp)
    assert "test accuracy" in proc.stdout and proc.stdout.count("test accuracy") == 1  # rank 0 prints
    log = (out / "log.txt").read_text()
    assert "resumed from" in log and "at epoch 2, step 1 with 2 processes" in log, log
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
    w_resumed, w_straight = _weights(out), _weights(tmp / "two")
    for k in w_straight:
        np.testing.assert_allclose(w_resumed[k], w_straight[k], rtol=0, atol=WEIGHT_ATOL, err_msg=k)


def test_stream_shards_are_the_global_batch():
    """Every rank takes an equal contiguous share; put together they are the 1-process batch."""
    from alexbench.data.stream import BatchStream

    ds = synthetic_dataset(n_train_per_class=5)
    whole = BatchStream(ds.x_train, ds.y_train, 12, seed=3)
    parts = [BatchStream(ds.x_train, ds.y_train, 12, seed=3, rank=r, world_size=3) for r in range(3)]
    assert {len(p) for p in parts} == {len(whole)} == {4}
    for epoch in (0, 1):
        for (xb, yb), *shares in zip(whole.batches(epoch), *(p.batches(epoch) for p in parts)):
            assert [len(s[1]) for s in shares] == [4, 4, 4]
            np.testing.assert_array_equal(np.concatenate([s[0] for s in shares]), xb)
            np.testing.assert_array_equal(np.concatenate([s[1] for s in shares]), yb)


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alexbench", "train", "--model", "alexnet_cifar", "--out",
                           str(tmp / "out"), *args], env=_env(tmp), capture_output=True, text=True, timeout=300,
                          cwd=SRC)


@pytest.mark.parametrize("args, message", [
    (["--framework", "keras", "--nproc", "2"], "keras-team/keras#20585"),
    (["--framework", "torch", "--nproc", "3", "--set", "batch_size=16"],
     "batch_size: 16 is the global batch and must divide by the 3 processes"),
    (["--framework", "torch", "--nproc", "2", "--set", "sync_batchnorm=true", "--set", "device=cpu"],
     "sync_batchnorm: SyncBatchNorm needs CUDA (nccl)"),
    (["--framework", "torch", "--nproc", "2", "--set", "device=cuda:1"], "names one GPU"),
    (["--framework", "torch", "--nproc", "0"], "--nproc: must be at least 1"),
])
def test_refused_before_any_process_starts(tmp_path, args, message):
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
