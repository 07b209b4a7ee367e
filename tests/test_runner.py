"""`alexbench run`: the matrix, skipped entries with reasons, resume, and the report it writes."""

from __future__ import annotations

import json

import pytest
from conftest import synthetic_dataset

import alexbench.train as train_mod
from alexbench.cli import main
from alexbench.errors import UserError
from alexbench.runner import PRESETS, load_plan, parse_seeds, run

TINY_PRESET = """
name: tiny
seeds: [0]
defaults:
  epochs: 2
  batch_size: 16
  eval_batch_size: 64
  val_fraction: 0.2
  precision: fp32
  threads: 1
  deterministic: true
  optimizer: {name: sgd, lr: 0.02}
entries:
  - {model: alexnet_cifar, framework: torch, model_options: {width: 0.125}}
  - {model: alexnet_cifar, framework: keras, model_options: {width: 0.125}}
  - {model: alexnet, framework: torch, pretrained: imagenet}
"""


@pytest.mark.parametrize("preset", PRESETS)
def test_shipped_presets_validate(preset):
    from alexbench.models import MODELS

    plan, entries = load_plan(preset)
    assert entries and all(e.cfg.model in MODELS for e in entries)
    slugs = [e.slug for e in entries]
    assert len(set(slugs)) == len(slugs)


def test_quick_and_standard_cover_the_issue_matrix():
    _, quick = load_plan("quick")
    _, std = load_plan("standard")
    want = {("alexnet_cifar", "torch", None), ("alexnet_cifar", "keras", None), ("alexnet", "torch", "imagenet"),
            ("alexnet", "keras", "imagenet"), ("vgg16", "keras", "imagenet")}
    assert {(e.cfg.model, e.cfg.framework, e.cfg.pretrained) for e in std} == want
    assert want <= {(e.cfg.model, e.cfg.framework, e.cfg.pretrained) for e in quick}


def test_unknown_preset_and_bad_entry(tmp_path):
    with pytest.raises(UserError, match="unknown preset"):
        load_plan("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("entries:\n  - {model: alexnet_cifar, framework: torch, optimizer: {lr: -1}}\n")
    with pytest.raises(UserError, match=r"entries\[0\].*optimizer\.lr"):
        load_plan(str(bad))


def test_seeds_option_expands_every_entry(tmp_path, capsys):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("4,7") == [4, 7]
    _, entries = load_plan(str(preset), seeds=parse_seeds("2"))
    assert [e.slug for e in entries][:2] == ["alexnet_cifar-torch-scratch-s0", "alexnet_cifar-torch-scratch-s1"]
    assert len(entries) == 6 and {e.cfg.seed for e in entries} == {0, 1}
    for bad in ("0", "x", "1,1", "-1,2"):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)
    assert main(["run", "--preset", str(preset), "--seeds", "two", "--out", str(tmp_path / "o")]) == 2
    assert "--seeds: expected a count" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.fixture
def offline_torch_hub(tmp_path, monkeypatch):
    """No pretrained weights anywhere, and no attempt to reach the network."""
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def refuse(*a, **k):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def test_run_skips_unavailable_weights_reports_and_resumes(tmp_path, offline_torch_hub, monkeypatch):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    out = tmp_path / "out"
    ds = synthetic_dataset()
    status = run(str(preset), str(out), data=ds)
    st = status["entries"]
    assert st["alexnet_cifar-torch-scratch-s0"]["status"] == "finished"
    assert st["alexnet_cifar-keras-scratch-s0"]["status"] == "finished"
    skipped = st["alexnet-torch-pretrained-s0"]
    assert skipped["status"] == "skipped" and "--weights-dir DIR holding alexnet-owt-7be5be79.pth" in skipped["reason"]
    assert "--weights PATH" not in skipped["reason"]  # that is train's option, not run's
    assert not (out / "alexnet-torch-pretrained-s0").exists()  # nothing half-made left behind
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for text in (html, md):
        assert "alexnet-torch-pretrained-s0" in text or "alexnet/torch" in text
        assert "skipped" in text.lower()
    on_disk = json.loads((out / "run.json").read_text())
    assert on_disk["entries"] == st

    # a second invocation without --resume refuses; with --resume it trains nothing again
    with pytest.raises(UserError, match="--resume"):
        run(str(preset), str(out), data=ds)
    calls = []
    real = train_mod.train
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = run(str(preset), str(out), data=ds, resume=True)
    assert not [c for c in calls if "alexnet_cifar" in str(c[1])]
    assert again["entries"]["alexnet-torch-pretrained-s0"]["status"] == "skipped"


def test_run_with_offline_weights_dir_uses_the_file(tmp_path):
    from alexbench.runner import _with_offline_weights

    _, entries = load_plan("quick")
    e = next(x for x in entries if x.cfg.model == "alexnet" and x.cfg.framework == "torch")
    (tmp_path / "alexnet-owt-7be5be79.pth").write_bytes(b"x")
    assert _with_offline_weights(e.cfg, str(tmp_path)).weights == str(tmp_path / "alexnet-owt-7be5be79.pth")
    assert _with_offline_weights(e.cfg, str(tmp_path / "empty")).weights is None
