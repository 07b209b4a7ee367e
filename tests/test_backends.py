"""Keras on the JAX and torch backends: `run` end to end, parity, reports, bad backends.

This test process runs Keras on TensorFlow (imported below), so every JAX or torch
run here goes through alexbench's child process, exactly as in ``alexbench run`` with
several backends.
The TensorFlow backend's own kill/resume test is in test_train.py; a JAX or torch-backend entry
beside a SIGKILLed Ray worker is in test_ray.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import synthetic_dataset, tiny_config
from support import support_command
from support.parityrun import load_gathered

from alexbench.errors import UserError
from alexbench.frameworks import import_keras

import_keras()  # TensorFlow in this process: the other backends must go through child processes

#: evaluation in batches of 8 (one compiled shape) and no flip pass: keeps JAX's compiles few
OVER = {"epochs": 2, "eval_batch_size": 8, "tta_flip": False}


def _cfg(backend: str):
    return tiny_config("keras", keras_backend=backend, **OVER)




@pytest.fixture(scope="module")
def parity_started(tmp_path_factory):
    """Cross-backend parity of alexnet_cifar (``check_backends`` on TensorFlow, JAX and torch, batch 2) in a
    process of its own (tests/support/parityrun.py), started before the mixed run below so that the two
    sets of child processes run side by side. Yields (process, its output folder)."""
    out = tmp_path_factory.mktemp("parity")
    argv, env = support_command("parityrun", str(out), "alexnet_cifar", "tensorflow,jax,torch", "2")
    with open(out / "log.txt", "w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def parity_run(parity_started):
    """(check_backends's results, compare_backends's arguments as it passed them)."""
    proc, out = parity_started
    code = proc.wait(timeout=900)
    assert code == 0, (out / "log.txt").read_text()[-3000:]
    return json.loads((out / "results.json").read_text()), load_gathered(out)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, parity_started):
    """``alexbench run`` of a preset with Keras on JAX and on torch (children of this TensorFlow process)."""
    import yaml

    from alexbench.runner import run

    root = tmp_path_factory.mktemp("mixed")
    defaults = _cfg("jax").model_dump(mode="json")
    for key in ("framework", "keras_backend", "seed", "model"):
        defaults.pop(key)
    preset = root / "mixed.yaml"
    preset.write_text(yaml.safe_dump({"name": "mixed", "seeds": [0], "defaults": defaults, "entries": [
        {"model": "alexnet_cifar", "framework": "keras", "keras_backend": "jax"},
        {"model": "alexnet_cifar", "framework": "keras", "keras_backend": "torch"}]}))
    out = root / "out"
    status = run(str(preset), str(out), data=synthetic_dataset())
    return out, status


def test_run_trains_each_backend_in_its_own_process(mixed_run):
    out, status = mixed_run
    slugs = {"jax": "alexnet_cifar-keras-jax-scratch-s0", "torch": "alexnet_cifar-keras-torch-scratch-s0"}
    assert {k: v["status"] for k, v in status["entries"].items()} == {s: "finished" for s in slugs.values()}
    for backend, slug in slugs.items():
        m = json.loads((out / slug / "metrics.json").read_text())
        assert m["framework"] == "keras" and m["backend"] == backend
        assert m["entry"] == f"alexnet_cifar/keras-{backend}/scratch/s0"
        assert m["epochs"][1]["train_loss"] < m["epochs"][0]["train_loss"] and np.isfinite(m["test"]["loss"])
        assert m["system"]["versions"]["keras"] and (backend != "jax" or m["system"]["versions"]["jax"])
        # the default keras_batchnorm: fused is TensorFlow's kernel: these backends run Keras's own layer and say so
        assert m["config"]["keras_batchnorm"] == "fused" and m["system"]["keras_batchnorm"] == "stock"
        assert f"on the {backend} backend Keras's own BatchNormalization runs" in (out / slug / "log.txt").read_text()
    md = (out / "report.md").read_text()
    assert "| Keras (JAX) |" in md and "| Keras (torch) |" in md


def test_parity_across_backends_and_native_torch(parity_run):
    """alexnet_cifar only (a child per backend costs most of the ~50 s); every registered model on
    every backend is the CLI check recorded in BENCHMARKS.md ("Keras backends", Parity)."""
    from alexbench.models.parity import TOL

    results, _ = parity_run
    assert [r["options"] for r in results] == [{"norm": "batch"}, {"norm": "none"}]
    for r in results:
        assert r["passed"], r
        assert set(r["vs_torch"]) == {"tensorflow", "jax", "torch"} and len(r["between"]) == 3
        assert max(r["vs_torch"].values()) <= TOL and max(r["between"].values()) <= TOL
        assert r["own"]["jax"]["source"] == "keras weights of the first backend"


def test_parity_across_backends_fails_on_a_real_difference(parity_run):
    """Reference logits off by 1e-3 must fail every backend (the comparison is not vacuous): the
    verdict of the run above, given its own logits and the native torch logits shifted by 1e-3."""
    from alexbench.models import parity

    results, gathered = parity_run
    assert parity.compare_backends(**gathered) == results  # the verdict is a function of what it compared
    shifted = {**gathered, "refs": {vid: ref + 1e-3 for vid, ref in gathered["refs"].items()}}
    for r in parity.compare_backends(**shifted):
        assert not r["passed"], r
        assert all(d > parity.TOL for d in r["vs_torch"].values()), r


def test_bad_keras_backend_is_one_line_exit_2(tmp_path, capsys):
    from alexbench.cli import main

    rc = main(["train", "--model", "alexnet_cifar", "--framework", "keras", "--out", str(tmp_path / "r"),
               "--set", "keras_backend=mxnet"])
    err = capsys.readouterr().err
    assert rc == 2 and "keras_backend" in err and "mxnet" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_missing_jax_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    from alexbench.cli import main

    monkeypatch.setitem(sys.modules, "jax", None)  # as if jax were not installed
    rc = main(["train", "--model", "alexnet_cifar", "--framework", "keras", "--out", str(tmp_path / "r"),
               "--set", "keras_backend=jax"])
    err = capsys.readouterr().err
    assert rc == 2 and "jax" in err and "not installed" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    with pytest.raises(UserError, match="jax"):
        from alexbench.models.parity import check_backends

        check_backends("alexnet_cifar", ["tensorflow", "jax"])


def test_another_backend_cannot_be_imported_in_this_process():
    with pytest.raises(UserError, match="once per process"):
        import_keras(backend="jax")


def test_compare_and_report_name_each_backend(tmp_path):
    from support.fakeruns import make_fake_run

    from alexbench.report import write_report
    from alexbench.report.compare import compare

    y = np.arange(1000) % 10
    runs = [make_fake_run(tmp_path / "a", framework="torch", y_true=y, accuracy=0.8),
            make_fake_run(tmp_path / "b", framework="keras", y_true=y, accuracy=0.78),
            make_fake_run(tmp_path / "c", framework="keras", backend="jax", y_true=y, accuracy=0.7),
            make_fake_run(tmp_path / "d", framework="keras", backend="torch", y_true=y, accuracy=0.79)]
    res = compare(runs)
    assert [r["framework_label"] for r in res["rows"]] == ["PyTorch", "Keras (TensorFlow)", "Keras (JAX)",
                                                          "Keras (torch)"]
    assert [r["backend"] for r in res["rows"]] == ["torch", "tensorflow", "jax", "torch"]
    assert [r["entry"] for r in res["rows"]] == [  # unique without the folder name appended
        "alexnet_cifar/torch/scratch/s0", "alexnet_cifar/keras/scratch/s0", "alexnet_cifar/keras-jax/scratch/s0",
        "alexnet_cifar/keras-torch/scratch/s0"]
    assert len(res["pairs"]) == 6 and all(0 <= p["p_value"] <= 1 for p in res["pairs"])  # McNemar, every pair
    _, md_path = write_report(runs, tmp_path / "report.html")
    md = md_path.read_text()
    table = md[md.index("| run | model | framework"):]
    for name in ("| PyTorch |", "| Keras (TensorFlow) |", "| Keras (JAX) |", "| Keras (torch) |"):
        assert name in table, name
    assert "Keras (JAX) 70" in md or "Keras (JAX)" in md.split("| run | model")[0]  # the headline's pairs name it
