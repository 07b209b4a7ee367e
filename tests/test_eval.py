"""``eval`` uses the preprocessing recorded with the run and refuses a source with other classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_config, write_image_folder

from alexbench.cli import main
from alexbench.errors import UserError
from alexbench.evaluate import evaluate_checkpoint
from alexbench.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny torch run on a two-class image folder (dataset normalization)."""
    root = tmp_path_factory.mktemp("eval")
    src = write_image_folder(root / "src", classes=("cat", "dog"), per_class=8)
    out = root / "run"
    m = train(tiny_config("torch", epochs=1, batch_size=4, normalization="dataset"), out, data=str(src))
    return out, src, m


def _torch_meta(path):
    import torch

    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob, json.loads(blob["meta_json"])


def test_checkpoint_and_metrics_carry_the_preprocessing(trained):
    out, _, m = trained
    _, meta = _torch_meta(out / "checkpoints" / "best.pt")
    rec = meta["inference"]
    assert rec["classes"] == ["cat", "dog"] == m["dataset"]["classes"]
    pre = rec["preprocess"]
    assert pre == m["dataset"]["preprocess"]
    assert pre["normalization"] == "dataset" and pre["channel_order"] == "RGB" and pre["scale"] == "0-255"
    assert pre["mean"] == pytest.approx(m["dataset"]["normalization"]["mean"])
    assert pre["std"] == pytest.approx(m["dataset"]["normalization"]["std"])
    assert pre["input_size"] == 32 and pre["image_size"] == [32, 32]


def test_eval_on_another_source_keeps_the_training_normalization(trained, tmp_path, monkeypatch):
    """A source with other pixel statistics is normalised with the run's numbers, not its own."""
    import alexbench.engines as engines

    out, _, m = trained
    other = write_image_folder(tmp_path / "other", classes=("cat", "dog"), per_class=8, seed=5)
    for png in other.rglob("*.png"):  # much darker images: their own mean would differ a lot
        from PIL import Image

        Image.fromarray((np.asarray(Image.open(png)) // 4).astype(np.uint8)).save(png)
    seen = []
    real = engines.make_engine
    monkeypatch.setattr(engines, "make_engine",
                        lambda cfg, k, norm, size: seen.append(norm) or real(cfg, k, norm, size))
    res = evaluate_checkpoint(str(out), str(other))
    assert len(seen) == 1
    assert list(seen[0].mean) == m["dataset"]["preprocess"]["mean"]
    assert list(seen[0].std) == m["dataset"]["preprocess"]["std"]
    assert res["preprocess"] == m["dataset"]["preprocess"]
    assert res["dataset"]["source"] != m["dataset"]["source"]


def test_eval_refuses_other_class_names_exit_2(trained, tmp_path, capsys):
    out, _, _ = trained
    other = write_image_folder(tmp_path / "birds", classes=("bird", "cat"), per_class=4)
    rc = main(["eval", str(out), "--data", str(other)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "['bird', 'cat']" in err[0] and "['cat', 'dog']" in err[0] and "Traceback" not in err[0]


def test_old_checkpoint_falls_back_to_metrics_then_refuses(trained, tmp_path):
    """A checkpoint without the record reads the finished run's metrics.json; without that, a clear error."""
    import shutil

    import torch

    out, src, m = trained
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for ck in (old / "checkpoints").glob("*.pt"):
        blob, meta = _torch_meta(ck)
        del meta["inference"]
        blob["meta_json"] = json.dumps(meta)
        torch.save(blob, ck)
    res = evaluate_checkpoint(str(old))
    assert res["test"]["accuracy"] == m["test"]["accuracy"]
    assert res["preprocess"]["mean"] == m["dataset"]["preprocess"]["mean"]
    (old / "metrics.json").unlink()
    with pytest.raises(UserError, match="does not record the preprocessing"):
        evaluate_checkpoint(str(old), str(src))
