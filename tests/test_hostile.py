"""Hostile inputs through the commands a user actually runs (`train --data`, `train --resume`,
`train --pretrained/--weights`, `eval`, `run --preset`, `--config`): each is refused with
exit code 2 and one clear line, runs nothing (a payload would create a marker file), and
writes nothing outside its target (the --out folder, and the content-hash sidecar of the
data home). The library-level and `alexbench data` variants are in test_data_bad_input.py,
test_config.py and test_port_pretrained.py; this is the end-to-end table.

At the end: property tests of the test metrics on random labels and probabilities.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from support.toydata import CLASSES, toy_arrays, write_binary_source

from alexbench.cli import main
from alexbench.data.cache import cache_file, source_sha256
from alexbench.metrics import classification_metrics


class _System:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Open:
    """Unpickling this creates MARKER through builtins.open."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# ----------------------------------------------------------------------------- building the inputs


def python_batch(x: np.ndarray, y: np.ndarray) -> bytes:
    return pickle.dumps({b"batch_label": b"training batch", b"labels": [int(v) for v in y],
                         b"data": x.transpose(0, 3, 1, 2).reshape(len(x), 3072)}, protocol=2)


def evil_python_dir(base: Path, marker: Path) -> Path:
    """An official python-version folder whose first batch carries a payload among honest data."""
    x_train, y_train, x_test, y_test = toy_arrays()
    d = base / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(len(y_train)), 5)):
        (d / f"data_batch_{i + 1}").write_bytes(python_batch(x_train[part], y_train[part]))
    (d / "test_batch").write_bytes(python_batch(x_test, y_test))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, protocol=2))
    evil = pickle.dumps({b"batch_label": b"x", b"labels": [0], b"data": _System(marker)}, protocol=2)
    (d / "data_batch_1").write_bytes(evil)
    return d


def png(size: int = 32, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size)).save(buf, format="PNG")
    return buf.getvalue()


def evil_tar(base: Path, kind: str, escaped: Path) -> Path:
    """An image-folder tarball (2 classes) with one hostile member among honest ones."""
    path = base / f"evil-{kind}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        for split in ("train", "test"):
            for cls in ("cats", "dogs"):
                for i in range(2):
                    add(f"f/{split}/{cls}/{i}.png", png())
        info = {
            "dotdot": tarfile.TarInfo(f"f/train/cats/../../../{escaped.name}"),
            "absolute": tarfile.TarInfo(str(escaped)),
            "symlink": tarfile.TarInfo("f/train/cats/9.png"),
            "hardlink": tarfile.TarInfo("f/train/cats/9.png"),
        }[kind]
        if kind in ("symlink", "hardlink"):
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "/etc/passwd" if kind == "symlink" else "../../../../etc/passwd"
            tf.addfile(info)
        else:
            data = png()
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def bomb_folder(base: Path) -> Path:
    d = base / "folder"
    for split in ("train", "test"):
        for cls in ("cats", "dogs"):
            (d / split / cls).mkdir(parents=True)
            for i in range(2):
                (d / split / cls / f"{i}.png").write_bytes(png())
    Image.new("1", (6000, 6000)).save(d / "train" / "cats" / "bomb.png")  # a few KB, 36 Mpx decoded
    assert (d / "train" / "cats" / "bomb.png").stat().st_size < 100_000
    return d


def run_folder(base: Path, ckpt_bytes: bytes, name: str = "best.pt", **cfg_over) -> Path:
    """A run folder with a valid config.yaml and the given bytes as a checkpoint."""
    run = base / "victim-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(tiny_config("torch", **cfg_over).model_dump(mode="json")))
    (run / "state.json").write_text('{"status": "running", "epoch": 0, "epochs": 2}\n')
    (run / "checkpoints" / name).write_bytes(ckpt_bytes)
    return run


