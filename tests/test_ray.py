"""``alexbench run --executor ray`` on one local Ray instance (2 CPUs, loopback, module-scoped).

The instance is started once here; the ``alexbench run`` drivers join it with
``--address``, as they would join a cluster. Entries ask Ray for 1 CPU (``threads: 1``),
so the two CPUs run two entries at a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alexbench.ray_executor import LOCAL_ENV

# as alexbench's own local instance: 127.0.0.1 only (for the drivers that join it too), and no
# memory monitor (it counts the whole machine's memory, other programs' included)
os.environ.update(LOCAL_ENV)
import ray  # part of the test extra (pip install -e '.[test]'); reads the variable above
from support.toydata import write_image_folder

SRC = str(Path(__file__).parent.parent)
pytestmark = pytest.mark.slow

TINY = """
name: tiny
seeds: [0]
defaults:
  epochs: {epochs}
  batch_size: 16
  eval_batch_size: 64
  val_fraction: 0.2
  precision: fp32
  threads: 1
  deterministic: true
  checkpoint_minutes: {ckpt}
  optimizer: {{name: sgd, lr: 0.02}}
entries:
{entries}
"""
TORCH = "  - {model: alexnet_cifar, framework: torch, model_options: {width: 0.125}}"
BOTH = TORCH + """
  - {model: alexnet_cifar, framework: keras, model_options: {width: 0.125}}
  - {model: alexnet, framework: torch, pretrained: imagenet}"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray instance on 2 CPUs; yields its address, the data folder and a scratch folder."""
    tmp = tmp_path_factory.mktemp("ray")
    data = write_image_folder(tmp / "data", classes=("cat", "dog"), per_class=30)
    env_before = dict(os.environ)
    os.environ["PYTHONPATH"] = SRC  # the workers import alexbench from this tree
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:")
        yield address, data, tmp
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(env_before)


def _preset(folder: Path, entries: str = BOTH, epochs: int = 1, ckpt: float = 10.0) -> Path:
    p = folder / f"tiny-{epochs}.yaml"
    p.write_text(TINY.format(epochs=epochs, ckpt=ckpt, entries=entries))
    return p


def _cli(tmp: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "ALEXBENCH_DATA": str(tmp / "home"), "ALEXBENCH_QUIET": "1"}
    return subprocess.Popen([sys.executable, "-m", "alexbench", "run", *args], env=env, cwd=SRC,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done(proc: subprocess.Popen, timeout: float = 900) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


TIMED = {"train time", "img/s", "peak RSS", "data share"}  # report columns that differ between any two runs


def _report_rows(md: Path) -> list[list[str]]:
    """The rows of every table in the Markdown report, with the timing, speed and memory cells blanked."""
    rows, header = [], None
    lines = md.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if i + 1 < len(lines) and lines[i + 1].startswith("|-"):
            header = cells
        elif header and not line.startswith("|-"):
            cells = ["" if h in TIMED else c for h, c in zip(header, cells)]
        rows.append(cells)
    return rows


def test_ray_run_writes_the_report_the_local_executor_writes(cluster):
    from alexbench.runner import run

    address, data, tmp = cluster
    preset = _preset(tmp)
    out_ray, out_local = tmp / "by-ray", tmp / "local"
    _, err = _done(_cli(tmp, "--preset", str(preset), "--data", str(data), "--out", str(out_ray), "--executor",
                        "ray", "--address", address))
    assert "[1/3] alexnet_cifar-torch-scratch-s0" in err and "[3/3] alexnet-torch-pretrained-s0: skipped" in err, err
    os.environ["ALEXBENCH_DATA"] = str(tmp / "home")
    run(str(preset), str(out_local), data=str(data))

    st_ray, st_local = (json.loads((o / "run.json").read_text()) for o in (out_ray, out_local))
    assert {k: v["status"] for k, v in st_ray["entries"].items()} == \
        {k: v["status"] for k, v in st_local["entries"].items()} == \
        {"alexnet_cifar-torch-scratch-s0": "finished", "alexnet_cifar-keras-scratch-s0": "finished",
         "alexnet-torch-pretrained-s0": "skipped"}
    assert st_ray["entries"]["alexnet-torch-pretrained-s0"]["reason"] == \
        st_local["entries"]["alexnet-torch-pretrained-s0"]["reason"]
    for slug in ("alexnet_cifar-torch-scratch-s0", "alexnet_cifar-keras-scratch-s0"):
        m_ray, m_local = (json.loads((o / slug / "metrics.json").read_text()) for o in (out_ray, out_local))
        assert m_ray["config"] == m_local["config"] and m_ray["system"]["threads"] == 1
        p_ray, p_local = (np.load(o / slug / "predictions.npz") for o in (out_ray, out_local))
        np.testing.assert_allclose(p_ray["probs"], p_local["probs"], atol=1e-5, err_msg=slug)
        assert m_ray["test"]["accuracy"] == m_local["test"]["accuracy"]
    assert not (out_ray / "alexnet-torch-pretrained-s0").exists()
    assert _report_rows(out_ray / "report.md") == _report_rows(out_local / "report.md")
    assert "<html" in (out_ray / "report.html").read_text()[:2000].lower()

    # --resume skips the finished entries: nothing is submitted again
    _, err = _done(_cli(tmp, "--preset", str(preset), "--data", str(data), "--out", str(out_ray), "--executor",
                        "ray", "--address", address, "--resume"))
    assert err.count("finished earlier, skipping") == 2 and "[1/3] alexnet_cifar-torch-scratch-s0\n" not in err


EPOCHS = 12
BACKENDS = "\n".join(f"  - {{model: alexnet_cifar, framework: keras, keras_backend: {b}, epochs: 1, "
                     "checkpoint_minutes: 10, model_options: {width: 0.125}}" for b in ("jax", "torch"))


@pytest.fixture(scope="module")
def killed_run(cluster):
    """One ``alexbench run --executor ray``: a 12-epoch torch entry with a checkpoint after every step,
    whose Ray worker is SIGKILLed after its first checkpoint, beside one-epoch Keras entries on JAX
    and on torch (the two CPUs run two entries at a time). Returns (run folder, the killed PID)."""
    address, data, tmp = cluster
    preset = _preset(tmp, TORCH + "\n" + BACKENDS, epochs=EPOCHS, ckpt=1e-6)
    out = tmp / "killed"
    run_dir = out / "alexnet_cifar-torch-scratch-s0"
    driver = _cli(tmp, "--preset", str(preset), "--data", str(data), "--out", str(out), "--executor", "ray",
                  "--address", address)
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "checkpoints" / "last.pt").exists():
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the entry never wrote a checkpoint"
            time.sleep(0.05)
        pid = int((run_dir / ".alexbench.lock").read_text().split()[0])
        assert "ray" in Path(f"/proc/{pid}/cmdline").read_text().lower()  # a Ray worker, not the driver
        os.kill(pid, signal.SIGKILL)
        _done(driver)
    finally:
        if driver.poll() is None:
            driver.kill()
    return out, pid


