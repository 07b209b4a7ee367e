"""AlexNet as in Krizhevsky, Sutskever and Hinton (NIPS 2012), one tower, Keras side.

This is the same network as ``alexnet2012_torch.py``, layer for layer and name for
name. The docstring there lists every departure from the paper. The LRN layer is
``keras_layers.LocalResponseNorm``, which uses torch's convention (alpha is divided
by size), so the constants below are the torch file's constants. BatchNorm uses
Keras momentum 0.9 = 1 - torch's 0.1, and eps 1e-5 on both sides. fc8 computes in
float32 and the model returns logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alexbench.frameworks import import_keras
from alexbench.models.keras_layers import LocalResponseNorm, batch_norm, torch_conv, torch_dense

if TYPE_CHECKING:  # the type checker sees the plain import; at run time import_keras() sets the backend first
    import keras
    from keras import layers
else:
    keras = import_keras()
    layers = keras.layers

# The paper's LRN in torch's convention (alpha is divided by size inside the layer).
LRN: dict[str, Any] = {"size": 5, "alpha": 5 * 1e-4, "beta": 0.75, "k": 2.0}


def _norm(kind: str, name: str) -> layers.Layer | None:
    if kind == "lrn":
        return LocalResponseNorm(**LRN, name=name)
    if kind == "batch":
        return batch_norm(name)
    return None


def alexnet2012(num_classes: int = 10, dropout: float = 0.5, norm: str = "lrn",
                input_size: int = 227) -> keras.Model:
    """The 2012 paper's AlexNet, one tower, for 227x227x3 input (227-258 px end in pool5's 6x6 map);
    ``norm`` is "lrn", "batch" or "none"."""
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    # features
    x = torch_conv(96, 11, strides=4, padding="valid", in_channels=3, name="conv1")(inputs)  # (N, 55, 55, 96)
    x = layers.ReLU(name="relu1")(x)
    if (norm1 := _norm(norm, "norm1")) is not None:
        x = norm1(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)                                     # (N, 27, 27, 96)
    x = torch_conv(256, 5, in_channels=96, name="conv2")(x)
    x = layers.ReLU(name="relu2")(x)
    if (norm2 := _norm(norm, "norm2")) is not None:
        x = norm2(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)                                     # (N, 13, 13, 256)
    x = torch_conv(384, 3, in_channels=256, name="conv3")(x)
    x = layers.ReLU(name="relu3")(x)
    x = torch_conv(384, 3, in_channels=384, name="conv4")(x)
    x = layers.ReLU(name="relu4")(x)
    x = torch_conv(256, 3, in_channels=384, name="conv5")(x)
    x = layers.ReLU(name="relu5")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)                                     # (N, 6, 6, 256)
    x = layers.Flatten(name="flatten")(x)                                                      # (N, 9216), HWC order
    # classifier
    x = torch_dense(4096, in_features=256 * 6 * 6, name="fc6")(x)
    x = layers.ReLU(name="relu6")(x)
    x = layers.Dropout(dropout, name="drop6")(x)
    x = torch_dense(4096, in_features=4096, name="fc7")(x)
    x = layers.ReLU(name="relu7")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    logits = torch_dense(num_classes, in_features=4096, name="fc8", dtype="float32")(x)
    return keras.Model(inputs, logits, name="alexnet2012")
