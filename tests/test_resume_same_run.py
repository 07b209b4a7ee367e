"""``--resume`` continues only the same run: same config (but for how it executes) and same data.

A tiny torch run on an image folder is stopped after its first epoch (through a hook); each
test resumes a copy of it. Refusals leave the run folder byte for byte as it was.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config, write_image_folder

from alexbench.cli import main
from alexbench.errors import UserError
from alexbench.hooks import Hooks
from alexbench.train import train


def _source(root: Path, seed: int) -> Path:
    return write_image_folder(root, classes=("cat", "dog", "bird", "frog"), per_class=8, seed=seed)


class _Stop(Exception):
    pass


class _StopAfterFirstEpoch(Hooks):
    def checkpoint_written(self, name, path, progress):
        if name == "last" and progress["epoch"] == 1:
            raise _Stop


@pytest.fixture(scope="module", autouse=True)
def data_home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # the decoded-data cache stays inside the test's folders
        mp.setenv("ALEXBENCH_DATA", str(tmp_path_factory.mktemp("data-home")))
        yield


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, data_home):
    base = tmp_path_factory.mktemp("resume")
    src_a, src_b = _source(base / "data-a", 0), _source(base / "data-b", 1)
    run = base / "run"
    with pytest.raises(_Stop):
        train(tiny_config("torch", epochs=2), run, data=str(src_a), hooks=_StopAfterFirstEpoch())
    assert not (run / "metrics.json").exists() and (run / "checkpoints" / "last.pt").exists()
    return run, src_a, src_b


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.name.endswith(".lock")}


@pytest.fixture
def run_copy(stopped_run, tmp_path):
    run, src_a, src_b = stopped_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy, src_a, src_b


RESUME = ["train", "--model", "alexnet_cifar", "--framework", "torch", "--resume"]


@pytest.mark.parametrize("flags, needles", [
    (["--set", "optimizer.lr=0.05"], ["optimizer.lr: run has 0.02, asked 0.05"]),
    (["--set", "epochs=3", "--set", "seed=1"], ["2 setting(s) differ", "epochs: run has 2, asked 3",
                                                "seed: run has 0, asked 1"]),
    (["--set", "model_options.width=0.25"], ["model_options.width: run has 0.125, asked 0.25"]),
])
def test_resume_with_another_config_is_refused(run_copy, capsys, flags, needles):
    run, src_a, _ = run_copy
    before = snapshot(run)
    assert main([*RESUME, "--out", str(run), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume continues the same run" in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert snapshot(run) == before


def test_resume_with_another_framework_or_model_is_refused(run_copy, capsys):
    run, _, _ = run_copy
    before = snapshot(run)
    for argv, needle in [(["--framework", "keras"], "framework: run has 'torch', asked 'keras'"),
                         (["--model", "alexnet"], "model: run has 'alexnet_cifar', asked 'alexnet'")]:
        flags = [*RESUME]
        i = flags.index(argv[0])
        flags[i + 1] = argv[1]
        assert main([*flags, "--out", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert snapshot(run) == before


def test_resume_on_other_data_is_refused(run_copy, capsys):
    run, src_a, src_b = run_copy
    before = snapshot(run)
    assert main([*RESUME, "--out", str(run), "--data", str(src_b)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not the data this run was started on" in err and str(src_a) in err and str(src_b) in err, err
    assert len(err.splitlines()) == 1
    assert {k: v for k, v in snapshot(run).items() if k != "log.txt"} == \
        {k: v for k, v in before.items() if k != "log.txt"}


def test_plain_resume_continues_the_stored_config_and_data(run_copy, capsys):
    run, src_a, _ = run_copy
    stored = yaml.safe_load((run / "config.yaml").read_text())
    # no --data, no --set: the stored config and the recorded data; threads only says how it runs
    assert main([*RESUME, "--out", str(run), "--set", "threads=1"]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"]["source"] == str(src_a) and len(metrics["epochs"]) == 2
    assert yaml.safe_load((run / "config.yaml").read_text()) == stored
    # a finished run asked with other settings is refused too (it used to return its metrics)
    assert main([*RESUME, "--out", str(run), "--set", "epochs=5"]) == 2
    assert "epochs: run has 2, asked 5" in capsys.readouterr().err


def test_library_resume_compares_the_whole_config(run_copy):
    run, src_a, _ = run_copy
    with pytest.raises(UserError, match=r"batch_size: run has 16, asked 32"):
        train(tiny_config("torch", epochs=2, batch_size=32), run, data=str(src_a), resume=True)


def test_damaged_progress_in_a_checkpoint_is_one_line(run_copy, capsys):
    import torch

    run, src_a, _ = run_copy
    last = run / "checkpoints" / "last.pt"
    blob = torch.load(last, weights_only=True)
    meta = json.loads(blob["meta_json"])
    meta["progress"]["epoch"] = "one"
    blob["meta_json"] = json.dumps(meta)
    torch.save(blob, last)
    (run / "checkpoints" / "last.prev.pt").unlink(missing_ok=True)
    assert main([*RESUME, "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "progress.epoch: 'one' is not a valid int value" in err and len(err.splitlines()) == 1, err
