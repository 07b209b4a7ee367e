"""Input sizes: which sizes each model takes, checked against the real layers, and refused early."""

from __future__ import annotations

import numpy as np
import pytest

from alexbench.cli import main
from alexbench.errors import UserError
from alexbench.frameworks import import_keras, import_torch
from alexbench.models import MODELS, accepted_sizes, check_input_size, check_options, count_params, create_model
from alexbench.models.geometry import describe_sizes
from alexbench.runner import load_plan

torch = import_torch()
keras = import_keras()

VARIANTS = [(name, opts) for name, spec in MODELS.items() for opts in spec.parity_variants]
ACCEPTS = {  # worked out by hand from each model file's layers
    "alexnet": "63 px or more",            # conv1 11x11/4 pad 2, three 3x3/2 pools, adaptive avgpool
    "alexnet2012": "227-258 px",           # fc6 takes pool5's 6x6 map
    "alexnet_bn": "67 px or more",         # unpadded conv1, valid pools, fc6 sized from the input
    "alexnet_cifar": "32-39 px",           # fc6 takes pool5's 4x4 map
    "vgg16": "32 px or more",              # five 2x2/2 pools, adaptive avgpool
}


def _probes(name: str, opts: dict) -> list[int]:
    """The edges of the accepted sizes and one step beyond each."""
    sizes = accepted_sizes(name, opts)
    lo, hi = sizes[0], sizes[-1]
    probes = {lo - 1, lo} | ({hi, hi + 1} if hi < 1024 else set())
    return sorted(s for s in probes if s >= 8)


def test_accepted_sizes_read_as_worked_out_by_hand():
    assert {name: describe_sizes(accepted_sizes(name)) for name in MODELS} == ACCEPTS
    assert describe_sizes(accepted_sizes("alexnet_bn", {"pool_padding": "same"})) == "11 px or more"
    for name, spec in MODELS.items():
        for opts in spec.parity_variants:
            assert spec.input_size in accepted_sizes(name, opts), (name, opts)


@pytest.mark.parametrize("name, opts", VARIANTS, ids=[f"{n}-{o}" for n, o in VARIANTS])
def test_geometry_matches_the_torch_layers(name, opts):
    """At the edges of the accepted range the real torch layers give the map the registry's
    arithmetic predicts, or fail where it says they cannot run, and the classifier takes
    exactly the maps the registry says it takes."""
    spec = MODELS[name]
    geometry = spec.geometry(check_options(name, opts))
    model = spec.builder("torch")(num_classes=10, **opts).eval()  # built at the model's own size
    fc_in = next(m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)).in_features
    adaptive = any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.modules())
    for size in _probes(name, opts):
        side, failing = geometry.trace(size)
        with torch.no_grad():
            if failing:
                with pytest.raises(RuntimeError):
                    model.features(torch.zeros(1, 3, size, size))
                continue
            fmap = model.features(torch.zeros(1, 3, size, size))
        assert fmap.shape[-1] == side, (name, size)
        if adaptive:
            fits = True
        elif geometry.classifier_map is None:  # fc6 sized from the input: build for this size and run it
            sized = spec.builder("torch")(num_classes=10, input_size=size, **opts).eval()
            with torch.no_grad():
                fits = tuple(sized(torch.zeros(1, 3, size, size)).shape) == (1, 10)
        else:
            fits = fmap[0].numel() == fc_in
        assert geometry.accepts(size) == fits, (name, size)


@pytest.mark.parametrize("name, size, opts", [
    ("alexnet", 96, {}), ("alexnet2012", 258, {"norm": "none"}), ("alexnet_cifar", 39, {"width": 0.125}),
    ("alexnet_bn", 32, {"pool_padding": "same"}), ("alexnet_bn", 67, {}),
])
def test_keras_models_are_built_for_other_accepted_sizes(name, size, opts):
    km = create_model(name, "keras", input_size=size, **opts)
    tm = create_model(name, "torch", input_size=size, **opts)
    assert km.input_shape == (None, size, size, 3)
    assert count_params(km, "keras") == count_params(tm, "torch")
    assert tuple(km(np.zeros((1, size, size, 3), np.float32)).shape) == (1, 10)


def test_alexnet_bn_has_the_notebooks_parameter_counts():
    # the PyTorch notebook prints 46,790,730 at 224 px; the Keras summary at 32 px with "same" pools
    # prints 21,624,906 trainable of 21,627,658
    assert count_params(create_model("alexnet_bn", "torch"), "torch")[0] == 46_790_730
    km = create_model("alexnet_bn", "keras", input_size=32, pool_padding="same")
    assert count_params(km, "keras") == (21_624_906, 21_627_658)


def test_alexnet_bn_same_pools_match_keras_at_odd_sizes():
    from alexbench.models.parity import TOL, check

    r = check("alexnet_bn", batch=2, input_size=35, pool_padding="same")  # odd: padding split 1/1 and 0/1
    assert r["passed"] and r["torch_to_keras"] <= TOL and r["keras_to_torch"] <= TOL, r


def test_a_size_the_model_cannot_take_is_one_clear_error():
    with pytest.raises(UserError) as exc:
        check_input_size("alexnet2012", 224)
    msg = str(exc.value)
    assert "alexnet2012" in msg and "224 px" in msg and "227-258 px" in msg and "5x5" in msg
    with pytest.raises(UserError, match=r"alexnet cannot take 32 px \(pool5 gets a 1x1 map.*63 px or more"):
        create_model("alexnet", "keras", input_size=32)
    with pytest.raises(UserError, match=r"pool_padding=valid\) cannot take 32 px.*67 px or more"):
        check_input_size("alexnet_bn", 32)
    assert check_input_size("alexnet_bn", 32, {"pool_padding": "same"}) == 32
    assert check_input_size("alexnet_cifar", None) == 32


def test_a_plan_with_a_bad_size_is_refused_before_anything_runs(tmp_path, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text("entries:\n  - {model: alexnet_cifar, framework: torch}\n"
                      "  - {model: alexnet2012, framework: keras, input_size: 224}\n")
    with pytest.raises(UserError, match=r"entries\[1\]: input_size: alexnet2012 cannot take 224 px"):
        load_plan(str(preset))
    out = tmp_path / "out"
    assert main(["run", "--preset", str(preset), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "227-258 px" in err and "Traceback" not in err
    assert not out.exists()  # refused before the first entry, not when training reaches fc6
    # a --set override is checked the same way, for every entry
    with pytest.raises(UserError, match=r"entries\[0\]: input_size: alexnet_cifar cannot take 64 px.*32-39 px"):
        load_plan(str(preset), overrides=["input_size=64"])


def test_train_refuses_a_bad_size_and_bad_options_naming_the_field(tmp_path, capsys):
    rc = main(["train", "--model", "vgg16", "--framework", "torch", "--set", "input_size=16",
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "input_size: vgg16 cannot take 16 px" in err and "32 px or more" in err
    rc = main(["train", "--model", "alexnet_bn", "--framework", "torch", "--set", "model_options.pool_padding=full",
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "model_options.pool_padding" in err and "'valid' or 'same'" in err
    assert not (tmp_path / "r").exists()