def torch_file(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def alexbench_checkpoint(model_state, meta: str = "{}") -> bytes:
    return torch_file({"format": "alexbench-torch-checkpoint-v1", "model": model_state, "optimizer": {},
                       "torch_rng": __import__("torch").get_rng_state(), "meta_json": meta})


def cifar_state(width: float):
    from alexbench.models import create_model

    return create_model("alexnet_cifar", "torch", width=width).state_dict()


# ----------------------------------------------------------------------------- the table


TRAIN = ["train", "--model", "alexnet_cifar", "--framework", "torch"]


def _case(kind: str, t: Path, marker: Path, src: Path) -> tuple[list[str], Path, list[str]]:
    """(argv, the command's target folder, needles of the error line) for one hostile input."""
    out = t / "out"
    if kind == "python-batch-payload":
        return [*TRAIN, "--data", str(evil_python_dir(t / "in", marker)), "--out", str(out)], out, \
            ["data_batch_1: refused python batch", "nothing in it was executed"]
    if kind.startswith("tar-"):
        what = kind[4:]
        needle = {"dotdot": "path with '..' refused", "absolute": "absolute path refused",
                  "symlink": "symbolic link refused", "hardlink": "hard link refused"}[what]
        (t / "in").mkdir()
        return [*TRAIN, "--data", str(evil_tar(t / "in", what, t / "escaped.png")), "--out", str(out)], out, \
            [f"evil-{what}.tar.gz: member", needle]
    if kind == "decompression-bomb":
        return [*TRAIN, "--data", str(bomb_folder(t / "in")), "--out", str(out)], out, \
            ["bomb.png: image is 6000x6000 pixels", "decompression bomb"]
    if kind == "checkpoint-payload-eval":
        run = run_folder(t, torch_file({"format": "alexbench-torch-checkpoint-v1", "model": _System(marker)}))
        return ["eval", str(run / "checkpoints" / "best.pt"), "--data", str(src)], run, \
            ["best.pt: not a loadable alexbench checkpoint", "Weights only load failed"]
    if kind == "checkpoint-payload-resume":
        run = run_folder(t, torch_file({"model": _Open(marker)}), name="last.pt")
        return [*TRAIN, "--data", str(src), "--out", str(run), "--resume"], run, \
            ["last.pt: not a loadable alexbench checkpoint", "last.prev.pt: not found"]
    if kind == "checkpoint-raw-pickle-eval":
        run = run_folder(t, pickle.dumps(_System(marker), protocol=2))
        return ["eval", str(run), "--data", str(src)], run, ["best.pt: not a loadable alexbench checkpoint"]
    if kind == "weights-payload-torch":
        w = t / "alexnet-owt-7be5be79.pth"
        w.write_bytes(torch_file({"features.0.weight": _System(marker)}))
        return ["train", "--model", "alexnet", "--framework", "torch", "--pretrained", "imagenet", "--weights", str(w),
                "--data", str(src), "--out", str(out)], out, ["refused: the file contains Python objects"]
    if kind == "weights-payload-keras":
        w = t / "evil.pth"
        w.write_bytes(torch_file({"features.0.weight": _Open(marker)}))
        return ["train", "--model", "alexnet", "--framework", "keras", "--pretrained", "imagenet", "--weights", str(w),
                "--data", str(src), "--out", str(out)], out, ["evil.pth", "refused"]
    if kind == "weights-wrong-architecture":
        w = t / "half.pth"
        w.write_bytes(torch_file(cifar_state(0.5)))
        return [*TRAIN, "--pretrained", str(w), "--data", str(src), "--out", str(out)], out, \
            ["half.pth", "features.conv1", "(32, 3, 3, 3)", "(64, 3, 3, 3)"]
    if kind == "checkpoint-wrong-architecture":
        from alexbench.data.stream import Normalization
        from alexbench.rundir import preprocessing

        # a well-formed checkpoint (with the preprocessing eval needs) of a wider model: config says width 0.125
        inference = preprocessing(Normalization("dataset", (127.0,) * 3, (64.0,) * 3), 32, (32, 32), CLASSES, True)
        run = run_folder(t, alexbench_checkpoint(cifar_state(0.25), json.dumps({"inference": inference})))
        return ["eval", str(run), "--data", str(src)], run, ["best.pt: layer", "has shape", "model expects"]
    if kind == "yaml-python-tag-config":
        cfg = t / "evil.yaml"
        cfg.write_text(f"epochs: !!python/object/apply:os.system ['touch {marker}']\n")
        return [*TRAIN, "--config", str(cfg), "--data", str(src), "--out", str(out)], out, \
            ["evil.yaml: not a safe YAML config"]
    if kind == "yaml-python-tag-preset":
        preset = t / "evil-preset.yaml"
        preset.write_text("name: x\nentries:\n  - !!python/object/apply:os.system ['touch %s']\n" % marker)
        return ["run", "--preset", str(preset), "--data", str(src), "--out", str(out)], out, \
            ["evil-preset.yaml: not a safe YAML config"]
    if kind == "yaml-python-tag-in-run-folder":
        run = run_folder(t, b"")
        (run / "config.yaml").write_text(f"model: !!python/object/new:os.system ['touch {marker}']\n")
        return ["eval", str(run), "--data", str(src)], run, ["config.yaml: not a safe YAML config"]
    if kind.startswith("config-"):
        body, needle = {"config-negative-lr": ("optimizer:\n  lr: -0.01\n", "optimizer.lr"),
                        "config-batch-0": ("batch_size: 0\n", "batch_size"),
                        "config-unknown-key": ("epochs: 2\nlearning_rate: 0.1\n", "learning_rate"),
                        "config-unknown-nested-key": ("optimizer:\n  nesterof: true\n", "optimizer.nesterof")}[kind]
        cfg = t / "bad.yaml"
        cfg.write_text(body)
        return [*TRAIN, "--config", str(cfg), "--data", str(src), "--out", str(out)], out, ["bad.yaml", needle]
    if kind == "preset-unknown-key":
        preset = t / "bad-preset.yaml"
        preset.write_text("name: x\nseeds: [0]\nentries:\n  - {model: alexnet_cifar, framework: torch, "
                          "batch_sise: 8}\n")
        return ["run", "--preset", str(preset), "--data", str(src), "--out", str(out)], out, \
            ["bad-preset.yaml: entries[0]", "batch_sise"]
    raise AssertionError(kind)


CASES = ["python-batch-payload", "tar-dotdot", "tar-absolute", "tar-symlink", "tar-hardlink", "decompression-bomb",
         "checkpoint-payload-eval", "checkpoint-payload-resume", "checkpoint-raw-pickle-eval",
         "weights-payload-torch", "weights-payload-keras", "weights-wrong-architecture",
         "checkpoint-wrong-architecture", "yaml-python-tag-config", "yaml-python-tag-preset",
         "yaml-python-tag-in-run-folder", "config-negative-lr", "config-batch-0", "config-unknown-key",
         "config-unknown-nested-key", "preset-unknown-key"]


@pytest.fixture(scope="module")
def honest_source(tmp_path_factory):
    return write_binary_source(tmp_path_factory.mktemp("honest"))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.mark.parametrize("kind", CASES)
def test_hostile_input_is_refused_end_to_end(kind, tmp_path, honest_source, monkeypatch, capsys):
    t = tmp_path / "t"
    t.mkdir()
    home = tmp_path / "home"
    monkeypatch.setenv("ALEXBENCH_DATA", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    marker = tmp_path / "PAYLOAD-RAN"
    argv, target, needles = _case(kind, t, marker, honest_source)
    before = _files(tmp_path)
    target_before = _files(target) if target.exists() else set()

    rc = main(argv)
    err = capsys.readouterr().err

    assert rc == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line and not line.startswith(("warning:", "note:", "["))]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"alexbench {argv[0]}: error: "), errors[0]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "escaped.png").exists() and not (t / "escaped.png").exists()
    # Nothing written outside the target, except what an honest run writes anyway: the data home's
    # content-hash sidecar, the decoded cache of the *honest* data source (checks that need the model
    # built, such as a wrong architecture, come after the data is loaded), and the config and font
    # caches that Keras and matplotlib keep in $HOME.
    honest_cache = str(cache_file(home, source_sha256(honest_source, home)["sha256"]).relative_to(tmp_path))
    new = {f for f in _files(tmp_path) - before
           if not f.startswith((str(target.relative_to(tmp_path)) + "/", "home/decoded/hashes/",
                                "userhome/.keras/keras.json", "userhome/.cache/matplotlib/"))
           and f != honest_cache}
    assert new == set(), new
    # and inside it, nothing but the run's own bookkeeping (no checkpoint, metrics or predictions)
    if target.exists():
        made = _files(target) - target_before
        assert made <= {"config.yaml", "log.txt", "state.json"}, made
        assert not (target / ".alexbench.lock").exists() and not (target / ".alexbench-run.lock").exists()


