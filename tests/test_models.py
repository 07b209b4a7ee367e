"""Every registered model in both frameworks: shapes, gradients, parity, params, FLOPs, fine-tuning API."""

from __future__ import annotations

import functools
import gc

import numpy as np
import pytest

from alexbench.errors import UserError
from alexbench.frameworks import import_keras, import_torch
from alexbench.models import (
    MODELS,
    count_params,
    create_model,
    flops_per_image,
    head_layer_names,
    reset_classifier,
    set_base_trainable,
    torch_train_mode,
)

torch = import_torch()
keras = import_keras()

CASES = [(name, fw) for name, spec in MODELS.items() for fw in spec.frameworks]


def _batch(name: str) -> int:
    return 1 if MODELS[name].input_size >= 224 else 2


@functools.lru_cache(maxsize=None)
def _built(name: str, framework: str, options: tuple = ()) -> object:
    """One 10-class model per (name, framework, options), shared by the tests that do not change weights."""
    return create_model(name, framework, **dict(options))


@pytest.fixture(scope="module", autouse=True)
def _free_built_models():
    """Every model of this module is let go when it ends: ~4 GB of them (VGG16 and the AlexNets in both
    frameworks) would otherwise stay in the test process until the whole suite ends."""
    yield
    _built.cache_clear()
    gc.collect()


# ------------------------------------------------------------------ registry

def test_registry_specs():
    assert set(MODELS) == {"alexnet", "alexnet2012", "alexnet_bn", "alexnet_cifar", "vgg16"}
    sizes = {n: s.input_size for n, s in MODELS.items()}
    assert sizes == {"alexnet": 224, "alexnet2012": 227, "alexnet_bn": 224, "alexnet_cifar": 32, "vgg16": 224}
    assert MODELS["alexnet_cifar"].default_norm == "dataset"
    assert all(MODELS[n].default_norm == "imagenet" for n in ("alexnet", "alexnet2012", "alexnet_bn", "vgg16"))
    assert MODELS["alexnet"].pretrained_norm == {"torch": "imagenet", "keras": "imagenet"}
    assert MODELS["vgg16"].pretrained_norm == {"torch": "imagenet", "keras": "caffe"}
    for spec in MODELS.values():
        assert spec.frameworks == ("torch", "keras") and spec.description


def test_unknown_model_lists_valid_names():
    with pytest.raises(UserError, match="alexnet, alexnet2012, alexnet_bn, alexnet_cifar, vgg16"):
        create_model("resnet50", "torch")


@pytest.mark.parametrize("kwargs, match", [
    ({"framework": "jax"}, "framework"),
    ({"num_classes": 0}, "num_classes"),
    ({"depth": 3}, "unknown option 'depth'; valid options: dropout, width, norm"),
    ({"width": 0}, "option width: Input should be greater than 0"),
    ({"dropout": 1.0}, "option dropout: Input should be less than 1"),
    ({"width": "wide"}, "option width: Input should be a valid number"),
])
def test_bad_arguments_are_user_errors(kwargs, match):
    args = {"framework": "torch", **kwargs}
    with pytest.raises(UserError, match=match):
        create_model("alexnet_cifar", **args)


def test_norm_option_is_checked():
    with pytest.raises(UserError, match="lrn|batch|none"):
        create_model("alexnet2012", "torch", norm="group")
    with pytest.raises(UserError, match="unknown option 'norm'"):
        create_model("alexnet", "torch", norm="batch")


def test_width_scales_conv_channels_to_multiples_of_8():
    tm = create_model("alexnet_cifar", "torch", width=0.3)
    km = create_model("alexnet_cifar", "keras", width=0.3)
    widths = [getattr(tm.features, f"conv{i}").out_channels for i in range(1, 6)]
    assert widths == [16, 56, 112, 80, 80]  # 64*0.3=19.2 -> 16, 192*0.3=57.6 -> 56, 256*0.3=76.8 -> 80
    assert [km.get_layer(f"conv{i}").filters for i in range(1, 6)] == widths
    assert count_params(tm, "torch") == count_params(km, "keras")


# ------------------------------------------------------------------ forward / backward

@pytest.mark.parametrize("name, framework", CASES)
def test_forward_backward(name, framework):
    size, n = MODELS[name].input_size, _batch(name)
    x = np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)
    y = np.array([1, 3][:n])
    model = _built(name, framework)
    if framework == "torch":
        model.train()
        logits = model(torch.from_numpy(x))
        assert tuple(logits.shape) == (n, 10) and logits.dtype == torch.float32
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        grads = torch.autograd.grad(loss, list(model.parameters()))
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert float(grads[0].abs().sum()) > 0  # the gradient reaches conv1
        loss = loss.detach()
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            logits = model(x.transpose(0, 2, 3, 1), training=True)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
        assert tuple(logits.shape) == (n, 10) and logits.dtype == "float32"
        grads = tape.gradient(loss, model.trainable_weights)
        assert all(g is not None and np.isfinite(np.asarray(g)).all() for g in grads)
        assert float(np.abs(np.asarray(grads[0])).sum()) > 0
    assert np.isfinite(float(loss))


