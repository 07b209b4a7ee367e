"""Which input sizes an architecture can take, worked out from its layers (no framework imported).

Every convolution and pooling window changes the side of the feature map by the
usual formula, ``floor((n + 2 * padding - kernel) / stride) + 1``, or, for
TensorFlow's ``"same"`` padding, ``ceil(n / stride)``. A window that would see a map
smaller than itself (an output of less than one pixel) cannot run. After the last
window, the classifier either takes any map (an adaptive average pool in front of
it, or a first dense layer sized from the input) or needs exactly the map it was
built for: ``alexnet2012``'s fc6 takes 256 x 6 x 6 features, so only inputs that end
in a 6 x 6 map work.

Each registered model describes its windows in the registry (``ModelSpec.geometry``);
the tests check these descriptions against the real PyTorch and Keras models.
Config validation uses :func:`check_input_size`, so a size a model cannot take is
refused when a config or a preset is loaded, before anything is built or trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

SIZE_RANGE = (8, 1024)  # the input sizes the config allows (TrainConfig.input_size)


@dataclass(frozen=True)
class Window:
    """One layer that can change the map's side: a convolution or a pooling window."""

    name: str
    kernel: int
    stride: int = 1
    padding: Union[int, str] = 0  # pixels on each side, or "same" (TensorFlow's: out = ceil(n / stride))

    def out(self, n: int) -> int:
        """The side of this layer's output for an ``n``-pixel input; 0 if the layer cannot run."""
        if self.padding == "same":
            return -(-n // self.stride) if n >= 1 else 0
        span = n + 2 * int(self.padding) - self.kernel
        return span // self.stride + 1 if span >= 0 and n >= 1 else 0


@dataclass(frozen=True)
class Geometry:
    """The size-changing layers of a model, in order, and what its classifier needs.

    ``classifier_map`` is the side of the map the classifier is built for, or None
    when the classifier takes any map (adaptive pooling, or a classifier sized from
    the input size).
    """

    windows: tuple[Window, ...]
    classifier_map: int | None = None
    last: str = ""  # the layer whose output the classifier reads (for messages)

    def trace(self, size: int) -> tuple[int, str | None]:
        """(side of the final map, None), or (0, what stops the first layer that cannot run)."""
        n = size
        for w in self.windows:
            out = w.out(n)
            if out < 1:
                return 0, f"{w.name} gets a {n}x{n} map, smaller than its {w.kernel}x{w.kernel} window"
            n = out
        return n, None

    def accepts(self, size: int) -> bool:
        n, _ = self.trace(size)
        return n >= 1 and (self.classifier_map is None or n == self.classifier_map)

    def accepted_sizes(self, lo: int = SIZE_RANGE[0], hi: int = SIZE_RANGE[1]) -> list[int]:
        return [s for s in range(lo, hi + 1) if self.accepts(s)]

    def why_not(self, size: int) -> str:
        """Why ``size`` does not fit (empty if it does)."""
        n, failing = self.trace(size)
        if failing is not None:
            return failing
        if self.classifier_map is not None and n != self.classifier_map:
            m = self.classifier_map
            return f"its classifier is built for a {m}x{m} map after {self.last}, and {size} px gives {n}x{n}"
        return ""


def describe_sizes(sizes: list[int], hi: int = SIZE_RANGE[1]) -> str:
    """``[227, ..., 258]`` -> ``"227-258 px"``; a run up to the config's maximum -> ``"63 px or more"``."""
    if not sizes:
        return "none"
    runs: list[list[int]] = []
    for s in sizes:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    parts = []
    for a, b in runs:
        parts.append(f"{a} px or more" if b == hi and a != b else (f"{a} px" if a == b else f"{a}-{b} px"))
    return ", ".join(parts)


def alexnet_layout(conv1_padding: int, pool_padding: Union[int, str] = 0) -> tuple[Window, ...]:
    """AlexNet's five convolutions (11x11/4, 5x5, 3x3, 3x3, 3x3) and three 3x3/2 pools."""
    return (
        Window("conv1", 11, 4, conv1_padding), Window("pool1", 3, 2, pool_padding),
        Window("conv2", 5, 1, 2), Window("pool2", 3, 2, pool_padding),
        Window("conv3", 3, 1, 1), Window("conv4", 3, 1, 1), Window("conv5", 3, 1, 1),
        Window("pool5", 3, 2, pool_padding),
    )


def map_side(windows: tuple[Window, ...], size: int) -> int:
    """Side of the map after ``windows`` for a ``size``-pixel input (0 if some window cannot run)."""
    return Geometry(windows).trace(size)[0]


def cifar_layout() -> tuple[Window, ...]:
    """alexnet_cifar: 3x3 stride-1 convolutions, 2x2/2 pools after conv1, conv2 and conv5."""
    conv = [Window(f"conv{i}", 3, 1, 1) for i in range(1, 6)]
    return (conv[0], Window("pool1", 2, 2), conv[1], Window("pool2", 2, 2), *conv[2:], Window("pool5", 2, 2))


def vgg16_layout() -> tuple[Window, ...]:
    """VGG-16: 3x3 stride-1 convolutions, a 2x2/2 pool at the end of each of five blocks."""
    out: list[Window] = []
    for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
        out += [Window(f"block{block}_conv{i}", 3, 1, 1) for i in range(1, convs + 1)]
        out.append(Window(f"block{block}_pool", 2, 2))
    return tuple(out)
