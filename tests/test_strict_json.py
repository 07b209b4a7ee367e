"""Every JSON file alexbench writes is strict JSON: no bare NaN or Infinity, and a null says why."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from alexbench.atomic import atomic_write_json


def _strict(text: str):
    def refuse(word: str):
        raise ValueError(f"non-standard JSON constant {word}")

    return json.loads(text, parse_constant=refuse)


def test_writer_turns_non_finite_numbers_into_null(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": np.float32("nan"),
                          "d": np.array([1.0, np.nan]), "e": (np.int64(3), np.float64(2.5)), "f": {"g": math.nan}})
    assert _strict(p.read_text()) == {"a": None, "b": [None, None, 1.5], "c": None, "d": [1.0, None],
                                      "e": [3, 2.5], "f": {"g": None}}


def test_strict_parser_really_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        _strict('{"a": NaN}')


def test_every_json_file_of_a_run_parses_strictly(tmp_path):
    """A run too short to time (every step is warm-up) and without validation: its nulls carry reasons."""
    from conftest import write_image_folder

    from alexbench.cli import main
    from alexbench.runner import run

    preset = tmp_path / "p.yaml"
    preset.write_text("""
name: strict
defaults: {epochs: 1, batch_size: 64, val_fraction: 0, precision: fp32, threads: 1, deterministic: true}
entries:
  - {model: alexnet_cifar, framework: torch, model_options: {width: 0.125}}
""")
    out = tmp_path / "out"
    run(str(preset), str(out), data=str(write_image_folder(tmp_path / "src", per_class=40)))
    entry = out / "alexnet_cifar-torch-scratch-s0"
    assert main(["eval", str(entry / "checkpoints" / "last.pt"), "--out", str(tmp_path / "eval.json")]) == 0
    files = sorted(tmp_path.rglob("*.json"))
    names = {f.name for f in files}
    assert {"metrics.json", "state.json", "run.json", ".alexbench-files.json", "eval.json"} <= names, names
    for f in files:
        _strict(f.read_text())
    m = _strict((entry / "metrics.json").read_text())
    assert m["images_per_second"] is None and "warm-up" in m["null_reasons"]["images_per_second"]
    assert m["epochs"][0]["val_loss"] is None and "val_fraction" in m["null_reasons"]["epochs[].val_loss"]
    assert m["epochs"][0]["images_per_second"] is None and "epochs[].images_per_second" in m["null_reasons"]
    import torch

    meta = torch.load(entry / "checkpoints" / "last.pt", weights_only=True)["meta_json"]
    _strict(meta)
    assert "nan img/s" not in (entry / "log.txt").read_text()
