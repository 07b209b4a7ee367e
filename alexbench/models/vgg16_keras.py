"""VGG-16 (configuration D) in keras.applications' layout, Keras side.

The layer names are those of ``keras.applications.VGG16`` (``block1_conv1`` ...
``fc1``, ``fc2``, ``predictions``), so its ImageNet weight files load by name. The
structure is the same as ``vgg16_torch.py``. The ReLUs are separate layers
(keras.applications fuses them into the convolutions), and the classifier has
torchvision's two dropout layers, which keras.applications leaves out. Neither
change affects inference or the weights. ``avgpool`` is torch's
``AdaptiveAvgPool2d(7)``, which is the identity at 224 px.

Initialisation matches torchvision's (kaiming-normal fan_out convolutions, N(0, 0.01)
dense layers, zero biases), not keras.applications' glorot_uniform. fc8
(``predictions``) computes in float32 and returns logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alexbench.frameworks import import_keras
from alexbench.models.keras_layers import AdaptiveAvgPool2D

if TYPE_CHECKING:  # the type checker sees the plain import; at run time import_keras() sets the backend first
    import keras
    from keras import layers
else:
    keras = import_keras()
    layers = keras.layers

# (block, number of 3x3 convolutions, channels); each block ends in a 2x2/2 max pool.
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def _conv(filters: int, name: str) -> layers.Conv2D:
    # kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / fan_out), untruncated.
    return layers.Conv2D(filters, 3, padding="same", name=name,
                         kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
                         bias_initializer="zeros")


def _dense(units: int, name: str, dtype: str | None = None) -> layers.Dense:
    return layers.Dense(units, name=name, dtype=dtype,
                        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01), bias_initializer="zeros")


def vgg16(num_classes: int = 10, dropout: float = 0.5, input_size: int = 224) -> keras.Model:
    """VGG-16 as a Keras Functional model; 224 px is native, any size >= 32 px works."""
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = inputs
    for block, convs, filters in BLOCKS:
        for i in range(1, convs + 1):
            x = _conv(filters, f"block{block}_conv{i}")(x)
            x = layers.ReLU(name=f"block{block}_relu{i}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    x = AdaptiveAvgPool2D(7, name="avgpool")(x)  # (N, 7, 7, 512)
    x = layers.Flatten(name="flatten")(x)       # (N, 25088), (h, w, c) order
    x = _dense(4096, "fc1")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    x = layers.Dropout(dropout, name="fc1_drop")(x)
    x = _dense(4096, "fc2")(x)
    x = layers.ReLU(name="fc2_relu")(x)
    x = layers.Dropout(dropout, name="fc2_drop")(x)
    logits = _dense(num_classes, "predictions", dtype="float32")(x)
    return keras.Model(inputs, logits, name="vgg16")
