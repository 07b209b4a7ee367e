"""AlexNet in torchvision's layout, Keras side.

This is the same network as ``alexnet_torch.py``, layer for layer and name for name.
The Keras model is built with the Functional API and is channels_last, so it takes
NHWC input. It returns logits: there is no softmax, and fc8 computes in float32 even
under a ``mixed_bfloat16`` policy. Every layer starts from PyTorch's default
initialisation (see ``keras_layers``), so a scratch run in either framework starts
from the same distribution.

Two places where Keras needs an extra step:
- torch's ``Conv2d(padding=2)`` with stride 4 has no Keras ``padding=`` equivalent
  ("same" would give 56x56, not 55x55), so conv1 is preceded by an explicit
  ``ZeroPadding2D`` (``pad1``).
- ``Flatten`` on NHWC orders features (h, w, c), while torch orders them (c, h, w).
  The porter (``port.py``) permutes fc6's rows to match; the architecture is the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alexbench.frameworks import import_keras
from alexbench.models.keras_layers import AdaptiveAvgPool2D, torch_conv, torch_dense

if TYPE_CHECKING:  # the type checker sees the plain import; at run time import_keras() sets the backend first
    import keras
    from keras import layers
else:
    keras = import_keras()
    layers = keras.layers


def alexnet(num_classes: int = 10, dropout: float = 0.5, input_size: int = 224) -> keras.Model:
    """torchvision's AlexNet as a Keras Functional model; 224 px is native, any size >= 63 px works."""
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    # features
    x = layers.ZeroPadding2D(2, name="pad1")(inputs)
    x = torch_conv(64, 11, strides=4, padding="valid", in_channels=3, name="conv1")(x)  # (N, 55, 55, 64)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)                                 # (N, 27, 27, 64)
    x = torch_conv(192, 5, in_channels=64, name="conv2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)                                 # (N, 13, 13, 192)
    x = torch_conv(384, 3, in_channels=192, name="conv3")(x)
    x = layers.ReLU(name="relu3")(x)
    x = torch_conv(256, 3, in_channels=384, name="conv4")(x)
    x = layers.ReLU(name="relu4")(x)
    x = torch_conv(256, 3, in_channels=256, name="conv5")(x)
    x = layers.ReLU(name="relu5")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)                                 # (N, 6, 6, 256)
    x = AdaptiveAvgPool2D(6, name="avgpool")(x)                                            # (N, 6, 6, 256)
    x = layers.Flatten(name="flatten")(x)                                                  # (N, 9216), (h, w, c) order
    # classifier
    x = layers.Dropout(dropout, name="drop6")(x)
    x = torch_dense(4096, in_features=256 * 6 * 6, name="fc6")(x)
    x = layers.ReLU(name="relu6")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    x = torch_dense(4096, in_features=4096, name="fc7")(x)
    x = layers.ReLU(name="relu7")(x)
    logits = torch_dense(num_classes, in_features=4096, name="fc8", dtype="float32")(x)
    return keras.Model(inputs, logits, name="alexnet")
