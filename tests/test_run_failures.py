"""``alexbench run`` never loses the matrix to one entry: a failing entry is recorded, the rest run."""

from __future__ import annotations

import json

from conftest import write_image_folder

import alexbench.train as train_mod
from alexbench.cli import main
from alexbench.rundir import read_state

DEFAULTS = """
seeds: [0]
defaults:
  epochs: 1
  batch_size: 4
  eval_batch_size: 16
  val_fraction: 0
  precision: fp32
  threads: 1
"""
CIFAR_TORCH = "  - {model: alexnet_cifar, framework: torch, model_options: {width: 0.125}}\n"
CIFAR_KERAS = "  - {model: alexnet_cifar, framework: keras, model_options: {width: 0.125}}\n"
# bad input that only the entry itself finds: a weights file that is not there (a typo in the path)
CIFAR_KERAS_BAD = ("  - {model: alexnet_cifar, framework: keras, model_options: {width: 0.125}, "
                   "pretrained: WEIGHTS}\n")
BN_TORCH = "  - {model: alexnet_bn, framework: torch, model_options: {pool_padding: same}, input_size: 11}\n"


def _setup(tmp_path, entries: str):
    data = write_image_folder(tmp_path / "data", classes=("cat", "dog"), per_class=6)
    preset = tmp_path / "failing.yaml"
    entries = entries.replace("WEIGHTS", str(tmp_path / "no-such-weights.pth"))
    preset.write_text("name: failing\n" + DEFAULTS + "entries:\n" + entries)
    return ["run", "--preset", str(preset), "--data", str(data), "--out", str(tmp_path / "out")], tmp_path / "out"


def test_a_failing_entry_is_recorded_and_the_others_run(tmp_path, capsys):
    argv, out = _setup(tmp_path, CIFAR_TORCH + CIFAR_KERAS_BAD + BN_TORCH)
    ok1, bad, ok2 = "alexnet_cifar-torch-scratch-s0", "alexnet_cifar-keras-pretrained-s0", "alexnet_bn-torch-scratch-s0"
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2  # the one failure was bad input
    entries = json.loads((out / "run.json").read_text())["entries"]
    assert entries[ok1]["status"] == "finished" and entries[ok2]["status"] == "finished"  # the entry after it ran
    assert (out / ok1 / "metrics.json").exists() and (out / ok2 / "metrics.json").exists()
    row = entries[bad]
    assert row["status"] == "failed" and row["error"] == "bad input" and row["framework"] == "keras"
    assert row["reason"] == f"{tmp_path / 'no-such-weights.pth'}: weights file not found"
    assert read_state(out / bad).get("status") == "failed"  # its run folder says so too
    assert f"failed {bad} (bad input): {row['reason']}" in captured.out
    assert "1 of 3 entries failed" in captured.err and "Traceback" not in captured.err
    for report in ("report.md", "report.html"):
        text = (out / report).read_text()
        assert bad in text and "failed" in text and "weights file not found" in text

    # --resume retries the failed entry (it fails again: same exit code) and keeps the finished ones
    finished_before = (out / ok1 / "metrics.json").read_bytes()
    assert main(argv + ["--resume"]) == 2
    assert (out / ok1 / "metrics.json").read_bytes() == finished_before
    assert json.loads((out / "run.json").read_text())["entries"][bad]["status"] == "failed"


def test_an_internal_error_in_one_entry_exits_1_after_the_rest(tmp_path, capsys, monkeypatch):
    """No input makes the product fail internally on purpose, so a patched train stands in for a bug."""
    argv, out = _setup(tmp_path, CIFAR_TORCH + CIFAR_KERAS)
    real = train_mod.train

    def buggy(cfg, *args, **kwargs):
        if cfg.framework == "torch":
            raise ZeroDivisionError("a bug in the torch path")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(train_mod, "train", buggy)
    assert main(argv) == 1
    entries = json.loads((out / "run.json").read_text())["entries"]
    row = entries["alexnet_cifar-torch-scratch-s0"]
    assert (row["status"], row["error"], row["reason"]) == ("failed", "internal error",
                                                            "ZeroDivisionError: a bug in the torch path")
    assert entries["alexnet_cifar-keras-scratch-s0"]["status"] == "finished"
    assert "ZeroDivisionError" in (out / "report.md").read_text()
