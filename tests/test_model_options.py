"""Typed per-model options: `model_options` is checked against the model's own options class."""

from __future__ import annotations

import pytest

from alexbench.cli import main
from alexbench.config import dump_yaml, resolve_config, validate
from alexbench.errors import UserError
from alexbench.models import MODELS, check_options, resolve_options
from alexbench.models.options import AlexNetCifarOptions, ModelOptions


def test_every_model_has_a_typed_options_class_with_defaults():
    for name, spec in MODELS.items():
        assert issubclass(spec.options_type, ModelOptions) and spec.options_type is not ModelOptions, name
        assert spec.options == spec.options_type().model_dump() and "dropout" in spec.options
        cfg = validate({"model": name})
        assert isinstance(cfg.model_options, spec.options_type) and dict(**cfg.model_options) == spec.options


@pytest.mark.parametrize("overrides, message", [
    (["model_options.width=0"], "--set: model_options.width: Input should be greater than 0 (got 0)"),
    (["model_options.width=wide"], "--set: model_options.width: Input should be a valid number"),
    (["model_options.dropout=1"], "--set: model_options.dropout: Input should be less than 1 (got 1"),
    (["model_options.depth=3"], "--set: model_options.depth: unknown option of alexnet_cifar; valid options: "
                                "dropout, width, norm"),
    (["model=vgg16", "model_options.width=0.5"], "--set: model_options.width: unknown option of vgg16; valid "
                                                 "options: dropout"),
    (["model=alexnet2012", "model_options.norm=bn"], "--set: model_options.norm: Input should be 'lrn', 'batch' "
                                                     "or 'none' (got 'bn')"),
    (["model=resnet", "model_options.width=0.5"], "--set: model_options: model 'resnet' is not registered"),
    (["model_options=[1]"], "--set: model_options: expected a mapping of alexnet_cifar options, got list"),
])
def test_bad_options_name_the_field(overrides, message):
    with pytest.raises(UserError) as exc:
        resolve_config(None, overrides)
    assert str(exc.value).startswith(message), str(exc.value)


def test_spellings_and_the_saved_config(tmp_path):
    dotted = resolve_config(None, ["model_options.width=0.5"])
    flow = resolve_config(None, ["model_options={width: 0.5}"])
    f = tmp_path / "c.yaml"
    f.write_text("model: alexnet_cifar\nmodel_options:\n  width: 0.5\n")
    for cfg in (dotted, flow, resolve_config(str(f))):
        assert cfg.model_options == AlexNetCifarOptions(width=0.5)
        assert cfg.model_options.width == 0.5 and cfg.model_options.dropout == 0.25
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(dotted))  # resolved: every option written, read back the same
    assert "model_options:\n  dropout: 0.25\n  width: 0.5\n" in saved.read_text()
    assert resolve_config(str(saved)).model_options == dotted.model_options


def test_options_unpack_into_builder_arguments():
    opts = validate({"model_options": {"width": 0.125}}).model_options
    assert resolve_options("alexnet_cifar", opts) == {"dropout": 0.25, "channels": (8, 24, 48, 32, 32),
                                                       "norm": "batch"}
    assert resolve_options("alexnet_cifar", {**opts}) == resolve_options("alexnet_cifar", opts)
    assert check_options("alexnet2012", {}).norm == "lrn"
    with pytest.raises(UserError, match="model alexnet: unknown option 'width'; valid options: dropout"):
        check_options("alexnet", {"width": 1})


def test_cli_exit_2_names_the_field(tmp_path, capsys):
    rc = main(["train", "--model", "alexnet_cifar", "--framework", "torch", "--set", "model_options.width=-1",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "model_options.width: Input should be greater than 0 (got -1)" in err
    assert not (tmp_path / "run").exists()
