"""The few Keras pieces that PyTorch has and Keras lacks, written to match PyTorch exactly.

- :class:`LocalResponseNorm`: ``torch.nn.LocalResponseNorm``. Keras has no LRN layer.
  ``tf.nn.local_response_normalization`` uses a different convention: it does not
  divide alpha by the window size, and its window is always symmetric.
- :class:`AdaptiveAvgPool2D`: ``torch.nn.AdaptiveAvgPool2d``, with the same
  start/end index formula.
- :func:`torch_conv` / :func:`torch_dense`: Conv2D and Dense layers that start from
  PyTorch's default initialisation, so both frameworks draw from one distribution.
  PyTorch's ``reset_parameters`` uses ``kaiming_uniform_(a=sqrt(5))`` for the kernel.
  That is uniform(+-sqrt(1/fan_in)), which is ``VarianceScaling(1/3, "fan_in",
  "uniform")``: its limit is ``sqrt(3 * scale / fan_in)``. The bias is
  uniform(+-1/sqrt(fan_in)).

Both layers are registered as Keras serializables, so ``.keras`` files that contain
them load with ``safe_mode=True``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from alexbench.frameworks import import_keras

if TYPE_CHECKING:  # the type checker sees the plain import; at run time import_keras() sets the backend first
    import keras
    from keras import layers, ops
else:
    keras = import_keras()
    layers = keras.layers
    ops = keras.ops


@keras.saving.register_keras_serializable(package="alexbench")
class LocalResponseNorm(layers.Layer):
    """``torch.nn.LocalResponseNorm(size, alpha, beta, k)`` over the channel axis (NHWC).

    ``b_c = a_c / (k + alpha / size * sum_{c' in window(c)} a_{c'}^2) ** beta``

    The window covers ``size // 2`` channels below c and ``(size - 1) // 2`` above it,
    and is zero-padded at the edges. This is what torch's padded ``avg_pool3d`` does,
    and it also holds for even sizes. The sum is done in float32 even under a
    bfloat16 policy, because squares of activations lose too much in bf16.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(size) < 1:
            raise ValueError(f"LocalResponseNorm: size must be >= 1. Received: size={size}")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)

    def call(self, x: Any) -> Any:
        dtype = x.dtype
        x32 = ops.cast(x, "float32")
        channels = x.shape[-1]
        sq = ops.pad(ops.square(x32), [[0, 0], [0, 0], [0, 0], [self.size // 2, (self.size - 1) // 2]])
        window_sum = sq[..., 0:channels]
        for i in range(1, self.size):  # size shifted slices: exact, and cheap for size 5
            window_sum = window_sum + sq[..., i:i + channels]
        div = ops.power(self.k + (self.alpha / self.size) * window_sum, self.beta)
        return ops.cast(x32 / div, dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}


def adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) averaging matrix for torch's adaptive pooling along one axis.

    Output i averages inputs ``[floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))``,
    as in ATen's ``start_index`` / ``end_index``.
    """
    m = np.zeros((n_out, n_in), dtype=np.float32)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)  # ceil division
        m[i, start:end] = 1.0 / (end - start)
    return m


@keras.saving.register_keras_serializable(package="alexbench")
class AdaptiveAvgPool2D(layers.Layer):
    """``torch.nn.AdaptiveAvgPool2d(output_size)`` for NHWC inputs with static H and W.

    If the map is already ``output_size`` (AlexNet at 224 px gives 6x6), this is the
    identity, as in torch. Otherwise it multiplies by the two averaging matrices
    from :func:`adaptive_pool_matrix`. That covers windows that overlap or have
    different sizes, which a fixed-stride pooling layer cannot express.
    """

    def __init__(self, output_size: int | tuple[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = (int(output_size[0]), int(output_size[1]))

    def call(self, x: Any) -> Any:
        h, w = x.shape[1], x.shape[2]
        oh, ow = self.output_size
        if (h, w) == (oh, ow):
            return x
        if h is None or w is None:
            raise ValueError(f"{self.name}: needs a static height and width. Received: shape={x.shape}")
        ph = ops.convert_to_tensor(adaptive_pool_matrix(h, oh), dtype=x.dtype)
        pw = ops.convert_to_tensor(adaptive_pool_matrix(w, ow), dtype=x.dtype)
        x = ops.einsum("oh,nhwc->nowc", ph, x)  # pool rows
        return ops.einsum("pw,nowc->nopc", pw, x)  # pool columns

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_size": list(self.output_size)}


def torch_kernel_init() -> keras.initializers.Initializer:
    """PyTorch's default Conv2d/Linear weight init, ``kaiming_uniform_(a=sqrt(5))``."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def torch_bias_init(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default bias init, uniform(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def torch_conv(filters: int, kernel_size: int, *, in_channels: int, name: str, strides: int = 1,
               padding: str = "same", use_bias: bool = True) -> layers.Conv2D:
    """A ``Conv2D`` initialised like ``torch.nn.Conv2d(in_channels, filters, kernel_size)``."""
    return layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias, name=name,
        kernel_initializer=torch_kernel_init(),
        bias_initializer=torch_bias_init(in_channels * kernel_size * kernel_size),
    )


def torch_dense(units: int, *, in_features: int, name: str, dtype: str | None = None) -> layers.Dense:
    """A ``Dense`` initialised like ``torch.nn.Linear(in_features, units)``."""
    return layers.Dense(
        units, name=name, dtype=dtype,
        kernel_initializer=torch_kernel_init(), bias_initializer=torch_bias_init(in_features),
    )


def batch_norm(name: str) -> layers.BatchNormalization:
    """BatchNorm with torch's defaults: torch momentum 0.1 is Keras momentum 0.9, and eps is 1e-5 on both sides."""
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)
