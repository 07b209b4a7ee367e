"""The one toy data set of the tests, and the tiny config that trains on it in seconds.

Ten learnable classes of 32×32 images (a colour per class, stripes with a period per
class, noise), as arrays, as an in-memory :class:`~alexbench.data.Dataset`, or written
as an official CIFAR-10 binary folder so a test reads it through the ordinary data
path (detection, hashing, decoding, the decoded-array cache).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alexbench.data import CIFAR10_CLASSES as CLASSES
from alexbench.data import Dataset

__all__ = ["CLASSES", "toy_arrays", "synthetic_dataset", "write_binary_source", "tiny_config_dict", "tiny_config"]


def toy_arrays(n_train_per_class: int = 12, n_test_per_class: int = 4, seed: int = 0,
               k: int = len(CLASSES)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): uint8 NHWC images, int64 labels sorted by class."""
    rng = np.random.default_rng(seed)

    def make(n_per: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(k), n_per)
        base = np.zeros((len(y), 32, 32, 3), np.float32)
        for c in range(k):
            colour = np.array([(c * 37) % 255, (c * 91) % 255, (c * 151) % 255], np.float32)
            stripes = (np.arange(32) % (c + 2) == 0).astype(np.float32)[None, :, None] * 80
            base[y == c] = colour * 0.6 + stripes
        x = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        return x, y.astype(np.int64)

    x_train, y_train = make(n_train_per_class)
    x_test, y_test = make(n_test_per_class)
    return x_train, y_train, x_test, y_test


def synthetic_dataset(n_train_per_class: int = 12, n_test_per_class: int = 4, seed: int = 0,
                      classes: list[str] | None = None) -> Dataset:
    """The toy set as an in-memory Dataset (source ``<synthetic>``)."""
    classes = list(classes or CLASSES)
    xtr, ytr, xte, yte = toy_arrays(n_train_per_class, n_test_per_class, seed, len(classes))
    return Dataset(name="synthetic", source="<synthetic>", format="arrays", sha256="0" * 64, classes=classes,
                   x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def write_binary_source(parent: Path) -> Path:
    """The toy set as an official CIFAR-10 binary folder (1 label byte, then R, G, B planes)."""
    x_train, y_train, x_test, y_test = toy_arrays()
    d = Path(parent) / "cifar-10-batches-bin"
    d.mkdir(parents=True, exist_ok=True)

    def records(x: np.ndarray, y: np.ndarray) -> bytes:
        chw = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
        return np.concatenate([y.astype(np.uint8)[:, None], chw], axis=1).tobytes()

    order = np.random.default_rng(1).permutation(len(y_train))  # batches mix the classes, as the real ones do
    for i, part in enumerate(np.array_split(order, 5)):
        (d / f"data_batch_{i + 1}.bin").write_bytes(records(x_train[part], y_train[part]))
    (d / "test_batch.bin").write_bytes(records(x_test, y_test))
    (d / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n\n")
    return d


def tiny_config_dict(framework: str = "torch", **over: object) -> dict:
    """alexnet_cifar at 1/8 width, fp32, deterministic, one thread: seconds per epoch on 2 cores.

    ``over`` replaces keys; a dict value is merged into a dict key (``optimizer={"lr": 0.05}``)."""
    data: dict = {
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
    return data


def tiny_config(framework: str = "torch", **over: object):  # a TrainConfig
    """:func:`tiny_config_dict`, validated."""
    from alexbench.config import validate

    return validate(tiny_config_dict(framework, **over))


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
