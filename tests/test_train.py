"""Training mechanics in both engines on tiny synthetic data (seconds, offline)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_dataset, tiny_config
from support import kills
from support.toydata import write_binary_source

from alexbench.errors import TrainingDiverged, UserError
from alexbench.evaluate import evaluate_checkpoint
from alexbench.rundir import HISTORY_COLUMNS
from alexbench.train import train

TOP_KEYS = ["model", "framework", "pretrained", "dataset", "params_trainable", "params_total", "flops_per_image",
            "epochs", "test", "train_seconds", "peak_rss_bytes", "system", "config", "code_version"]
TEST_KEYS = ["accuracy", "accuracy_ci95", "loss", "per_class_accuracy", "precision", "recall", "f1", "macro_f1",
             "confusion_matrix", "top5_accuracy"]
EPOCH_KEYS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_second"]
TIMING = {"seconds", "elapsed_seconds", "images_per_second"}


def _learned(m: dict) -> dict:
    """Everything in metrics.json that training determines (timings excluded)."""
    return {"test": m["test"], "epochs": [{k: v for k, v in e.items() if k not in TIMING} for e in m["epochs"]],
            "best_epoch": m["best_epoch"]}


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_one_run_writes_the_whole_run_folder(framework, tmp_path, tiny_ds):
    out = tmp_path / "run"
    train(tiny_config(framework, epochs=1), out, data=tiny_ds)
    for name in ("config.yaml", "history.csv", "metrics.json", "predictions.npz", "log.txt", "state.json"):
        assert (out / name).exists(), name
    ext = ".pt" if framework == "torch" else ".npz"
    assert (out / "checkpoints" / f"last{ext}").exists() and (out / "checkpoints" / f"best{ext}").exists()
    disk = json.loads((out / "metrics.json").read_text())
    for k in TOP_KEYS:
        assert k in disk, k
    for k in TEST_KEYS:
        assert k in disk["test"], k
    for k in EPOCH_KEYS:
        assert k in disk["epochs"][0], k
    for k in ("name", "source", "sha256", "train", "val", "test"):
        assert k in disk["dataset"], k
    assert disk["dataset"]["test"] == 40 and disk["dataset"]["val"] == 24 and disk["dataset"]["train"] == 96
    assert (out / "history.csv").read_text().splitlines()[0] == ",".join(HISTORY_COLUMNS)
    t = disk["test"]
    cm = np.array(t["confusion_matrix"])
    assert cm.sum() == 40
    per_class = np.diag(cm) / cm.sum(1)
    np.testing.assert_allclose([t["per_class_accuracy"][c] for c in tiny_ds.classes], per_class)
    assert t["accuracy_ci95"][0] <= t["accuracy"] <= t["accuracy_ci95"][1]
    assert 0 <= t["top5_accuracy"] <= 1 and t["top5_accuracy"] >= t["accuracy"]
    pred = np.load(out / "predictions.npz", allow_pickle=False)
    assert pred["probs"].shape == (40, 10)
    np.testing.assert_array_equal(pred["y_pred"], pred["probs"].argmax(1))
    assert float((pred["y_pred"] == pred["y_true"]).mean()) == pytest.approx(t["accuracy"])
    assert pred["train_images"].dtype == np.uint8 and pred["train_images"].shape[1:] == (32, 32, 3)
    assert disk["system"]["versions"]["torch"] and disk["system"]["versions"]["keras"]
    # how BatchNorm trained: what the config asked for on Keras's TensorFlow backend; PyTorch has no such choice
    assert disk["system"]["keras_batchnorm"] == (None if framework == "torch" else disk["config"]["keras_batchnorm"])
    assert disk["params_total"] > 0 and disk["flops_per_image"] > 0
    assert disk["train_flops"] == 3 * disk["flops_per_image"] * 96  # one epoch of 96 images, forward + backward


def test_both_frameworks_record_the_same_flops(finished_runs):
    """A torch run counts a weightless copy of its model, a Keras run the model it trained: the same figure."""
    torch_m, keras_m = (json.loads((finished_runs[fw] / "metrics.json").read_text()) for fw in ("torch", "keras"))
    assert torch_m["flops_per_image"] == keras_m["flops_per_image"] > 0


def test_train_flops_counts_the_images_trained(tmp_path, tiny_ds):
    # batch 40 on 96 images drops the last partial batch: 80 images per epoch, two epochs
    m = train(tiny_config("torch", epochs=2, batch_size=40), tmp_path / "r", data=tiny_ds)
    assert m["train_flops"] == 3 * m["flops_per_image"] * 80 * 2


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_learns_the_toy_task(framework, tmp_path):
    ds = synthetic_dataset(24, 6)
    m = train(tiny_config(framework, epochs=4, optimizer={"lr": 0.05}), tmp_path / "r", data=ds)
    assert m["test"]["accuracy"] >= 0.6, m["test"]["accuracy"]


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_same_seed_same_metrics(framework, tmp_path, tiny_ds):
    a = train(tiny_config(framework), tmp_path / "a", data=tiny_ds)
    b = train(tiny_config(framework), tmp_path / "b", data=tiny_ds)
    assert _learned(a) == _learned(b)


def test_both_engines_see_identical_batches(tmp_path, tiny_ds, monkeypatch):
    from alexbench.engines.keras_engine import KerasEngine
    from alexbench.engines.torch_engine import TorchEngine

    seen: dict[str, list] = {"torch": [], "keras": []}
    for cls, name in ((TorchEngine, "torch"), (KerasEngine, "keras")):
        orig = cls.train_step

        def spy(self, xb, yb, lr, _orig=orig, _name=name):
            seen[_name].append((xb.tobytes(), yb.tobytes(), round(lr, 12)))
            return _orig(self, xb, yb, lr)

        monkeypatch.setattr(cls, "train_step", spy)
    for fw in ("torch", "keras"):
        train(tiny_config(fw), tmp_path / fw, data=tiny_ds)
    assert len(seen["torch"]) == 12
    assert seen["torch"] == seen["keras"]


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_nan_guard_fires_and_keeps_last_good_checkpoint(framework, tmp_path, tiny_ds, monkeypatch):
    import alexbench.train as tr

    real = tr.lr_at
    # a sane first epoch (6 steps), then an absurd learning rate
    monkeypatch.setattr(tr, "lr_at", lambda step, *a: real(step, *a) if step < 6 else 1e6)
    out = tmp_path / "r"
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(tiny_config(framework, epochs=3), out, data=tiny_ds)
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "failed"
    assert not (out / "metrics.json").exists()
    ext = ".pt" if framework == "torch" else ".npz"
    last = out / "checkpoints" / f"last{ext}"
    assert last.exists()
    # the kept checkpoint is the good one from the end of epoch 1, and it resumes
    monkeypatch.setattr(tr, "lr_at", real)
    m = train(tiny_config(framework, epochs=3), out, data=tiny_ds, resume=True)
    assert len(m["epochs"]) == 3 and np.isfinite(m["test"]["loss"])


def test_cli_nan_guard_exit_2(tmp_path, capsys, monkeypatch):
    from alexbench.cli import main

    monkeypatch.setenv("ALEXBENCH_DATA", str(tmp_path / "home"))
    src = write_binary_source(tmp_path / "src")
    rc = main(["train", "--model", "alexnet_cifar", "--framework", "torch", "--out", str(tmp_path / "r"),
               "--data", str(src), "--set", "optimizer.lr=100", "--set", "schedule.name=constant",
               "--set", "precision=fp32", "--set", "model_options={width: 0.125}", "--set", "batch_size=16",
               "--set", "epochs=2", "--set", "threads=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "loss became" in err and "Traceback" not in err


def test_refuses_to_overwrite_a_run_and_resume_of_finished_is_a_noop(tmp_path, tiny_ds):
    out = tmp_path / "r"
    m = train(tiny_config("torch", epochs=1), out, data=tiny_ds)
    with pytest.raises(UserError, match="--resume"):
        train(tiny_config("torch", epochs=1), out, data=tiny_ds)
    again = train(tiny_config("torch", epochs=1), out, data=tiny_ds, resume=True)
    assert again["test"] == m["test"]


def test_eval_command_reproduces_test_metrics(tmp_path, monkeypatch):
    """eval finds the run's data source in its metrics.json, rebuilds the model and gets the same test block."""
    monkeypatch.setenv("ALEXBENCH_DATA", str(tmp_path / "home"))
    src = write_binary_source(tmp_path / "src")
    out = tmp_path / "r"
    m = train(tiny_config("torch", epochs=1), out, data=str(src))
    res = evaluate_checkpoint(str(out))
    assert res["test"]["accuracy"] == m["test"]["accuracy"]
    assert res["test"]["confusion_matrix"] == m["test"]["confusion_matrix"]


