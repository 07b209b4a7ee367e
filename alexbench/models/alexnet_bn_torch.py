"""AlexNet with BatchNorm after every convolution, as tutorials and users' notebooks write it; PyTorch side.

Krizhevsky et al. (NIPS 2012)'s layer sizes, one tower: five convolutions
96-256-384-384-256 (11x11/4 without padding, 5x5, 3x3, 3x3, 3x3), overlapping 3x3/2
max pools after conv1, conv2 and conv5, then fc6 4096 - fc7 4096 - fc8. This is the
form that circulates in tutorials and that the challenge notebooks trained, which
differs from the paper (``alexnet2012``) in three ways that change results:

- BatchNorm after every convolution (before the ReLU), where the paper had LRN
  after conv1 and conv2 only. It is what lets this network train from scratch at
  all with the notebooks' plain SGD.
- fc6 is sized from the input instead of fixing the input: the notebooks resized
  CIFAR-10 to 224 px, which after the unpadded 11x11/4 conv1 ends in a 5x5 map
  (fc6 takes 6400 features; the paper's 227 px gives 6x6 = 9216). At 224 px this
  model has the PyTorch notebook's 46,790,730 parameters.
- ``pool_padding="same"`` pads the pools the way Keras's ``padding="same"`` does
  (``ceil(n / 2)`` outputs, the extra pixel at the bottom/right). A Keras notebook
  fed 32 px CIFAR images to this network with such pools: conv1 turns 32 px into
  6 px, the pools into 3, 2 and 1, and fc6 sees a single pixel of 256 channels.
  It builds and trains, and it is the "32 px collapse" users learn from. With
  valid pools (the default) it needs at least 67 px; at 32 px with same pools it
  has that notebook's 21,624,906 trainable parameters.

Dropout 0.5 is on the inputs of fc6 and fc7 (torchvision's placement, and the
PyTorch notebook's). Initialisation is PyTorch's default; BatchNorm uses momentum 0.1
(Keras 0.9) and eps 1e-5.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from alexbench.frameworks import import_torch
from alexbench.models.geometry import alexnet_layout, map_side

if TYPE_CHECKING:  # the type checker sees the plain import; at run time import_torch() sets threads first
    import torch
    from torch import nn
else:
    torch = import_torch()
    nn = torch.nn
F = nn.functional

CHANNELS = (96, 256, 384, 384, 256)


class MaxPool2dSame(nn.Module):
    """Max pooling with TensorFlow's ``padding="same"``: ``ceil(n / stride)`` outputs.

    The total padding ``max((out - 1) * stride + kernel - n, 0)`` is split with the
    smaller half at the top/left, and padded values never win the max.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def _pads(self, n: int) -> tuple[int, int]:
        out = -(-n // self.stride)
        total = max((out - 1) * self.stride + self.kernel_size - n, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


def _pool(pool_padding: str) -> nn.Module:
    return MaxPool2dSame(3, 2) if pool_padding == "same" else nn.MaxPool2d(kernel_size=3, stride=2)


def _conv_bn(i: int, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> list[tuple[str, nn.Module]]:
    return [
        (f"conv{i}", nn.Conv2d(c_in, c_out, kernel_size=kernel, stride=stride, padding=padding)),
        (f"bn{i}", nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.1)),
        (f"relu{i}", nn.ReLU(inplace=True)),
    ]


class AlexNetBN(nn.Module):
    """AlexNet with BatchNorm after every convolution; fc6 sized for ``input_size``; returns logits."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5, pool_padding: str = "valid",
                 input_size: int = 224) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = CHANNELS
        m = map_side(alexnet_layout(0, "same" if pool_padding == "same" else 0), input_size)
        if m < 1:
            raise ValueError(f"alexnet_bn: {input_size} px is too small for pool_padding={pool_padding!r}")
        self.features = nn.Sequential(OrderedDict([
            *_conv_bn(1, 3, c1, 11, 4, 0),       # 224 px: (N, 96, 54, 54)
            ("pool1", _pool(pool_padding)),        # (N, 96, 26, 26)
            *_conv_bn(2, c1, c2, 5, 1, 2),
            ("pool2", _pool(pool_padding)),        # (N, 256, 12, 12)
            *_conv_bn(3, c2, c3, 3, 1, 1),
            *_conv_bn(4, c3, c4, 3, 1, 1),
            *_conv_bn(5, c4, c5, 3, 1, 1),
            ("pool5", _pool(pool_padding)),        # (N, 256, 5, 5)
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("drop6", nn.Dropout(p=dropout)),
            ("fc6", nn.Linear(c5 * m * m, 4096)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(p=dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU(inplace=True)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)     # (N, 256, m, m)
        x = torch.flatten(x, 1)  # (N, 256 * m * m), (c, h, w) order
        return self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace fc8 with a freshly initialised layer for ``num_classes``."""
        self.classifier.fc8 = nn.Linear(self.classifier.fc8.in_features, num_classes)


def alexnet_bn(num_classes: int = 10, dropout: float = 0.5, pool_padding: str = "valid",
               input_size: int = 224) -> AlexNetBN:
    """AlexNet with BatchNorm after every convolution (see the module docstring)."""
    return AlexNetBN(num_classes=num_classes, dropout=dropout, pool_padding=pool_padding, input_size=input_size)