def test_layer_names_match_across_frameworks():
    for name, spec in MODELS.items():
        for options in spec.parity_variants:
            key = tuple(sorted((k, v) for k, v in options.items() if spec.options.get(k) != v))  # () = defaults
            tm, km = _built(name, "torch", key), _built(name, "keras", key)
            torch_names = [n.rsplit(".", 1)[-1] for n, m in tm.named_modules() if n and not list(m.children())]
            keras_names = [layer.name for layer in km.layers]
            # every torch module has a Keras layer of the same name, in the same order;
            # Keras adds only the input, explicit padding and flatten
            assert [n for n in keras_names if n in torch_names] == torch_names, (name, options)
            extra = [n for n in keras_names if n not in torch_names]
            assert set(extra) <= {"image", "pad1", "flatten"}, (name, extra)


# ------------------------------------------------------------------ params and FLOPs

def test_alexnet_has_57044810_params_in_both_frameworks():
    assert count_params(_built("alexnet", "torch"), "torch") == (57_044_810, 57_044_810)
    assert count_params(_built("alexnet", "keras"), "keras") == (57_044_810, 57_044_810)


def test_flops_convention_matches_torchvision_macs():
    # torchvision's table lists AlexNet (1000 classes) at 0.714 GMAC; here a MAC is 2 FLOPs.
    macs = (55 * 55 * 64 * 3 * 11 * 11 + 27 * 27 * 192 * 64 * 5 * 5 + 13 * 13 * 384 * 192 * 9
            + 13 * 13 * 256 * 384 * 9 + 13 * 13 * 256 * 256 * 9 + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)
    assert flops_per_image("alexnet", num_classes=1000) == 2 * macs
    assert round(macs / 1e9, 3) == 0.714


VARIANTS = [(name, tuple(sorted((k, v) for k, v in opts.items() if MODELS[name].options.get(k) != v)))
            for name, spec in MODELS.items() for opts in spec.parity_variants]


@pytest.mark.parametrize("name, options", VARIANTS, ids=[f"{n}-{dict(o)}" for n, o in VARIANTS])
def test_torch_flop_counter_agrees_with_the_keras_walker(name, options):
    """torch.utils.flop_counter on the torch model vs the layer walker on the Keras model.

    Measured: equal to the FLOP for every registered model and variant (a difference of 0),
    so the tolerance is 0.
    """
    from alexbench.models.flops import keras_flops, torch_flops

    t = torch_flops(_built(name, "torch", options), MODELS[name].input_size)
    k = keras_flops(_built(name, "keras", options))
    assert t > 0 and t == k, (name, options, t, k, t - k)
    # what a run records: the torch count of a weightless copy (meta device) is the same count
    assert flops_per_image(name, 10, "torch", **dict(options)) == t


def test_torch_flops_come_from_the_operators_run():
    """A matrix product outside any nn.Linear (which a module walker would miss) is counted."""
    from alexbench.models.flops import torch_flops

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(3 * 4 * 4, 5))

        def forward(self, x):
            return x.flatten(1) @ self.w

    assert torch_flops(Net(), 4) == 2 * 48 * 5


# ------------------------------------------------------------------ parity

PARITY = [(name, opts) for name, spec in MODELS.items() for opts in spec.parity_variants] + [
    ("alexnet_cifar", {"width": 0.5, "dropout": 0.2})]


@pytest.mark.parametrize("name, options", PARITY, ids=[f"{n}-{o}" for n, o in PARITY])
def test_parity(name, options):
    """Both directions <= 1e-4, and equal params and FLOPs (each side counted on its own built model)."""
    from alexbench.models.parity import TOL, check

    size = 32 if options.get("pool_padding") == "same" else None  # the 32 px notebook case; 224 px is big
    r = check(name, num_classes=10, batch=_batch(name), seed=0, input_size=size, **options)
    assert r["torch_to_keras"] <= TOL and r["keras_to_torch"] <= TOL, r
    assert r["params"]["torch"] == r["params"]["keras"]
    assert r["flops"]["torch"] == r["flops"]["keras"]
    assert r["passed"] and r["max_abs_logit"] > 0


