"""AlexNet adapted to 32x32 CIFAR images without upscaling, Keras side.

This is the same network as ``alexnet_cifar_torch.py``, layer for layer and name for
name. The reasons for each choice are in that file's docstring. Keras-specific
points:
- Kernels and biases start from PyTorch's default distributions
  (``keras_layers.torch_conv`` / ``torch_dense``), not Keras's glorot_uniform/zeros.
  So an accuracy gap between the frameworks cannot come from the initialisation.
- BatchNorm uses momentum 0.9 (torch's 0.1 counted from the other side) and eps 1e-5.
- 3x3 stride-1 "same" padding equals torch's padding=1, and 2x2/2 "valid" pooling
  equals torch's MaxPool2d(2, 2).
- fc8 computes in float32 under mixed precision, and the output is logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alexbench.frameworks import import_keras
from alexbench.models.keras_layers import batch_norm, torch_conv, torch_dense
from alexbench.models.options import ALEXNET_CIFAR_CHANNELS, ALEXNET_CIFAR_HIDDEN

if TYPE_CHECKING:  # the type checker sees the plain import; at run time import_keras() sets the backend first
    import keras
    from keras import layers
else:
    keras = import_keras()
    layers = keras.layers

CHANNELS = ALEXNET_CIFAR_CHANNELS  # the one definition (the width option scales it)
HIDDEN = ALEXNET_CIFAR_HIDDEN


def _conv_bn(x: keras.KerasTensor, i: int, c_in: int, c_out: int, norm: str = "batch") -> keras.KerasTensor:
    x = torch_conv(c_out, 3, in_channels=c_in, use_bias=norm != "batch", name=f"conv{i}")(x)
    if norm == "batch":
        x = batch_norm(f"bn{i}")(x)
    return layers.ReLU(name=f"relu{i}")(x)


def alexnet_cifar(num_classes: int = 10, dropout: float = 0.25,
                  channels: tuple[int, int, int, int, int] = CHANNELS, hidden: int = HIDDEN,
                  input_size: int = 32, norm: str = "batch") -> keras.Model:
    """AlexNet for CIFAR's 32x32x3 images as a Keras Functional model (32-39 px end in pool5's 4x4 map);
    ``norm="none"``: no BatchNorm, convolutions with biases."""
    c1, c2, c3, c4, c5 = channels
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    # features
    x = _conv_bn(inputs, 1, 3, c1, norm)
    x = layers.MaxPooling2D(2, strides=2, name="pool1")(x)  # (N, 16, 16, c1)
    x = _conv_bn(x, 2, c1, c2, norm)
    x = layers.MaxPooling2D(2, strides=2, name="pool2")(x)  # (N, 8, 8, c2)
    x = _conv_bn(x, 3, c2, c3, norm)
    x = _conv_bn(x, 4, c3, c4, norm)
    x = _conv_bn(x, 5, c4, c5, norm)
    x = layers.MaxPooling2D(2, strides=2, name="pool5")(x)  # (N, 4, 4, c5)
    x = layers.Flatten(name="flatten")(x)                   # (N, 16 * c5), (h, w, c) order
    # classifier
    x = layers.Dropout(dropout, name="drop6")(x)
    x = torch_dense(hidden, in_features=c5 * 4 * 4, name="fc6")(x)
    x = layers.ReLU(name="relu6")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    x = torch_dense(hidden, in_features=hidden, name="fc7")(x)
    x = layers.ReLU(name="relu7")(x)
    logits = torch_dense(num_classes, in_features=hidden, name="fc8", dtype="float32")(x)
    return keras.Model(inputs, logits, name="alexnet_cifar")
