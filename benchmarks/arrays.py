"""The benchmark's image arrays on disk: written once by the parent, read by every worker.

A folder holds ``x_train.npy``, ``y_train.npy``, ``x_test.npy`` and ``y_test.npy``
(uint8 NHWC images, int64 labels). Workers map them read-only, so several workers
share one copy in the page cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["NAMES", "save_arrays", "load_arrays"]

NAMES = ("x_train", "y_train", "x_test", "y_test")


def save_arrays(data_dir: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the four arrays (images as contiguous uint8, labels as int64) into ``data_dir``."""
    for name in NAMES:
        a = np.asarray(arrays[name], np.int64) if name.startswith("y_") else np.ascontiguousarray(arrays[name])
        np.save(Path(data_dir) / f"{name}.npy", a)


def load_arrays(data_dir: str | Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """The four arrays of ``data_dir``, memory-mapped read-only unless ``mmap`` is false."""
    mode: Literal["r"] | None = "r" if mmap else None
    return {name: np.load(Path(data_dir) / f"{name}.npy", mmap_mode=mode) for name in NAMES}
