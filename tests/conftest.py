"""Shared test helpers: tiny synthetic datasets and tiny configs (fast, offline)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ALEXBENCH_QUIET", "1")

from alexbench.data.dataset import CIFAR10_CLASSES as CLASSES  # noqa: E402 - after the environment above


def synthetic_dataset(n_train_per_class: int = 12, n_test_per_class: int = 4, seed: int = 0, classes=None):
    """A learnable toy dataset: each class has its own colour and stripe pattern plus noise."""
    from alexbench.data import Dataset

    classes = list(classes or CLASSES)
    rng = np.random.default_rng(seed)
    k = len(classes)

    def make(n_per: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(k), n_per)
        base = np.zeros((len(y), 32, 32, 3), np.float32)
        for c in range(k):
            colour = np.array([(c * 37) % 255, (c * 91) % 255, (c * 151) % 255], np.float32)
            stripes = (np.arange(32) % (c + 2) == 0).astype(np.float32)[None, :, None] * 80
            base[y == c] = colour * 0.6 + stripes
        x = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        return x, y.astype(np.int64)

    xtr, ytr = make(n_train_per_class)
    xte, yte = make(n_test_per_class)
    return Dataset(name="synthetic", source="<synthetic>", format="arrays", sha256="0" * 64, classes=classes,
                   x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def tiny_config(framework: str = "torch", **over):
    """alexnet_cifar at 1/8 width, fp32, deterministic: seconds per epoch on 2 cores."""
    from alexbench.config import validate

    data = {
        "model": "alexnet_cifar", "framework": framework, "model_options": {"width": 0.125},
        "epochs": 2, "batch_size": 16, "eval_batch_size": 64, "seed": 0, "deterministic": True,
        "val_fraction": 0.2, "precision": "fp32", "threads": 1,
        "optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
        "schedule": {"name": "onecycle"},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return validate(data)


@pytest.fixture(autouse=True)
def _alexbench_logging():
    """Send the alexbench logger to stderr as the CLI does, so capsys sees warnings in library calls."""
    from alexbench.log import configure

    configure()


@pytest.fixture
def tiny_ds():
    return synthetic_dataset()


def write_image_folder(root, classes=("cat", "dog"), per_class: int = 6, size: int = 32, seed: int = 0):
    """A tiny ``train/<class>/*.png`` + ``test/<class>/*.png`` folder (an `--data` source for CLI tests)."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    ds = synthetic_dataset(per_class, max(2, per_class // 2), seed=seed, classes=list(classes))
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        for i, (img, label) in enumerate(zip(x, y)):
            d = root / split / classes[label]
            d.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(img)
            if size != 32:
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            im.save(d / f"{i:03d}.png")
    return root
