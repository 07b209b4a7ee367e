"""AlexNet with BatchNorm after every convolution, as tutorials and users' notebooks write it; Keras side.

This is the same network as ``alexnet_bn_torch.py``, layer for layer and name for
name; the docstring there explains the model and its ``pool_padding`` option. Keras
points: ``padding="same"`` pools are Keras's own (the torch side reproduces them);
BatchNorm comes before the ReLU, with momentum 0.9 (torch's 0.1) and eps 1e-5;
kernels start from PyTorch's default distributions; fc8 computes in float32 and the
model returns logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alexbench.frameworks import import_keras
from alexbench.models.geometry import alexnet_layout, map_side
from alexbench.models.keras_layers import batch_norm, torch_conv, torch_dense

if TYPE_CHECKING:  # the type checker sees the plain import; at run time import_keras() sets the backend first
    import keras
    from keras import layers
else:
    keras = import_keras()
    layers = keras.layers

CHANNELS = (96, 256, 384, 384, 256)


def _conv_bn(x: keras.KerasTensor, i: int, c_in: int, c_out: int, kernel: int, strides: int = 1,
             padding: str = "same") -> keras.KerasTensor:
    x = torch_conv(c_out, kernel, strides=strides, padding=padding, in_channels=c_in, name=f"conv{i}")(x)
    x = batch_norm(f"bn{i}")(x)
    return layers.ReLU(name=f"relu{i}")(x)


def alexnet_bn(num_classes: int = 10, dropout: float = 0.5, pool_padding: str = "valid",
               input_size: int = 224) -> keras.Model:
    """AlexNet with BatchNorm after every convolution, for ``input_size`` px RGB input."""
    c1, c2, c3, c4, c5 = CHANNELS
    m = map_side(alexnet_layout(0, "same" if pool_padding == "same" else 0), input_size)
    if m < 1:
        raise ValueError(f"alexnet_bn: {input_size} px is too small for pool_padding={pool_padding!r}")
    pad = "same" if pool_padding == "same" else "valid"
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    # features
    x = _conv_bn(inputs, 1, 3, c1, 11, strides=4, padding="valid")      # 224 px: (N, 54, 54, 96)
    x = layers.MaxPooling2D(3, strides=2, padding=pad, name="pool1")(x)  # (N, 26, 26, 96)
    x = _conv_bn(x, 2, c1, c2, 5)
    x = layers.MaxPooling2D(3, strides=2, padding=pad, name="pool2")(x)  # (N, 12, 12, 256)
    x = _conv_bn(x, 3, c2, c3, 3)
    x = _conv_bn(x, 4, c3, c4, 3)
    x = _conv_bn(x, 5, c4, c5, 3)
    x = layers.MaxPooling2D(3, strides=2, padding=pad, name="pool5")(x)  # (N, 5, 5, 256)
    x = layers.Flatten(name="flatten")(x)                                 # (N, 256 * m * m), (h, w, c) order
    # classifier
    x = layers.Dropout(dropout, name="drop6")(x)
    x = torch_dense(4096, in_features=c5 * m * m, name="fc6")(x)
    x = layers.ReLU(name="relu6")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    x = torch_dense(4096, in_features=4096, name="fc7")(x)
    x = layers.ReLU(name="relu7")(x)
    logits = torch_dense(num_classes, in_features=4096, name="fc8", dtype="float32")(x)
    return keras.Model(inputs, logits, name="alexnet_bn")
