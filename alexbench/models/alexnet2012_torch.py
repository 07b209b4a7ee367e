"""AlexNet as in Krizhevsky, Sutskever and Hinton (NIPS 2012), one tower, PyTorch side.

"ImageNet Classification with Deep Convolutional Neural Networks", section 3:
five convolutions 96-256-384-384-256 (11x11/4, 5x5, 3x3, 3x3, 3x3), ReLU after each,
local response normalisation after the ReLUs of conv1 and conv2, overlapping 3x3/2
max pooling after norm1, norm2 and conv5, then fc6 4096 - fc7 4096 - fc8 with
dropout 0.5 on the outputs of fc6 and fc7. Layer names follow the Caffe reference
model (conv1, relu1, norm1, pool1, ..., fc6, relu6, drop6, ...).

Departures from the paper, each on purpose:
- One tower. The paper split conv2, conv4, conv5 and the dense layers across two
  GPUs (grouped convolutions). Here every layer sees all channels of the layer
  below. This is what "single tower" reimplementations do, and it is why the
  model has 62.4M parameters at 1000 classes, not the paper's 60M.
- Input 227x227. The paper says 224, but 11x11/4 without padding only gives the
  paper's 55x55 map from 227.
- LRN constants: the paper uses k=2, n=5, alpha=1e-4, beta=0.75, and applies alpha to
  each squared term. ``torch.nn.LocalResponseNorm`` divides its alpha by the size,
  so the paper's alpha is written here as ``5 * 1e-4``.
- Initialisation is PyTorch's default, not the paper's N(0, 0.01) with unit biases
  in conv2, conv4, conv5 and the dense layers. That init only trains with the
  paper's exact schedule.
- Option ``norm``: ``"lrn"`` (the paper), ``"batch"`` (BatchNorm where the LRN was,
  after the ReLU) or ``"none"``. The form users' notebooks train, with BatchNorm after
  every convolution and fc6 sized for 224 px, is ``alexnet_bn``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from alexbench.frameworks import import_torch

if TYPE_CHECKING:  # the type checker sees the plain import; at run time import_torch() sets threads first
    import torch
    from torch import nn
else:
    torch = import_torch()
    nn = torch.nn

# The paper's LRN in torch's convention (alpha is divided by size inside the layer).
LRN = {"size": 5, "alpha": 5 * 1e-4, "beta": 0.75, "k": 2.0}


def _norm(kind: str, name: str, channels: int) -> list[tuple[str, nn.Module]]:
    """The (name, module) pair at a norm position, or nothing for norm="none"."""
    if kind == "lrn":
        return [(name, nn.LocalResponseNorm(**LRN))]
    if kind == "batch":
        return [(name, nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1))]
    return []


class AlexNet2012(nn.Module):
    """Single-tower AlexNet (2012) for 227x227 RGB input; returns logits."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5, norm: str = "lrn") -> None:
        super().__init__()
        self.norm = norm
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 96, kernel_size=11, stride=4)),   # (N, 96, 55, 55)
            ("relu1", nn.ReLU(inplace=True)),
            *_norm(norm, "norm1", 96),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),         # (N, 96, 27, 27)
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2)),
            ("relu2", nn.ReLU(inplace=True)),
            *_norm(norm, "norm2", 256),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),         # (N, 256, 13, 13)
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1)),
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1)),
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),         # (N, 256, 6, 6)
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(p=dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(p=dropout)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)     # (N, 256, 6, 6)
        x = torch.flatten(x, 1)  # (N, 9216), (c, h, w) order
        return self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace fc8 with a freshly initialised layer for ``num_classes``."""
        self.classifier.fc8 = nn.Linear(self.classifier.fc8.in_features, num_classes)


def alexnet2012(num_classes: int = 10, dropout: float = 0.5, norm: str = "lrn",
                input_size: int = 227) -> AlexNet2012:
    """The 2012 paper's AlexNet, one tower; ``norm`` is "lrn", "batch" or "none".

    ``input_size`` does not change the layers: fc6 needs pool5's 6x6 map, which 227-258 px give.
    """
    return AlexNet2012(num_classes=num_classes, dropout=dropout, norm=norm)
