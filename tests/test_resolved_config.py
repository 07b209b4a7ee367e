"""config.yaml holds what ran; requested.yaml what was given; a failed train leaves nothing it created."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import tiny_config, write_image_folder

from alexbench import rundir
from alexbench.cli import main
from alexbench.config import load_yaml, resolve_config, validate
from alexbench.errors import UserError
from alexbench.resume import same_run_config
from alexbench.train import train

DECIDED = ("input_size", "normalization", "threads", "device", "precision")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("res") / "src", per_class=8)


def _auto(**over):
    return tiny_config("torch", **{"epochs": 1, "batch_size": 4, "threads": None, "precision": "auto",
                                   "device": "auto", **over})


def test_config_yaml_is_resolved_and_requested_yaml_keeps_the_inputs(tmp_path, src):
    out = tmp_path / "r"
    m = train(_auto(), out, data=str(src))
    text = (out / rundir.CONFIG).read_text()
    assert text.startswith(rundir.CONFIG_HEADER)
    cfg = yaml.safe_load(text)
    for key in DECIDED:
        assert cfg[key] not in (None, "auto"), (key, cfg[key])
    assert cfg["input_size"] == 32 and cfg["device"] == "cpu" and cfg["precision"] in ("fp32", "bf16")
    assert cfg["threads"] == m["system"]["threads"] and cfg["precision"] == m["system"]["precision"]
    norm = m["dataset"]["normalization"]
    assert cfg["normalization"] == {"name": "dataset", "mean": norm["mean"], "std": norm["std"],
                                    "channel_order": "RGB"}
    assert m["config"] == validate(load_yaml(out / rundir.CONFIG)).model_dump(mode="json")
    given = yaml.safe_load((out / rundir.REQUESTED).read_text())
    assert (out / rundir.REQUESTED).read_text().startswith(rundir.REQUESTED_HEADER)
    assert {k: given[k] for k in DECIDED} == {"input_size": None, "normalization": None, "threads": None,
                                              "device": "auto", "precision": "auto"}
    validate(load_yaml(out / rundir.REQUESTED))


def test_config_of_a_run_repeats_it_with_the_same_numbers(tmp_path, src):
    """``--config runs/x/config.yaml`` uses the recorded normalization, even on another source."""
    first = tmp_path / "a"
    m1 = train(_auto(), first, data=str(src))
    other = write_image_folder(tmp_path / "other", per_class=8, seed=3)
    cfg = resolve_config(str(first / rundir.CONFIG))
    m2 = train(cfg, tmp_path / "b", data=str(other))
    assert m2["dataset"]["normalization"]["mean"] == m1["dataset"]["normalization"]["mean"]
    assert m2["dataset"]["sha256"] != m1["dataset"]["sha256"]


def test_resume_continues_with_config_yaml_and_decides_machine_keys_again(tmp_path, src):
    out = tmp_path / "r"

    def stop(*_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_auto(epochs=2), out, data=str(src), on_epoch_end=stop)
    assert (out / rundir.CONFIG).exists() and list((out / "checkpoints").glob("last*")), "kept for --resume"
    resolved = yaml.safe_load((out / rundir.CONFIG).read_text())
    requested_before = (out / rundir.REQUESTED).read_text()
    # as if the run had started on a machine with a GPU
    (out / rundir.CONFIG).write_text((out / rundir.CONFIG).read_text().replace("device: cpu", "device: cuda"))
    cfg = same_run_config(out, None)
    assert cfg.device == "auto" and cfg.threads is None  # decided again on this machine
    assert cfg.precision == resolved["precision"] and cfg.input_size == 32  # what ran
    assert list(cfg.normalization.mean) == resolved["normalization"]["mean"]
    m = train(_auto(epochs=2), out, data=str(src), resume=True)
    assert len(m["epochs"]) == 2 and m["config"]["device"] == "cpu"
    assert (out / rundir.REQUESTED).read_text() == requested_before


@pytest.mark.parametrize("existing", [False, True])
def test_failed_train_leaves_no_folder_it_created(tmp_path, existing, capsys):
    out = tmp_path / "new" / "deeper"
    if existing:
        out.mkdir(parents=True)
    rc = main(["train", "--model", "alexnet_cifar", "--framework", "torch", "--data", str(tmp_path / "missing"),
               "--out", str(out)])
    assert rc == 2 and "missing" in capsys.readouterr().err
    if existing:
        assert out.is_dir() and list(out.iterdir()) == []
    else:
        assert not (tmp_path / "new").exists()


def test_train_failing_after_config_yaml_removes_it(tmp_path, src):
    out = tmp_path / "r"
    with pytest.raises(UserError, match="max_train_images"):
        train(tiny_config("torch", max_train_images=1), out, data=str(src))
    assert not out.exists()


def test_failed_train_keeps_files_it_did_not_write(tmp_path, src):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        train(tiny_config("torch", max_train_images=1), out, data=str(src))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_bad_normalization_mapping_names_the_field():
    with pytest.raises(UserError, match=r"normalization\.std\.1: Input should be greater than 0"):
        validate({"normalization": {"name": "dataset", "mean": [1, 2, 3], "std": [1, 0, 1]}})
    with pytest.raises(UserError, match="normalization: Input should be 'dataset'.*or a mapping"):
        validate({"normalization": "zscore"})


def test_resume_compares_with_the_given_config_not_the_resolved_one(tmp_path, src):
    """A resume asked with the config the run was given is the same run, though config.yaml holds
    the decided values; a real change is refused naming the key."""
    out = tmp_path / "r"

    def stop(*_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_auto(epochs=2), out, data=str(src), on_epoch_end=stop)
    assert same_run_config(out, _auto(epochs=2)).input_size == 32
    with pytest.raises(UserError, match="epochs: run has 2, asked 3"):
        same_run_config(out, _auto(epochs=3))


def test_resume_of_a_run_without_requested_yaml_uses_config_yaml(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / rundir.CONFIG).write_text(rundir.CONFIG_HEADER + "\n" + json.dumps({"device": "cpu", "threads": 3}))
    cfg = same_run_config(out, None)
    assert cfg.device == "cpu" and cfg.threads == 3
