"""Parity: the PyTorch and Keras definitions of a model compute the same function.

Each direction ports a model's weights into a fresh, differently initialised model of
the other framework, then compares logits on one fixed random batch. First a seeded
torch model goes into Keras. Then that Keras model, perturbed, goes back into a fresh
torch model. Both models are in eval mode and fp32. Before porting, BatchNorm
statistics and affine parameters are set to random non-trivial values. Fresh ones
(mean 0, variance 1, gamma 1, beta 0) would let a BatchNorm porting bug go unseen.
The check passes when both maximum absolute logit differences are <= ``TOL`` and the
parameter counts and FLOPs are equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alexbench.frameworks import import_keras, import_torch
from alexbench.models import count_params, create_model, get_spec
from alexbench.models import port
from alexbench.models.flops import keras_flops, torch_flops

TOL = 1e-4


def _randomise_torch_bn(model: Any, rng: np.random.Generator) -> None:
    torch = import_torch()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                for t, values in ((m.weight, rng.uniform(0.5, 1.5, n)), (m.bias, rng.normal(0, 0.1, n)),
                                  (m.running_mean, rng.normal(0, 0.1, n)), (m.running_var, rng.uniform(0.5, 1.5, n))):
                    t.copy_(torch.from_numpy(values.astype(np.float32)))


def _perturb_keras(model: Any, rng: np.random.Generator) -> None:
    """New random BatchNorm values, and every kernel and bias scaled per output unit by U(0.5, 1.5).

    This makes the Keras model a different function from the torch model it was
    ported from, so the keras->torch figure is measured on other weights.
    """
    keras = import_keras()
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n)])
        elif layer.weights:
            arrays = layer.get_weights()
            scale = rng.uniform(0.5, 1.5, arrays[0].shape[-1]).astype(np.float32)
            layer.set_weights([a * scale for a in arrays])


def _torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    torch = import_torch()
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _keras_logits(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x.transpose(0, 2, 3, 1), training=False), dtype=np.float32)  # NCHW -> NHWC


def check(name: str, num_classes: int = 10, batch: int = 4, seed: int = 0, input_size: int | None = None,
          **options: Any) -> dict[str, Any]:
    """Port ``name`` torch->keras and keras->torch and compare logits on a fixed batch.

    Returns a dict with ``torch_to_keras`` and ``keras_to_torch`` (max abs logit
    difference), ``max_abs_logit`` (the scale of the logits compared),
    ``relative`` (the larger difference over that scale), ``params`` and ``flops``
    per framework, ``tol`` and ``passed``.
    """
    torch = import_torch()
    keras = import_keras()
    spec = get_spec(name)
    if batch < 1:
        from alexbench.errors import UserError

        raise UserError(f"parity: batch must be >= 1 (got {batch})")
    rng = np.random.default_rng(seed)
    size = input_size or spec.input_size
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)  # NCHW

    # torch -> keras
    torch.manual_seed(seed)
    keras.utils.set_random_seed(seed)
    tm = create_model(name, "torch", num_classes, input_size=size, **options)
    _randomise_torch_bn(tm, rng)
    km = port.torch_to_keras(tm, create_model(name, "keras", num_classes, input_size=size, **options))
    ref = _torch_logits(tm, x)
    d_tk = float(np.max(np.abs(ref - _keras_logits(km, x))))
    params = {"torch": count_params(tm, "torch"), "keras": count_params(km, "keras")}
    flops = {"torch": torch_flops(tm, size), "keras": keras_flops(km)}
    scale = float(np.max(np.abs(ref)))
    del tm

    # keras -> torch: the Keras model above, perturbed, into a fresh torch model (from another
    # seed), so every torch weight must be written by the porter for the logits to agree.
    torch.manual_seed(seed + 1)
    _perturb_keras(km, rng)
    tm = port.keras_to_torch(km, create_model(name, "torch", num_classes, input_size=size, **options))
    ref = _keras_logits(km, x)
    d_kt = float(np.max(np.abs(ref - _torch_logits(tm, x))))
    scale = max(scale, float(np.max(np.abs(ref))))
    del tm, km

    passed = (d_tk <= TOL and d_kt <= TOL and params["torch"] == params["keras"]
              and flops["torch"] == flops["keras"])
    return {
        "model": name, "options": dict(options), "num_classes": num_classes, "batch": batch, "seed": seed,
        "torch_to_keras": d_tk, "keras_to_torch": d_kt, "max_abs_logit": scale,
        "relative": max(d_tk, d_kt) / scale if scale > 0 else float("inf"),
        "params": params, "flops": flops, "tol": TOL, "passed": bool(passed),
    }
