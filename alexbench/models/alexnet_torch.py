"""AlexNet in torchvision's layout, PyTorch side.

This is the network from Krizhevsky's "One weird trick for parallelizing
convolutional neural networks" (2014, arXiv:1404.5997), which torchvision ships as
``alexnet``. Its convolutions are 64-192-384-256-256, it has no LRN, and an adaptive
average pool gives a 6x6 map before the classifier. The layers are in the same order
as in torchvision, so ``features.<i>`` and ``classifier.<i>`` in torchvision's
ImageNet state_dict map one to one onto the named layers here. The modules are named
(conv1..conv5, fc6..fc8) so that this file and ``alexnet_keras.py`` read line for line.

Departures from torchvision: only the layer names, and ``num_classes`` defaults to 10.
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


class AlexNet(nn.Module):
    """AlexNet for 224x224 RGB input. ``forward`` returns logits, never probabilities."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2)),  # (N, 64, 55, 55)
            ("relu1", nn.ReLU(inplace=True)),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),                 # (N, 64, 27, 27)
            ("conv2", nn.Conv2d(64, 192, kernel_size=5, padding=2)),
            ("relu2", nn.ReLU(inplace=True)),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),                 # (N, 192, 13, 13)
            ("conv3", nn.Conv2d(192, 384, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 256, kernel_size=3, padding=1)),
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(256, 256, kernel_size=3, padding=1)),
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),                 # (N, 256, 6, 6)
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(OrderedDict([
            ("drop6", nn.Dropout(p=dropout)),
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(p=dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU(inplace=True)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)     # (N, 256, 6, 6)
        x = self.avgpool(x)      # (N, 256, 6, 6)
        x = torch.flatten(x, 1)  # (N, 9216), channel-major (NCHW) order
        return self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace fc8 with a freshly initialised layer for ``num_classes``."""
        self.classifier.fc8 = nn.Linear(self.classifier.fc8.in_features, num_classes)


def alexnet(num_classes: int = 10, dropout: float = 0.5, input_size: int = 224) -> AlexNet:
    """torchvision's AlexNet with named layers and PyTorch's default initialisation.

    ``input_size`` does not change the layers: the adaptive pool takes any map (>= 63 px).
    """
    return AlexNet(num_classes=num_classes, dropout=dropout)
