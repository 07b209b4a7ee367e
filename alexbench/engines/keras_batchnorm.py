"""BatchNormalization's training step through TensorFlow's fused kernel (``keras_batchnorm: fused``).

Keras 3 computes a training-mode BatchNormalization as separate ops: the moments
(``Mean``, ``Sum``, ``Mul``), then ``x * inv + (beta - mean * inv)``, all in float32 after
casting bf16/fp16 inputs up and the output back down. tf.keras 2 ran the same layer
through one kernel, ``FusedBatchNormV3`` (and its gradient, ``FusedBatchNormGradV3``),
which takes bf16/fp16 ``x`` with float32 scale, offset and statistics. :func:`fuse` makes
the existing ``keras.layers.BatchNormalization`` layers of a model run their
training-mode call through that kernel on Keras's TensorFlow backend.

What stays as it was:

- The layers, their weights (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``) and
  their names: :func:`fuse` replaces the instance's ``call`` only, so the model saves
  (``.keras``, checkpoints) as stock ``BatchNormalization`` layers and loads without
  custom objects. A subclass would change what is saved; swapping the call does not.
- Keras's moving statistics: ``moving = moving * momentum + batch * (1 - momentum)`` with
  the *biased* batch variance, as Keras computes it. The kernel returns the variance
  with Bessel's correction (``n / (n - 1)``, tf.keras 2's convention); it is scaled back.
- Everything the fused kernel does not cover runs Keras's own call: inference
  (``training=False``, a frozen layer), masks, renorm, synchronized statistics, an axis
  that is not the last of a 4D (NHWC) or 2D input, float64.
"""

from __future__ import annotations

from typing import Any, Callable

#: ``keras_batchnorm`` values. ``stock``: Keras's own BatchNormalization call on every backend.
CHOICES = ("fused", "stock")
_STOCK = "_alexbench_stock_call"  # the layer's own call, kept on the instance for what the kernel does not cover


def batchnorm_layers(model: Any) -> list:
    """Every ``keras.layers.BatchNormalization`` in ``model``, nested models included."""
    import keras

    out, todo, seen = [], [model], set()
    while todo:
        layer = todo.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            out.append(layer)
        todo.extend(getattr(layer, "layers", None) or [])
    return out


def apply(model: Any, choice: str, backend: str, notes: list[str]) -> str | None:
    """Make ``model``'s BatchNormalization layers train as the config's ``keras_batchnorm`` asks, on ``backend``.

    Returns what runs (metrics.json's ``system.keras_batchnorm``): ``fused``, ``stock``, or None for a
    model without BatchNorm. ``fused`` on the JAX or torch backend runs stock, with a note saying so."""
    if not batchnorm_layers(model):
        return None
    if choice == "stock":
        return "stock"
    if backend != "tensorflow":
        notes.append(f"keras_batchnorm: fused is TensorFlow's kernel; on the {backend} backend Keras's own "
                     "BatchNormalization runs (stock)")
        return "stock"
    fuse(model)
    return "fused"


def fuse(model: Any) -> int:
    """Run each BatchNormalization's training step in ``model`` through ``FusedBatchNormV3``; returns how many.

    Only for Keras's TensorFlow backend (the op is TensorFlow's). Calling it twice changes nothing more."""
    layers = batchnorm_layers(model)
    for layer in layers:
        if getattr(layer, _STOCK, None) is None:
            stock = layer.call
            object.__setattr__(layer, _STOCK, stock)  # plain attributes: Keras's tracker has nothing to track here
            object.__setattr__(layer, "call", _fused_call(layer, stock))
    return len(layers)


def unfuse(model: Any) -> int:
    """Undo :func:`fuse`: every BatchNormalization runs Keras's own call again; returns how many were fused."""
    n = 0
    for layer in batchnorm_layers(model):
        if getattr(layer, _STOCK, None) is not None:
            object.__delattr__(layer, "call")
            object.__delattr__(layer, _STOCK)
            n += 1
    return n


def is_fused(layer: Any) -> bool:
    return getattr(layer, _STOCK, None) is not None


def _covered(layer: Any, inputs: Any, training: Any, mask: Any) -> bool:
    """Whether the fused kernel computes exactly what Keras's call would for these arguments."""
    rank = len(inputs.shape)
    return (bool(training) and layer.trainable and mask is None and not layer.renorm and not layer.synchronized
            and rank in (2, 4) and layer.axis in (-1, rank - 1)
            and inputs.dtype.name in ("float32", "bfloat16", "float16"))


def _fused_call(layer: Any, stock: Callable[..., Any]) -> Callable[..., Any]:
    import tensorflow as tf

    def call(inputs: Any, training: Any = None, mask: Any = None) -> Any:
        inputs = tf.convert_to_tensor(inputs)
        if not _covered(layer, inputs, training, mask):
            return stock(inputs, training=training, mask=mask)
        shape = tf.shape(inputs)
        x = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [shape[0], 1, 1, shape[1]])
        channels = inputs.shape[-1]
        # scale/offset/statistics stay float32 (the kernel's U); x keeps its bf16/fp16/fp32 dtype (T)
        gamma = tf.convert_to_tensor(layer.gamma) if layer.scale else tf.ones([channels], tf.float32)
        beta = tf.convert_to_tensor(layer.beta) if layer.center else tf.zeros([channels], tf.float32)
        y, mean, var_bessel, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(gamma, tf.float32), offset=tf.cast(beta, tf.float32),
            mean=tf.zeros([0], tf.float32), variance=tf.zeros([0], tf.float32),
            epsilon=layer.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        n = tf.cast(tf.size(x) // channels, tf.float32)
        variance = var_bessel * ((n - 1.0) / tf.maximum(n, 1.0))  # the biased variance Keras normalises with
        momentum = layer.momentum
        moving_mean = tf.cast(layer.moving_mean, tf.float32)
        moving_variance = tf.cast(layer.moving_variance, tf.float32)
        layer.moving_mean.assign(moving_mean * momentum + mean * (1.0 - momentum))
        layer.moving_variance.assign(moving_variance * momentum + variance * (1.0 - momentum))
        y = y if len(inputs.shape) == 4 else tf.reshape(y, shape)
        return tf.cast(y, layer.compute_dtype)

    return call