def _run(out: Path, fw: str, *extra: str, wait: bool = True):
    """One tiny run of the kill harness (tests/support/kills.py) in a fresh interpreter."""
    cmd, env = kills.command("train", str(out), fw, "--ckpt-minutes", "0.0001", *extra)
    env["PYTHONHASHSEED"] = "0"
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _fingerprint(run: Path) -> dict:
    with np.load(run / "predictions.npz") as z:
        probs = z["probs"].astype(np.float64).tolist()
    return {"learned": _learned(json.loads((run / "metrics.json").read_text())), "probs": probs}


def _kill_then_resume(tmp_path: Path, fw: str, seed: int) -> tuple[dict, dict]:
    """A reference run, and a run SIGKILLed before a seeded optimizer step (3 epochs of 6 steps,
    a checkpoint after every step) then resumed; returns both fingerprints. The reference runs
    beside the killed run (separate processes and folders)."""
    ref_dir, run_dir, hold = tmp_path / "ref", tmp_path / "killed", tmp_path / "hold"
    ref = _run(ref_dir, fw, wait=False)
    p = None
    try:
        step = random.Random(seed).randrange(1, 18)
        hold.touch()
        p = _run(run_dir, fw, "--hold", str(hold), "--at-step", str(step), wait=False)
        deadline = time.monotonic() + 240
        while not hold.with_suffix(".held").exists():
            assert p.poll() is None, \
                f"the run ended (exit {p.returncode}) before step {step}: {p.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, f"step {step} not reached within 240 s"
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        # the kill landed inside the run: killed, not exited, and the run had not finished
        assert p.returncode == -signal.SIGKILL
        assert not (run_dir / "metrics.json").exists()
        assert json.loads((run_dir / "state.json").read_text())["status"] == "running"
        res = _run(run_dir, fw, "--resume")
        assert res.returncode == 0, res.stderr[-2000:]
        assert f"resumed from {run_dir / 'checkpoints'}" in (run_dir / "log.txt").read_text()
        _, err = ref.communicate(timeout=300)
        assert ref.returncode == 0, err[-2000:]
    finally:
        for proc in (ref, p):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    return _fingerprint(ref_dir), _fingerprint(run_dir)


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical_torch(tmp_path):
    ref, resumed = _kill_then_resume(tmp_path, "torch", seed=1)
    assert ref == resumed