def test_a_killed_worker_does_not_lose_the_entry(killed_run):
    """SIGKILL the Ray worker training an entry after its first checkpoint: Ray retries the task,
    which resumes from the checkpoint and finishes every epoch once."""
    out, pid = killed_run
    run_dir = out / "alexnet_cifar-torch-scratch-s0"
    status = json.loads((out / "run.json").read_text())
    assert status["entries"]["alexnet_cifar-torch-scratch-s0"]["status"] == "finished"
    log = (run_dir / "log.txt").read_text()
    assert f"took over a stale lock left by PID {pid}" in log and "resumed from" in log, log
    history = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))


def test_keras_on_jax_and_torch_trains_in_its_ray_worker(killed_run):
    """A worker is a fresh process (no Keras loaded yet): a JAX or a torch entry trains there on its backend."""
    out, _ = killed_run
    status = json.loads((out / "run.json").read_text())["entries"]
    for backend in ("jax", "torch"):
        slug = f"alexnet_cifar-keras-{backend}-scratch-s0"
        assert status[slug]["status"] == "finished", slug
        m = json.loads((out / slug / "metrics.json").read_text())
        assert m["backend"] == backend and np.isfinite(m["epochs"][0]["train_loss"]), slug
    assert "| Keras (JAX) |" in (out / "report.md").read_text()


def test_bad_executor_options(tmp_path):
    from alexbench.errors import UserError
    from alexbench.runner import run

    with pytest.raises(UserError, match="--address: only with --executor ray"):
        run("quick", str(tmp_path / "o"), address="auto")
    with pytest.raises(UserError, match="unknown executor"):
        run("quick", str(tmp_path / "o"), executor="slurm")
    from alexbench.config import validate
    from alexbench.ray_executor import entry_resources

    assert entry_resources(validate({"threads": 3})) == {"num_cpus": 3.0, "num_gpus": 0.0}
    assert entry_resources(validate({"device": "cuda"})) == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert entry_resources(validate({"framework": "keras", "device": "gpu:0"})) == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert entry_resources(validate({"framework": "keras", "device": "gpu", "devices": 4})) == {"num_cpus": 1.0,
                                                                                               "num_gpus": 4.0}
    with pytest.raises(UserError, match="the GPU Ray assigns"):
        entry_resources(validate({"device": "cuda:1"}))
