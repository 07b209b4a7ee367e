"""Every shipped preset runs, every entry, on tiny data.

Parametrized over the files in ``alexbench/presets/``, so a preset added there is
covered without touching this file. Each entry keeps its own protocol (model,
framework, options, optimizer, schedule, fine-tuning phase, precision); only the
amount of work is made tiny: 20 synthetic images, one epoch, and the smallest input
its model takes. Pretrained entries load the stand-in ImageNet files the suite writes
in the official formats (``--weights-dir``).

Each entry goes through ``train`` (what ``run`` calls for it) until its first
validation pass has read every batch: by then its model was built and loaded, every
training step of the epoch ran and evaluation ran. The rest of a run (checkpoints,
test metrics, the report) is the same code for every entry and runs end to end in
``test_the_issue_command_finishes`` and in test_runner.py / test_train.py; stopping
there keeps twenty-odd ImageNet-sized models within a minute. An entry on a Keras
backend other than this process's (TensorFlow) is watched the same way in a process of
its own (tests/support/entryrun.py), one per (model, backend), started before the
entries trained here so that they run side by side; ``alexbench run``'s own child
process for another backend is tested in test_backends.py.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import write_image_folder
from support import support_command
from support.entryrun import run_entry

from alexbench.backend_process import needs_child
from alexbench.cli import main
from alexbench.config import load_yaml
from alexbench.models import accepted_sizes
from alexbench.runner import PRESETS, _with_offline_weights, load_plan, preset_path

# 20 training images: 10 train (two steps of 5), 10 validation (one batch)
TINY = ["epochs=1", "batch_size=5", "eval_batch_size=10", "val_fraction=0.5", "checkpoint_minutes=1000"]




def _tiny_copy(name: str, folder) -> str:
    """The shipped preset with each entry at the smallest input size its model takes."""
    plan = load_yaml(preset_path(name))
    defaults = plan.get("defaults") or {}
    for entry in plan["entries"]:
        options = {**(defaults.get("model_options") or {}), **(entry.get("model_options") or {})}
        entry["input_size"] = accepted_sizes(entry["model"], options)[0]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return str(path)


def test_the_presets_folder_is_the_preset_list():
    from alexbench.runner import PRESETS_DIR

    assert set(PRESETS) == {p.name[:-5] for p in PRESETS_DIR.iterdir() if p.name.endswith(".yaml")}
    assert {"quick", "standard", "seeds"} <= set(PRESETS)


def _start_entry(cfg, out: Path) -> tuple[subprocess.Popen, Path]:  # cfg: a TrainConfig
    """tests/support/entryrun.py for ``cfg`` in a process of its own, on the entry's Keras backend."""
    out.mkdir(parents=True)
    (out.parent / f"{out.name}.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    result = out.parent / f"{out.name}.result.json"
    argv, env = support_command("entryrun", str(out.parent / f"{out.name}.json"), str(out / "run"), str(result))
    env["KERAS_BACKEND"] = cfg.keras_backend
    with open(out.parent / f"{out.name}.log", "w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, result


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_every_entry_of_the_preset_runs(name, tmp_path, imagenet_weights):
    _, shipped = load_plan(name)
    _, tiny = load_plan(_tiny_copy(name, tmp_path), overrides=TINY)
    assert [e.slug for e in tiny] == [e.slug for e in shipped]
    cfgs = {}
    for entry, original in zip(tiny, shipped):
        # the entry's own protocol; only the work is made tiny
        for key in ("model", "framework", "pretrained", "model_options", "optimizer", "schedule", "augment",
                    "label_smoothing", "normalization", "finetune", "precision", "tta_flip"):
            assert getattr(entry.cfg, key) == getattr(original.cfg, key), (entry.slug, key)
        cfg = cfgs[entry.slug] = _with_offline_weights(entry.cfg, str(imagenet_weights["dir"]))
        if cfg.pretrained:
            assert cfg.weights and cfg.weights.startswith(str(imagenet_weights["dir"]))
    # another Keras backend: a process of its own, one per (model, backend) (other seeds add only start-up
    # time), started first so that it runs while the other entries train here
    children = {}
    try:
        for slug, cfg in cfgs.items():
            if needs_child(cfg) and not any(c[0] == (cfg.model, cfg.keras_backend) for c in children.values()):
                children[slug] = ((cfg.model, cfg.keras_backend), *_start_entry(cfg, tmp_path / slug))
        for slug, cfg in cfgs.items():
            if needs_child(cfg):
                continue
            hooks = run_entry(cfg, tmp_path / slug)
            assert len(hooks.losses) == 2 and all(math.isfinite(v) for v in hooks.losses), slug
            assert hooks.evaluated == 1, slug  # 10 validation images, one batch
        for slug, (_, proc, result) in children.items():
            assert proc.wait(timeout=600) == 0, (tmp_path / f"{slug}.log").read_text()[-3000:]
            r = json.loads(result.read_text())
            assert r["backend"] == cfgs[slug].keras_backend, slug
            assert len(r["losses"]) == 2 and all(math.isfinite(v) for v in r["losses"]), slug
            assert r["evaluated"] == 1, slug
    finally:
        for _, proc, _ in children.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_the_issue_command_finishes(tmp_path, imagenet_weights, capsys):
    """``alexbench run --preset seeds`` on a tiny image folder, at the preset's own sizes, to the report."""
    data = write_image_folder(tmp_path / "data", classes=("cat", "dog"), per_class=8)
    out = tmp_path / "runs"
    rc = main(["run", "--preset", "seeds", "--data", str(data), "--set", "epochs=1", "--set", "max_train_images=8",
               "--set", "max_test_images=4", "--set", "val_fraction=0", "--set", "eval_batch_size=8",
               "--weights-dir", str(imagenet_weights["dir"]), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    status = json.loads((out / "run.json").read_text())["entries"]
    _, entries = load_plan("seeds")
    assert {slug: st["status"] for slug, st in status.items()} == {e.slug: "finished" for e in entries}
    for e in entries:
        metrics = json.loads((out / e.slug / "metrics.json").read_text())
        assert metrics["dataset"]["input_size"] == e.cfg.input_size and metrics["dataset"]["test"] == 4
    assert "alexnet_bn" in (out / "report.md").read_text()
