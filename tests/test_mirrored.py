"""Keras on several devices in one process: two CPU devices, on TensorFlow (MirroredStrategy over
two logical CPU devices) and on JAX (keras.distribution.DataParallel over two XLA host devices).

The equality test mirrors tests/test_distributed.py: alexnet_cifar at 1/8 width with
``norm: none`` and dropout 0, global batch 16, 8 steps, on one device and on two (8 images
each) in the same child process (the CPU is split before the backend starts its devices).
Each replica's gradient is of its share's mean loss; their mean is the global batch's, so
the runs differ by float summation order only. Measured on this project's 2-core CPU machine
(fp32, 1 thread) after 8 steps: TensorFlow: losses within 8.7e-8 relative, weights within
7.5e-9 absolute (largest weight 0.19), optimizer slots within 2.3e-8; JAX: losses within
8.6e-8 relative, weights within 1.9e-8, slots within 8.1e-8; test probabilities within 3e-8 on
both. The bounds are those of the DDP test (at least 10x these figures, about 100x for the
weights), and every weight tensor moves by far more than them during the run (checked), so a
wrong share, or summed instead of averaged gradients, cannot pass. A resumed 2-device run
ended exactly (difference 0) where the uninterrupted one did on both backends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.toydata import write_image_folder

# the child-process helpers and the equality bounds are the DDP test's: the same measurement
from test_distributed import LOSS_RTOL, SRC, WEIGHT_ATOL, _env, _run

HERE = Path(__file__).parent

pytestmark = pytest.mark.slow


def _checkpoint(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "checkpoints" / "last.npz") as npz:
        return {k: npz[k] for k in npz.files if k.startswith(("model/", "opt/"))}


def _losses(run: Path) -> list[float]:
    steps = json.loads((run / "steps.json").read_text())["losses"]
    return [steps[str(i)] for i in range(len(steps))]


BACKENDS = ["tensorflow", "jax"]


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[subprocess.Popen, Path, Path]]]:
    """One child process per backend, both started at once so that they run side by side: the tiny
    training on 1 device, on 2, and on 2 stopped after step 5 (on JAX also resumed there; TensorFlow's
    is resumed through the CLI below). backend -> (process, its folder, its data)."""
    started: dict[str, tuple[subprocess.Popen, Path, Path]] = {}
    try:
        for backend in BACKENDS:
            tmp = tmp_path_factory.mktemp(f"devices-{backend}")
            data = write_image_folder(tmp / "data", classes=("cat", "dog"), per_class=40)
            with open(tmp / "child.log", "w") as log:
                started[backend] = (subprocess.Popen(
                    [sys.executable, str(HERE / "support" / "ddprun.py"), str(tmp / "k"), "--data", str(data),
                     "--framework", "keras", "--keras-backend", backend, "--devices", "1", "2", "--also-stopped",
                     "5", *(["--then-resume"] if backend == "jax" else [])],
                    env=_env(tmp), stdout=log, stderr=subprocess.STDOUT, cwd=SRC), tmp, data)
        yield started
    finally:
        for proc, _, _ in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module", params=BACKENDS)
def runs(request: pytest.FixtureRequest, children: dict[str, tuple[subprocess.Popen, Path, Path]]
         ) -> tuple[Path, Path, str]:
    """The finished child process of one backend: (its folder, its data, the backend)."""
    backend = request.param
    proc, tmp, data = children[backend]
    assert proc.wait(timeout=600) == 0, (tmp / "child.log").read_text()[-3000:]
    return tmp, data, backend


def test_two_devices_match_one_step_for_step(runs: tuple[Path, Path, str]) -> None:
    tmp, _, _ = runs
    one, two = tmp / "k" / "devices-1", tmp / "k" / "devices-2"
    assert len(_losses(one)) == len(_losses(two)) == 8  # 64 training images, global batch 16, 2 epochs
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=LOSS_RTOL, atol=0)
    with np.load(one / "init.npz") as a, np.load(two / "init.npz") as b:
        start = [a[k] for k in a.files]
        for k in a.files:  # both started from the same weights
            np.testing.assert_array_equal(a[k], b[k])
    w1, w2 = _checkpoint(one), _checkpoint(two)
    assert w1.keys() == w2.keys() and len([k for k in w1 if k.startswith("model/")]) == len(start) == 16
    for i, w0 in enumerate(start):  # alexnet_cifar without BatchNorm: 8 layers' kernels and biases, all trained
        assert np.abs(w1[f"model/{i:04d}"] - w0).max() > 1e-4, f"model/{i:04d} did not train"
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=0, atol=WEIGHT_ATOL, err_msg=k)
    p1, p2 = np.load(one / "predictions.npz"), np.load(two / "predictions.npz")
    np.testing.assert_allclose(p2["probs"], p1["probs"], atol=1e-5)


STRATEGY = {"tensorflow": ("mirrored", "tf.distribute.MirroredStrategy over /cpu:0, /cpu:1"),
            "jax": ("data_parallel", "keras.distribution.DataParallel over cpu:0, cpu:1")}


def test_metrics_and_log_name_the_replicas(runs: tuple[Path, Path, str]) -> None:
    tmp, _, backend = runs
    strategy, over = STRATEGY[backend]
    for n, name in ((1, None), (2, strategy)):
        metrics = json.loads((tmp / "k" / f"devices-{n}" / "metrics.json").read_text())
        assert (metrics["world_size"], metrics["strategy"], metrics["config"]["devices"]) == (n, name, n)
        assert (metrics["system"]["device"], metrics["backend"]) == ("cpu", backend)
    log = (tmp / "k" / "devices-2" / "log.txt").read_text()
    assert f"devices: 2 replicas in one process ({over}), 8 images each per step" in log, log


def test_resume_on_two_devices(runs: tuple[Path, Path, str]) -> None:
    """The 2-device run stopped after step 5 and resumed ends where the uninterrupted run ended. On
    TensorFlow it is resumed by ``alexbench train --resume`` in a fresh process, which splits its CPU
    itself, from the run's config."""
    tmp, data, backend = runs
    out = tmp / "k" / "stopped"
    if backend == "tensorflow":
        assert json.loads((out / "state.json").read_text())["status"] == "running"
        proc = _run([sys.executable, "-m", "alexbench", "train", "--model", "alexnet_cifar", "--framework", "keras",
                     "--data", str(data), "--out", str(out), "--resume"], tmp)
        assert "test accuracy" in proc.stdout
    assert "resumed from" in (out / "log.txt").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["strategy"]) == (2, STRATEGY[backend][0])
    resumed, straight = _checkpoint(out), _checkpoint(tmp / "k" / "devices-2")
    for k in straight:
        np.testing.assert_allclose(resumed[k], straight[k], rtol=0, atol=WEIGHT_ATOL, err_msg=k)


@pytest.mark.parametrize("sets, message", [
    (["batch_size=15", "devices=2"], "batch_size: 15 is the global batch and must divide by the 2 devices"),
    (["keras_backend=torch", "devices=2"], "devices: 2: several devices are offered on Keras's TensorFlow backend "),
    (["device=gpu:1", "devices=2"], "device: 'gpu:1' names one GPU"),
    (["devices=0"], "devices: Input should be greater than or equal to 1"),
])
def test_refused_in_one_line(tmp_path: Path, sets: list[str], message: str) -> None:
    from alexbench.config import resolve_config
    from alexbench.errors import UserError

    with pytest.raises(UserError, match="^--set: " + message.replace("(", r"\(")):
        resolve_config(None, ["framework=keras", *sets])


def test_refused_by_the_cli_before_anything_starts(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "alexbench", "train", "--model", "alexnet_cifar", "--framework",
                           "torch", "--set", "devices=2", "--out", str(tmp_path / "out")], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300, cwd=SRC)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "use alexbench train --nproc 2" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