# ----------------------------------------------------------------------------- metrics on random inputs


@st.composite
def labels_and_probs(draw):
    k = draw(st.integers(2, 12))
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    if draw(st.booleans()):
        y[:] = draw(st.integers(0, k - 1))  # one class only: others have no samples
    logits = rng.normal(0, draw(st.sampled_from([0.0, 0.1, 3.0])), (n, k))
    if draw(st.booleans()):
        logits = np.round(logits)  # ties in the arg-max
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs.astype(draw(st.sampled_from([np.float32, np.float64]))), [f"c{i}" for i in range(k)]


@settings(max_examples=150, deadline=None)
@given(labels_and_probs(), st.floats(0, 10))
def test_metrics_agree_with_their_confusion_matrix(data, loss):
    y, probs, classes = data
    m = classification_metrics(y, probs, classes, loss)
    n, k = len(y), len(classes)
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (k, k) and cm.min() >= 0
    assert cm.sum() == n == m["n"]
    np.testing.assert_array_equal(cm.sum(1), np.bincount(y, minlength=k))  # rows are the true class
    y_pred = probs.argmax(1)
    np.testing.assert_array_equal(cm.sum(0), np.bincount(y_pred, minlength=k))
    assert m["accuracy"] == pytest.approx(np.trace(cm) / n) == pytest.approx(float((y_pred == y).mean()))
    for i, c in enumerate(classes):
        rowsum, colsum, tp = cm[i].sum(), cm[:, i].sum(), cm[i, i]
        if rowsum:
            assert m["per_class_accuracy"][c] == pytest.approx(tp / rowsum)
            assert m["recall"][c] == pytest.approx(tp / rowsum)
        else:
            assert m["per_class_accuracy"][c] is None  # no test images of that class: no figure, not 0
        assert m["precision"][c] == pytest.approx(tp / colsum if colsum else 0.0)
        p, r = m["precision"][c], m["recall"][c]
        assert m["f1"][c] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
    assert m["macro_f1"] == pytest.approx(np.mean([m["f1"][c] for c in classes]))
    lo, hi = m["accuracy_ci95"]
    assert 0.0 <= lo <= m["accuracy"] <= hi <= 1.0
    assert m["accuracy"] - 1e-12 <= m["top5_accuracy"] <= 1.0
    assert m["loss"] == loss
