"""Data sources and the shared, framework-neutral batch stream."""

from typing import Any

from alexbench.data.dataset import CIFAR10_CLASSES, Dataset

__all__ = ["CIFAR10_CLASSES", "Dataset", "load_dataset"]


def load_dataset(source: str | None = None, **kwargs: Any) -> Dataset:
    """Load a dataset from ``source`` (or auto-detect); see :mod:`alexbench.data.sources`."""
    from alexbench.data.sources import load_dataset as _load

    return _load(source, **kwargs)
