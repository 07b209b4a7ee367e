"""The in-memory dataset every source produces: uint8 NHWC arrays plus class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CIFAR10_CLASSES", "Dataset"]

# CIFAR-10's class names in its label order (batches.meta); the one copy of this list.
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Dataset:
    """A loaded dataset. Images are uint8 NHWC (N, 32, 32, 3); labels int64 in [0, len(classes))."""

    name: str  # e.g. "CIFAR-10", "CIFAR-10 (JPEG copy)", "CIFAR-10 sample (embedded)"
    source: str  # path or URL the data came from
    format: str  # "cifar-binary" | "cifar-python" | "image-folder" | "embedded-sample" | "arrays"
    sha256: str  # content hash of the source (file bytes, or a stable hash of a directory's files)
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    embedded: bool = False  # True for the small sample shipped in the package: outputs must say so
    cache_path: str | None = None
    notes: list[str] = field(default_factory=list)  # warnings worth repeating in outputs

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return (h, w, c)

    def describe(self) -> dict:
        """The ``dataset`` block of metrics.json (sizes of val are added by the split)."""
        return {
            "name": self.name,
            "source": self.source,
            "format": self.format,
            "sha256": self.sha256,
            "embedded_sample": self.embedded,
            "classes": list(self.classes),
            "train": int(len(self.y_train)),
            "test": int(len(self.y_test)),
        }
