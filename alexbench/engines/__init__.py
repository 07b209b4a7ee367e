"""Training engines. Both implement the same small interface (see :class:`Engine`)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from alexbench.config import TrainConfig
from alexbench.data.stream import Normalization

__all__ = ["Engine", "make_engine", "read_checkpoint"]


class Engine(Protocol):
    """What the shared training loop needs from a framework.

    Images arrive as uint8 NHWC numpy batches from the shared stream; each engine
    normalises and resizes them on the whole batch inside its own framework.
    """

    framework: str
    device: str
    precision: str

    def build(self) -> None: ...
    def params(self) -> tuple[int, int]: ...
    def set_base_trainable(self, trainable: bool) -> None: ...
    def train_step(self, xb: np.ndarray, yb: np.ndarray, lr: float) -> tuple[float, int]:
        """One optimizer step; returns (mean loss, number correct)."""
    def predict(self, batches) -> tuple[np.ndarray, float]:  # noqa: ANN001
        """Eval mode over (x, y) batches; returns (probabilities N×C, mean loss)."""
    def save(self, path: str, meta: dict) -> None: ...
    def load(self, path: str) -> dict: ...
    def load_weights_only(self, path: str, blob=None) -> dict: ...  # noqa: ANN001


def make_engine(cfg: TrainConfig, num_classes: int, norm: Normalization, input_size: int) -> Engine:
    if cfg.framework == "torch":
        from alexbench.engines.torch_engine import TorchEngine

        return TorchEngine(cfg, num_classes, norm, input_size)
    from alexbench.engines.keras_engine import KerasEngine

    return KerasEngine(cfg, num_classes, norm, input_size)


def read_checkpoint(framework: str, path: str):  # noqa: ANN201 - dict (torch) or NpzFile (keras)
    """Read a checkpoint file safely, without building a model, so a bad file is refused before any other work."""
    if framework == "torch":
        from alexbench.engines.torch_engine import read_checkpoint as read
    else:
        from alexbench.engines.keras_engine import read_checkpoint as read
    return read(path)
