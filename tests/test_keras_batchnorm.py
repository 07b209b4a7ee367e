"""``keras_batchnorm: fused``: Keras's BatchNormalization trained through TensorFlow's fused kernel.

The fused and the stock path must compute the same training step (outputs, gradients, moving
statistics, weights after a few optimizer steps) to float32 rounding, leave evaluation as it
was, and leave the model a stock Keras model: same layers, names and weights, saved and
loaded without custom objects. The bounds below are about 10x the differences measured on
this tiny model, each relative to the array's largest value: fp32 logits 2.3e-6, gradients
5.4e-6, weights after three SGD steps 1.0e-5, moving statistics 1.2e-6; under bf16 the
outputs differ by at most one bf16 rounding step.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from conftest import tiny_config

from alexbench.config import config_differences, dump_yaml, load_yaml, validate
from alexbench.data.stream import Normalization
from alexbench.engines import keras_batchnorm
from alexbench.frameworks import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402 - after import_keras, which sets the backend and threads

NORM = Normalization("dataset", (127.0, 127.0, 127.0), (64.0, 64.0, 64.0))


def _engine(choice: str, **over: object):
    from alexbench.engines.keras_engine import KerasEngine

    eng = KerasEngine(tiny_config("keras", keras_batchnorm=choice, **over), 10, NORM, 32)
    eng.build()
    return eng


def _batches(n: int, size: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [(rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size)) for _ in range(n)]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the largest magnitude of ``a``."""
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-12))


def _weights(model) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in model.weights]  # get_weights() warns under numpy 2


def _paths(model) -> list[str]:
    """The variables' paths; dropout seed generators are numbered per process (two models here), so left out."""
    return [v.path for v in model.variables if not v.path.startswith("seed_generator")]


def _bn_stats(eng) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for layer in keras_batchnorm.batchnorm_layers(eng.model)
            for v in (layer.moving_mean, layer.moving_variance)]


@pytest.fixture(scope="module")
def pair():
    return _engine("stock"), _engine("fused")


def test_the_engine_fuses_every_batchnorm_and_keeps_names_and_weights(pair):
    stock, fused = pair
    layers = keras_batchnorm.batchnorm_layers(fused.model)
    assert len(layers) == 5 and all(keras_batchnorm.is_fused(la) for la in layers)
    assert not any(keras_batchnorm.is_fused(la) for la in keras_batchnorm.batchnorm_layers(stock.model))
    assert (stock.batchnorm, fused.batchnorm) == ("stock", "fused")
    assert [type(la) for la in layers] == [keras.layers.BatchNormalization] * 5
    assert _paths(fused.model) == _paths(stock.model) and len(fused.model.variables) == len(stock.model.variables)
    assert fused.model.count_params() == stock.model.count_params()
    for a, b in zip(_weights(stock.model), _weights(fused.model)):
        np.testing.assert_array_equal(a, b)  # the same seed builds the same weights: the comparisons below start equal


def test_fused_forward_and_gradients_equal_stock_at_fp32(pair):
    from alexbench.engines.keras_steps import prepare

    stock, fused = pair
    (xb, yb), = _batches(1)
    out = []
    for eng in (stock, fused):
        x = prepare(eng, xb)
        # dropout off (its masks are not what is compared); BatchNorm in training mode through a training=True call
        for name in ("drop6", "drop7"):
            eng.model.get_layer(name).rate = 0.0
        try:
            with tf.GradientTape() as tape:
                logits = eng.model(x, training=True)
                loss = eng.loss(tf.one_hot(yb, 10), logits)
            grads = tape.gradient(loss, [v.value for v in eng.model.trainable_variables])
        finally:
            for name in ("drop6", "drop7"):
                eng.model.get_layer(name).rate = 0.25
        out.append((logits.numpy(), [g.numpy() for g in grads]))
    (ls, gs), (lf, gf) = out
    assert _rel(ls, lf) < 3e-5
    for v, a, b in zip(stock.model.trainable_variables, gs, gf):
        assert _rel(a, b) < 5e-5, v.path