def test_parity_detects_a_wrong_flatten_order(monkeypatch):
    from alexbench.models import port
    from alexbench.models.parity import TOL, check

    monkeypatch.setattr(port, "_flatten_inputs", lambda model: {})  # treat fc6 like any other dense layer
    r = check("alexnet_cifar", batch=2)
    assert not r["passed"] and r["torch_to_keras"] > 10 * TOL and r["keras_to_torch"] > 10 * TOL


def test_alexnet_cifar_train_mode_parity():
    """Training-mode BatchNorm (batch statistics) with dropout off: same logits and running means."""
    from alexbench.models import port

    tm = create_model("alexnet_cifar", "torch", dropout=0.0)
    km = port.torch_to_keras(tm, create_model("alexnet_cifar", "keras", dropout=0.0))
    x = np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32)
    tm.train()
    a = tm(torch.from_numpy(x)).detach().numpy()
    b = np.asarray(km(x.transpose(0, 2, 3, 1), training=True))
    assert np.abs(a - b).max() <= 1e-4
    # the running-mean update uses the same momentum (torch 0.1 == 1 - keras 0.9)
    np.testing.assert_allclose(tm.features.bn3.running_mean.numpy(), km.get_layer("bn3").moving_mean.numpy(),
                               atol=1e-5)


# ------------------------------------------------------------------ Keras layers that mirror torch

@pytest.mark.parametrize("size", [1, 2, 4, 5])
def test_lrn_matches_torch(size):
    from alexbench.models.keras_layers import LocalResponseNorm

    x = np.random.default_rng(size).standard_normal((2, 7, 3, 6)).astype(np.float32) * 3  # NCHW
    ref = torch.nn.LocalResponseNorm(size, alpha=5e-4 * size, beta=0.75, k=2.0)(torch.from_numpy(x)).numpy()
    out = LocalResponseNorm(size, alpha=5e-4 * size, beta=0.75, k=2.0)(x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), ref, atol=1e-6)