@pytest.mark.slow
def test_sigkill_then_resume_keras_within_measured_bound(tmp_path):
    ref, resumed = _kill_then_resume(tmp_path, "keras", seed=2)
    # every learned number (per-epoch losses and accuracies, the test block, test probabilities):
    # measured difference 0 (Keras on CPU with op determinism resumes exactly); the bound is float noise
    assert kills.max_abs_diff(ref, resumed) <= kills.KERAS_BOUND


def test_keras_fp16_skips_the_whole_step_on_non_finite_gradients(tiny_ds):
    """As torch's GradScaler: an overflowed step leaves weights, momentum and the step counter alone.

    fp16 needs a GPU; the skip lives in the loss-scaled path, which runs here on CPU with a loss scale."""
    from alexbench.data.stream import normalization
    from alexbench.engines.keras_engine import KerasEngine

    eng = KerasEngine(tiny_config("keras"), 10, normalization("dataset", tiny_ds.x_train), 32)
    eng.build()
    eng.loss_scale = 2.0 ** 12
    eng._make_fns()
    xb, yb = tiny_ds.x_train[:16], tiny_ds.y_train[:16]
    eng.train_step(xb, yb, 0.01)  # a finite step: momentum buffers become non-zero, t = 1
    assert eng.step_count == 1

    def snapshot() -> list:
        return [v.numpy().copy() for v in eng.model.trainable_variables] + \
               [s.numpy().copy() for slots in eng.slots.values() for s in slots]

    kernel = eng.model.get_layer("fc8").kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))  # every gradient becomes NaN
    before = snapshot()
    loss, _ = eng.train_step(xb, yb, 0.01)
    assert not np.isfinite(loss)
    assert eng.step_count == 1
    for a, b in zip(before, snapshot()):
        np.testing.assert_array_equal(a, b)  # NaN == NaN here: the poisoned kernel stays as it was