def test_fused_training_steps_track_stock_at_fp32():
    """Three optimizer steps of the engine (dropout, SGD update, moving statistics) on the same batches."""
    stock, fused = _engine("stock"), _engine("fused")
    for xb, yb in _batches(3):
        loss_s, correct_s = stock.train_step(xb, yb, 0.05)
        loss_f, correct_f = fused.train_step(xb, yb, 0.05)
        assert abs(loss_s - loss_f) <= 1e-5 * abs(loss_s) and correct_s == correct_f
    for a, b in zip(stock.model.trainable_variables, fused.model.trainable_variables):
        assert _rel(a.numpy(), b.numpy()) < 1e-4, a.path
    for a, b in zip(_bn_stats(stock), _bn_stats(fused)):
        assert _rel(a, b) < 1e-5
    # evaluation reads the moving statistics through Keras's own inference path on both
    probs_s, loss_s = stock.predict(_batches(1))
    probs_f, loss_f = fused.predict(_batches(1))
    np.testing.assert_allclose(probs_f, probs_s, atol=1e-5)


def test_moving_statistics_follow_keras_convention():
    """momentum * old + (1 - momentum) * batch, with the biased batch variance (the kernel returns it
    Bessel-corrected)."""
    layer = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    x = np.random.default_rng(0).normal(2.0, 3.0, (6, 3, 3, 4)).astype(np.float32)
    layer.build(x.shape)
    keras_batchnorm.fuse(keras.Sequential([keras.Input(x.shape[1:]), layer]))
    layer(x, training=True)
    flat = x.reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * flat.var(0), rtol=1e-5)


@pytest.mark.parametrize("shape", [(8, 5, 5, 6), (8, 6)])
def test_fused_layer_equals_stock_under_mixed_bfloat16(shape):
    """bf16 input, float32 statistics: the same bf16 output to one bf16 rounding step; 2D inputs too."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        a, b = (keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5) for _ in range(2))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    x = tf.cast(np.random.default_rng(1).normal(1.0, 2.0, shape).astype(np.float32), tf.bfloat16)
    for la in (a, b):
        la.build(shape)
    keras_batchnorm.fuse(keras.Sequential([keras.Input(shape[1:]), b]))
    ya, yb = a(x, training=True), b(x, training=True)
    assert ya.dtype == yb.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(yb, tf.float32).numpy(), tf.cast(ya, tf.float32).numpy(),
                               rtol=2 ** -7, atol=1e-2)
    for va, vb in ((a.moving_mean, b.moving_mean), (a.moving_variance, b.moving_variance)):
        assert vb.dtype == "float32"
        np.testing.assert_allclose(vb.numpy(), va.numpy(), rtol=1e-4, atol=1e-6)


def test_what_the_kernel_does_not_cover_runs_keras_own_call():
    """Inference, a frozen layer and a mask go through Keras's call unchanged (bit for bit)."""
    a, b = keras.layers.BatchNormalization(), keras.layers.BatchNormalization()
    x = np.random.default_rng(2).normal(0, 1, (4, 3, 3, 2)).astype(np.float32)
    for la in (a, b):
        la.build(x.shape)
        la.moving_mean.assign([0.5, -0.5])
    keras_batchnorm.fuse(keras.Sequential([keras.Input(x.shape[1:]), b]))
    np.testing.assert_array_equal(a(x, training=False).numpy(), b(x, training=False).numpy())
    a.trainable = b.trainable = False
    np.testing.assert_array_equal(a(x, training=True).numpy(), b(x, training=True).numpy())
    a.trainable = b.trainable = True
    mask = np.array([[[True, False, True]] * 3] * 4)
    np.testing.assert_array_equal(a(x, training=True, mask=mask).numpy(), b(x, training=True, mask=mask).numpy())
    assert keras_batchnorm.unfuse(keras.Sequential([keras.Input(x.shape[1:]), b])) == 1
    assert not keras_batchnorm.is_fused(b) and "call" not in vars(b)


def test_the_trained_fused_model_saves_and_loads_as_stock_keras(tmp_path):
    eng = _engine("fused")
    for xb, yb in _batches(2):
        eng.train_step(xb, yb, 0.05)
    path = tmp_path / "m.keras"
    eng.model.save(path)
    with zipfile.ZipFile(path) as zf:
        saved = json.loads(zf.read("config.json"))
    bns = [la for la in saved["config"]["layers"] if la["class_name"] == "BatchNormalization"]
    assert len(bns) == 5 and all(la["module"] == "keras.layers" and "registered_name" not in la
                                 or la.get("registered_name") in (None, "BatchNormalization") for la in bns)
    loaded = keras.saving.load_model(path, compile=False)  # no custom_objects
    assert _paths(loaded) == _paths(eng.model)
    assert not any(keras_batchnorm.is_fused(la) for la in keras_batchnorm.batchnorm_layers(loaded))
    for a, b in zip(_weights(eng.model), _weights(loaded)):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(4).normal(0, 1, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), eng.model(x, training=False).numpy())