@pytest.mark.parametrize("h, w, out", [(13, 13, 6), (7, 5, 6), (6, 6, 6), (14, 9, 7), (3, 3, 1)])
def test_adaptive_avg_pool_matches_torch(h, w, out):
    from alexbench.models.keras_layers import AdaptiveAvgPool2D

    x = np.random.default_rng(h * w).standard_normal((2, 4, h, w)).astype(np.float32)
    ref = torch.nn.AdaptiveAvgPool2d(out)(torch.from_numpy(x)).numpy()
    got = np.asarray(AdaptiveAvgPool2D(out)(x.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_keras_initialisers_match_torch_defaults():
    """Kernel bound sqrt(1/fan_in) and bias bound 1/sqrt(fan_in), as torch's reset_parameters."""
    km = _built("alexnet", "keras")
    tm = _built("alexnet", "torch")
    for name, fan_in in (("conv2", 64 * 25), ("fc7", 4096)):
        kernel, bias = (np.asarray(v) for v in km.get_layer(name).weights)
        tw = dict(tm.named_modules())[f"{'features' if name.startswith('conv') else 'classifier'}.{name}"]
        bound = 1 / np.sqrt(fan_in)
        for k_arr, t_arr in ((kernel, tw.weight.detach().numpy()), (bias, tw.bias.detach().numpy())):
            assert np.abs(k_arr).max() <= bound * (1 + 1e-6) and np.abs(t_arr).max() <= bound * (1 + 1e-6)
            assert np.abs(k_arr).max() > 0.95 * bound and np.abs(t_arr).max() > 0.9 * bound
        # uniform(-b, b) has std b / sqrt(3); both kernels have >100k samples
        np.testing.assert_allclose([kernel.std(), tw.weight.detach().numpy().std()], bound / np.sqrt(3), rtol=0.01)


def test_keras_model_with_custom_layers_saves_and_loads_in_safe_mode(tmp_path):
    km = create_model("alexnet2012", "keras", norm="lrn")
    path = tmp_path / "m.keras"
    km.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = np.random.default_rng(0).standard_normal((1, 227, 227, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(km(x)), atol=1e-6)


# ------------------------------------------------------------------ mixed precision / memory format

def test_keras_mixed_bfloat16_gives_float32_logits():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for name in ("alexnet_cifar", "alexnet2012"):
            km = create_model(name, "keras")
            s = MODELS[name].input_size
            out = km(np.random.default_rng(0).standard_normal((2, s, s, 3)).astype(np.float32), training=True)
            assert km.get_layer("conv1").compute_dtype == "bfloat16"
            assert out.dtype == "float32" and np.isfinite(np.asarray(out)).all()
            km = reset_classifier(km, "keras", 3)
            assert km.layers[-1].compute_dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_torch_channels_last_and_bf16_autocast():
    tm = create_model("alexnet_cifar", "torch").to(memory_format=torch.channels_last).eval()
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = tm(x.contiguous())
        assert torch.allclose(tm(x), ref, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = tm(x)
    assert out.shape == (2, 10) and torch.isfinite(out.float()).all()


# ------------------------------------------------------------------ fine-tuning API

@pytest.mark.parametrize("name", ["alexnet_cifar", "alexnet2012"])
def test_freeze_base_and_unfreeze(name):
    opts = {"norm": "batch"} if name == "alexnet2012" else {}
    head = head_layer_names(name)
    assert head == ["fc6", "fc7", "fc8"]

    tm = create_model(name, "torch", **opts)
    set_base_trainable(tm, "torch", False, head)
    trainable = {n.split(".")[1] for n, p in tm.named_parameters() if p.requires_grad}
    assert trainable == set(head)
    torch_train_mode(tm)
    bns = [m for m in tm.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and tm.classifier.training
    before = bns[0].running_mean.clone()
    tm(torch.randn(2, 3, MODELS[name].input_size, MODELS[name].input_size))
    assert torch.equal(bns[0].running_mean, before)  # frozen BN does not update its statistics
    set_base_trainable(tm, "torch", True, head)
    torch_train_mode(tm)
    assert all(p.requires_grad for p in tm.parameters()) and all(m.training for m in bns)

    km = create_model(name, "keras", **opts)
    set_base_trainable(km, "keras", False, head)
    assert {layer.name for layer in km.layers if layer.trainable_weights} == set(head)
    bn = next(layer for layer in km.layers if isinstance(layer, keras.layers.BatchNormalization))
    before = bn.moving_mean.numpy().copy()
    s = MODELS[name].input_size
    km(np.random.default_rng(0).standard_normal((2, s, s, 3)).astype(np.float32) + 1.0, training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)  # non-trainable BN runs in inference mode
    assert count_params(km, "keras")[0] == count_params(tm, "torch")[0] - sum(
        p.numel() for n, p in tm.named_parameters() if not n.startswith("classifier."))
    set_base_trainable(km, "keras", True, head)
    assert count_params(km, "keras") == count_params(create_model(name, "keras", **opts), "keras")


def test_vgg16_head_names():
    assert head_layer_names("vgg16") == ["fc1", "fc2", "predictions"]


def test_spec_head_is_what_freezing_leaves_trainable_in_every_model():
    """ModelSpec.head names exactly the weighted layers of the classifier (torch ``classifier``,
    Keras after ``flatten``), and freezing leaves exactly those trainable, in both frameworks."""
    for name, spec in MODELS.items():
        head = head_layer_names(name)
        tm, km = _built(name, "torch"), _built(name, "keras")
        classifier = {n.split(".")[1] for n, _ in tm.named_parameters() if n.startswith("classifier.")}
        after_flatten = [layer.name for layer in km.layers[[la.name for la in km.layers].index("flatten") + 1:]
                         if layer.weights]
        assert classifier == set(head) and after_flatten == head, name
        assert spec.classifier == head[-1]
        try:
            set_base_trainable(tm, "torch", False, head)
            set_base_trainable(km, "keras", False, head)
            assert {n.rsplit(".", 2)[-2] for n, p in tm.named_parameters() if p.requires_grad} == set(head), name
            assert {layer.name for layer in km.layers if layer.trainable_weights} == set(head), name
        finally:
            set_base_trainable(tm, "torch", True, head)
            set_base_trainable(km, "keras", True, head)
    with pytest.raises(UserError, match="head layer"):
        set_base_trainable(_built("alexnet_cifar", "torch"), "torch", False, ["fc9"])


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_reset_classifier(framework):
    model = create_model("alexnet_cifar", framework, num_classes=1000)
    model = reset_classifier(model, framework, 10)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    if framework == "torch":
        assert model.classifier.fc8.out_features == 10
        out = model.eval()(torch.from_numpy(x))
    else:
        assert model.layers[-1].name == "fc8" and model.layers[-1].units == 10
        assert model.get_layer("fc8").bias.shape == (10,)
        out = model(x.transpose(0, 2, 3, 1))
    assert tuple(out.shape) == (2, 10)
    assert count_params(model, framework)[1] == count_params(create_model("alexnet_cifar", framework), framework)[1]


def test_registry_import_loads_no_framework():
    import subprocess
    import sys

    code = ("import sys, alexbench.models as m; assert m.MODELS['alexnet'].input_size == 224; "
            "print(sorted(k for k in ('torch', 'tensorflow', 'keras') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-1000:]
