"""VGG-16 (configuration D) in torchvision's layout, PyTorch side.

Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition" (ICLR 2015). This is the model users already fine-tune from
``torchvision.models.vgg16`` and ``keras.applications.VGG16``, included so
alexbench can compare AlexNet with it. The modules are in torchvision's order, so
its ImageNet state_dict (``features.<i>``, ``classifier.<i>``) maps one to one. The
names are keras.applications' names (``block1_conv1`` ... ``block5_pool``, ``fc1``,
``fc2``, ``predictions``), so the porter and a reader can match the two files.

Initialisation is torchvision's: kaiming-normal (fan_out) convolutions, N(0, 0.01)
dense layers, zero biases. The Keras file uses the same distributions.
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

# (block, number of 3x3 convolutions, channels); each block ends in a 2x2/2 max pool.
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def _init(m: nn.Module) -> None:
    """torchvision's VGG initialisation for one module."""
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0, 0.01)
        nn.init.zeros_(m.bias)


class VGG16(nn.Module):
    """VGG-16 for 224x224 RGB input; returns logits."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        features: list[tuple[str, nn.Module]] = []
        c_in = 3
        for block, convs, c_out in BLOCKS:
            for i in range(1, convs + 1):
                features.append((f"block{block}_conv{i}", nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)))
                features.append((f"block{block}_relu{i}", nn.ReLU(inplace=True)))
                c_in = c_out
            features.append((f"block{block}_pool", nn.MaxPool2d(kernel_size=2, stride=2)))
        self.features = nn.Sequential(OrderedDict(features))  # (N, 512, 7, 7)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(512 * 7 * 7, 4096)),
            ("fc1_relu", nn.ReLU(inplace=True)),
            ("fc1_drop", nn.Dropout(p=dropout)),
            ("fc2", nn.Linear(4096, 4096)),
            ("fc2_relu", nn.ReLU(inplace=True)),
            ("fc2_drop", nn.Dropout(p=dropout)),
            ("predictions", nn.Linear(4096, num_classes)),
        ]))
        self.apply(_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)     # (N, 512, 7, 7)
        x = self.avgpool(x)      # (N, 512, 7, 7)
        x = torch.flatten(x, 1)  # (N, 25088), (c, h, w) order
        return self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``predictions`` with a freshly initialised layer for ``num_classes``."""
        head = nn.Linear(self.classifier.predictions.in_features, num_classes)
        _init(head)
        self.classifier.predictions = head


def vgg16(num_classes: int = 10, dropout: float = 0.5, input_size: int = 224) -> VGG16:
    """torchvision's VGG-16 with keras.applications' layer names.

    ``input_size`` does not change the layers: the adaptive pool takes any map (>= 32 px).
    """
    return VGG16(num_classes=num_classes, dropout=dropout)
