"""Forward FLOPs per image: torch's own counter for torch models, a layer walker for Keras.

Convention: a multiply-add is 2 FLOPs. Convolutions and matrix products (dense layers)
are counted, each as ``2 x (output elements) x (inputs per output)``, where inputs per
output is ``in_channels / groups x kh x kw`` for a convolution and ``in_features`` for a
dense layer. Biases, BatchNorm, ReLU, pooling, LRN and dropout are not counted. They
are well under 1% of the total for every registered model. These figures are
therefore twice torchvision's ``_ops`` and fvcore's "flops", which count
multiply-adds. Example: AlexNet with 1000 classes is 0.714 GMAC in torchvision's
table and 1.43 GFLOPs here.

The two counts are independent: torch's comes from
:class:`torch.utils.flop_counter.FlopCounterMode`, which counts the aten operators a
forward pass dispatches (``convolution``, ``addmm``, ``mm``, ...), and the Keras one
reads the built layers' shapes. That is why equal figures are evidence that the two
definitions agree (they are equal, to the FLOP, for every registered model).
"""

from __future__ import annotations

import math
from typing import Any


def torch_flops(model: Any, input_size: int) -> int:
    """FLOPs for one ``(1, 3, input_size, input_size)`` image through a torch model (eval mode).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` over one forward pass.
    """
    from alexbench.frameworks import import_torch

    torch = import_torch()
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, input_size, input_size, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def keras_flops(model: Any) -> int:
    """FLOPs for one image through a built Keras model, from each layer's static shapes."""
    from alexbench.frameworks import import_keras

    keras = import_keras()
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, c_in_per_group, _ = layer.kernel.shape
            total += 2 * math.prod(layer.output.shape[1:]) * c_in_per_group * kh * kw
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * math.prod(layer.output.shape[1:]) * layer.kernel.shape[0]
    return int(total)


def flops_per_image(name: str, num_classes: int = 10, framework: str = "torch", input_size: int | None = None,
                    **options: Any) -> int:
    """Forward FLOPs for one image of registered model ``name`` (see the module docstring).

    The figure is the same for both frameworks; ``parity`` and the tests check that.
    (The torch model is built on PyTorch's ``meta`` device, shapes without weights, and
    run on one image there: the count is the same as on the CPU, without allocating or
    initialising the weights. FlopCounterMode imports torch._dynamo and triton; the tests
    run it in a process that has TensorFlow loaded.)
    """
    from alexbench.models import get_spec

    size = input_size or get_spec(name).input_size
    return model_flops(counting_model(name, framework, num_classes, input_size=size, **options), framework, size)


def model_flops(model: Any, framework: str, input_size: int) -> int:
    """Forward FLOPs for one image of a built ``model``: torch runs it on one image, Keras walks its layers."""
    return torch_flops(model, input_size) if framework == "torch" else keras_flops(model)


def counting_model(name: str, framework: str, num_classes: int, **kwargs: Any) -> Any:
    """A model to count parameters and FLOPs on: torch's on the ``meta`` device (shapes, no weights)."""
    from alexbench.models import create_model

    if framework != "torch":
        return create_model(name, framework, num_classes, **kwargs)
    from alexbench.frameworks import import_torch

    with import_torch().device("meta"):
        return create_model(name, framework, num_classes, **kwargs)
