"""Training engines. Both implement the same small interface (see :class:`Engine`)."""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import numpy as np

from alexbench.config import TrainConfig
from alexbench.data.stream import Normalization

__all__ = ["Engine", "make_engine", "read_checkpoint"]


class Engine(Protocol):
    """What the shared training loop needs from a framework.

    Images arrive as uint8 NHWC numpy batches from the shared stream; each engine
    normalises and resizes them on the whole batch inside its own framework.
    """

    cfg: TrainConfig
    framework: str  # "torch" | "keras"
    device: str  # as the framework names it: "cpu", "cuda:0", "/GPU:0", ...
    precision: str  # "fp32" | "bf16" | "fp16": what was actually chosen, never "auto"
    num_classes: int
    norm: Normalization  # applied in-graph to every batch
    input_size: int  # batches are resized to this side in-graph when the images differ
    model: Any  # the framework's model (torch nn.Module, keras.Model) once built

    def build(self) -> None:
        """Create the model (fresh, pretrained or from weights) and the optimizer state."""
    def params(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, as :func:`alexbench.models.count_params` defines them."""
    def set_base_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze everything but the classifier head (fine-tuning phases)."""
    def train_mode(self) -> None:
        """Put the model in training mode before an epoch (frozen BatchNorm stays in inference)."""
    def train_step(self, xb: np.ndarray, yb: np.ndarray, lr: float) -> tuple[float, int]:
        """One optimizer step at learning rate ``lr``; returns (mean loss, number correct).

        With fp16, a step whose gradients are not finite changes nothing (no weight,
        optimizer-state or step-counter update), as torch's GradScaler skips it."""
    def predict(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, float]:
        """Inference mode over (x, y) batches; returns (probabilities N×C, mean loss)."""
    def save(self, path: str, meta: dict) -> None:
        """Write weights, optimizer state and ``meta`` to ``path`` (the caller makes it atomic)."""
    def load(self, path: str) -> dict:
        """Restore weights and optimizer state from ``path``; returns its ``meta``."""
    def load_weights_only(self, path: str, blob: Any = None) -> dict:
        """Restore the weights only; ``blob`` is what :func:`read_checkpoint` already read from ``path``."""


def make_engine(cfg: TrainConfig, num_classes: int, norm: Normalization, input_size: int) -> Engine:
    if cfg.framework == "torch":
        from alexbench.engines.torch_engine import TorchEngine

        return TorchEngine(cfg, num_classes, norm, input_size)
    from alexbench.engines.keras_engine import KerasEngine

    return KerasEngine(cfg, num_classes, norm, input_size)


def read_checkpoint(framework: str, path: str):  # noqa: ANN201 - dict (torch) or NpzFile (keras)
    """Read a checkpoint file safely, without building a model, so a bad file is refused before any other work."""
    if framework == "torch":
        from alexbench.engines import torch_engine

        return torch_engine.read_checkpoint(path)
    from alexbench.engines import keras_engine

    return keras_engine.read_checkpoint(path)