def test_checkpoints_cross_between_fused_and_stock(tmp_path):
    """The checkpoint holds the same variables either way: a fused run's checkpoint loads into a stock engine."""
    fused = _engine("fused")
    for xb, yb in _batches(2):
        fused.train_step(xb, yb, 0.05)
    path = tmp_path / "last.npz"
    fused.save(str(path), {"progress": {"epoch": 1}})
    stock = _engine("stock")
    stock.load(str(path))
    assert stock.step_count == 2
    for a, b in zip(_weights(fused.model), _weights(stock.model)):
        np.testing.assert_array_equal(a, b)


def test_the_switch_round_trips_through_config_yaml_and_is_compared_on_resume(tmp_path):
    for choice in ("fused", "stock"):
        cfg = tiny_config("keras", keras_batchnorm=choice)
        path = tmp_path / f"{choice}.yaml"
        path.write_text(dump_yaml(cfg))
        assert validate(load_yaml(path)).keras_batchnorm == choice
    fused, stock = tiny_config("keras", keras_batchnorm="fused"), tiny_config("keras", keras_batchnorm="stock")
    assert config_differences(fused, stock) == [("keras_batchnorm", "fused", "stock")]


def test_a_bad_value_is_refused_by_name():
    from alexbench.errors import UserError

    with pytest.raises(UserError, match=r"keras_batchnorm: Input should be 'fused' or 'stock'"):
        validate({"framework": "keras", "keras_batchnorm": "cudnn"})


def test_other_backends_run_stock_with_a_note(pair):
    """The fused kernel is TensorFlow's: on JAX or torch, ``fused`` runs Keras's own layer and says so."""
    notes: list[str] = []
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization()])
    for backend in ("jax", "torch"):
        assert keras_batchnorm.apply(model, "fused", backend, notes) == "stock"
    assert not keras_batchnorm.is_fused(model.layers[0])
    assert len(notes) == 2 and "on the jax backend Keras's own BatchNormalization runs (stock)" in notes[0]
    assert keras_batchnorm.apply(model, "stock", "tensorflow", notes) == "stock" and len(notes) == 2
    assert keras_batchnorm.apply(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), "fused",
                                 "tensorflow", notes) is None


def test_fused_training_step_equals_torch_batchnorm():
    """Parity in training mode, against ``torch.nn.BatchNorm2d`` (momentum 0.1, eps 1e-5): output, input and affine
    gradients within the parity bound; torch keeps the unbiased variance in ``running_var``, Keras the biased one."""
    import torch

    from alexbench.models.keras_layers import batch_norm
    from alexbench.models.parity import TOL

    rng = np.random.default_rng(5)
    x = rng.normal(0.3, 1.7, (8, 5, 5, 6)).astype(np.float32)
    up = rng.normal(0, 1, x.shape).astype(np.float32)  # the gradient arriving from above
    gamma, beta = rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.normal(0, 0.1, 6).astype(np.float32)
    layer = batch_norm("bn")
    layer.build(x.shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    keras_batchnorm.fuse(keras.Sequential([keras.Input(x.shape[1:]), layer]))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt, training=True)
        loss = tf.reduce_sum(y * up)
    gx, gg, gb = tape.gradient(loss, [xt, layer.gamma.value, layer.beta.value])
    tbn = torch.nn.BatchNorm2d(6, momentum=0.1, eps=1e-5)
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(gamma))
        tbn.bias.copy_(torch.from_numpy(beta))
    xtt = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_(True)
    yt = tbn(xtt)
    (yt * torch.from_numpy(up.transpose(0, 3, 1, 2))).sum().backward()
    nhwc = (0, 2, 3, 1)
    assert np.abs(y.numpy() - yt.detach().numpy().transpose(nhwc)).max() <= TOL
    assert np.abs(gx.numpy() - xtt.grad.numpy().transpose(nhwc)).max() <= TOL
    assert np.abs(gg.numpy() - tbn.weight.grad.numpy()).max() <= TOL
    assert np.abs(gb.numpy() - tbn.bias.grad.numpy()).max() <= TOL
    n = x.size // 6
    np.testing.assert_allclose(layer.moving_mean.numpy(), tbn.running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy() - 0.9,
                               (tbn.running_var.numpy() - 0.9) * (n - 1) / n, rtol=1e-5)
