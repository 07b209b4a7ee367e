"""The shared batch stream: one split, one order, one augmentation, for both engines.

Everything random here is computed with NumPy from ``(seed, epoch)`` alone, so the
PyTorch and Keras engines receive byte-identical uint8 batches in identical order.
Nothing framework-specific happens here: normalisation and resizing run on whole
batches inside each engine (see :func:`normalization`).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from alexbench.data.dataset import Dataset
from alexbench.errors import UserError

__all__ = ["Splits", "split_train_val", "balanced_subset", "take_balanced", "BatchStream", "EpochPlan", "Normalization",
           "normalization", "NORM_PRESETS", "prefetch"]

NORM_PRESETS = ("dataset", "imagenet", "caffe")

_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# keras.applications "caffe" mode: RGB->BGR, subtract the ImageNet mean in BGR order, no scaling.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` on 0..255 pixels; ``bgr`` swaps channels first."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False

    def apply_numpy(self, x: np.ndarray) -> np.ndarray:
        """Reference implementation (NHWC uint8 -> float32); the engines do the same in-graph."""
        out = x.astype(np.float32)
        if self.bgr:
            out = out[..., ::-1]
        return (out - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def to_dict(self) -> dict:
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std), "bgr": self.bgr}


def normalization(preset: str, x_train: np.ndarray | None = None) -> Normalization:
    """Build a normalisation preset.

    - ``dataset``: mean/std of the *training split* (never val or test), per channel.
    - ``imagenet``: torchvision's ImageNet mean/std (RGB).
    - ``caffe``: keras.applications VGG16 preprocessing (BGR, mean subtraction only).
    """
    if preset == "dataset":
        if x_train is None or len(x_train) == 0:
            raise UserError("normalization: 'dataset' needs training images")
        flat = x_train.reshape(-1, x_train.shape[-1])
        # float64 accumulation in chunks keeps memory small on 50k images
        total = np.zeros(3)
        total_sq = np.zeros(3)
        for i in range(0, len(flat), 1 << 20):
            chunk = flat[i:i + (1 << 20)].astype(np.float64)
            total += chunk.sum(0)
            total_sq += (chunk ** 2).sum(0)
        mean = total / len(flat)
        std = np.sqrt(np.maximum(total_sq / len(flat) - mean ** 2, 1e-12))
        r, g, b = (float(v) for v in mean)
        sr, sg, sb = (float(v) for v in std)
        return Normalization("dataset", (r, g, b), (sr, sg, sb))
    if preset == "imagenet":
        return Normalization("imagenet", _IMAGENET_MEAN, _IMAGENET_STD)
    if preset == "caffe":
        return Normalization("caffe", _CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), bgr=True)
    raise UserError(f"normalization: unknown preset {preset!r} (choose from {', '.join(NORM_PRESETS)})")


@dataclass
class Splits:
    """Train / validation / test arrays. Validation comes from train; test is never used for selection."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    val_index: np.ndarray  # indices into the source's train arrays

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def split_train_val(ds: Dataset, val_fraction: float = 0.1, seed: int = 0) -> Splits:
    """Stratified, seeded train/validation split of the source's training set."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction: must be in [0, 1) (got {val_fraction})")
    n = len(ds.y_train)
    if val_fraction == 0.0:
        val_idx = np.zeros(0, dtype=np.int64)
    else:
        from sklearn.model_selection import train_test_split

        try:
            _, val_idx = train_test_split(np.arange(n), test_size=val_fraction, random_state=seed,
                                          stratify=ds.y_train)
        except ValueError as exc:  # too few images per class for a stratified split
            raise UserError(f"val_fraction: cannot make a stratified split of {n} images ({exc})") from None
        val_idx = np.sort(val_idx).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return Splits(ds.x_train[mask], ds.y_train[mask], ds.x_train[val_idx], ds.y_train[val_idx],
                  ds.x_test, ds.y_test, list(ds.classes), val_idx)


def balanced_subset(y: np.ndarray, n: int | None, seed: int, field: str = "max_train_images") -> np.ndarray:
    """Sorted indices of a seeded, class-balanced subset of at most ``n`` of the labels ``y``.

    Every class gets ``L`` or ``L + 1`` images, where ``L`` is as large as ``n`` allows; a
    class with fewer images than that gives all it has and the others share the rest. So
    with ``n`` at least the number of classes, every class is present, and the counts of
    classes that are not used up differ by at most 1. Within a class, the images are the
    first of one seeded permutation of the whole split (the same images as before this
    function existed whenever ``n`` is a multiple of the number of classes). ``n`` below
    the number of classes cannot be balanced: :class:`UserError` naming ``field``.
    """
    y = np.asarray(y)
    if n is None or n >= len(y):
        return np.arange(len(y), dtype=np.int64)
    classes, counts = np.unique(y, return_counts=True)
    k = len(classes)
    if n < k:
        raise UserError(f"{field}: {n} is fewer than the {k} classes; a class-balanced subset needs at least "
                        f"one image per class")
    # the highest level L with sum(min(count, L)) <= n (a binary search; the sum grows with L)
    lo, hi = 1, int(counts.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(counts, mid).sum() <= n:
            lo = mid
        else:
            hi = mid - 1
    take = np.minimum(counts, lo)
    spare = n - int(take.sum())  # fewer than the classes that still have images left
    if spare:
        room = np.flatnonzero(counts > lo)
        extra = np.random.Generator(np.random.PCG64([seed, 0x5B5E7, 1])).choice(room, size=spare, replace=False)
        take[extra] += 1
    order = np.random.Generator(np.random.PCG64([seed, 0x5B5E7])).permutation(len(y))
    picked = np.concatenate([order[y[order] == c][:t] for c, t in zip(classes, take)])
    picked.sort()
    return picked.astype(np.int64)


def take_balanced(x: np.ndarray, y: np.ndarray, n: int | None, seed: int,
                  field: str = "max_train_images") -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` cut to :func:`balanced_subset` (the arrays themselves when nothing is cut)."""
    if n is None or n >= len(y):
        return x, y
    keep = balanced_subset(y, n, seed, field)
    return x[keep], y[keep]


@dataclass(frozen=True)
class EpochPlan:
    """Everything random about one epoch: order, crop offsets and flips (per position in the order)."""

    order: np.ndarray  # (N,) int64 permutation
    dy: np.ndarray  # (N,) crop offsets in [0, 2*pad]
    dx: np.ndarray
    flip: np.ndarray  # (N,) bool


class BatchStream:
    """Deterministic batches of ``(uint8 NHWC images, int64 labels)`` for ``(seed, epoch)``.

    Augmentation is a random crop of the zero-padded image (``pad`` pixels each side)
    and a horizontal flip with probability 0.5, done as one vectorised gather per batch.

    Data-parallel runs shard the stream: with ``world_size`` N, every rank computes the same
    plan and takes the ``rank``-th of N equal contiguous slices of each global batch of
    ``batch_size`` images, so the ranks' batches put together are the 1-process batch and
    every rank has the same number of steps.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, *, augment: bool = True,
                 pad: int = 4, flip: bool = True, shuffle: bool = True, drop_last: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size <= 0:
            raise UserError(f"batch_size: must be > 0 (got {batch_size})")
        if batch_size % world_size:
            raise UserError(f"batch_size: {batch_size} is the global batch and must divide by the {world_size} "
                            f"processes")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        if len(x) != len(y):
            raise ValueError("images and labels differ in length")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.pad = pad if augment else 0
        self.flip = flip and augment
        self.shuffle = shuffle
        self.drop_last = drop_last and len(x) >= batch_size
        if world_size > 1 and not self.drop_last:
            raise ValueError("a sharded stream drops the last partial batch (equal shares on every rank)")
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def plan(self, epoch: int) -> EpochPlan:
        n = len(self.x)
        rng = np.random.Generator(np.random.PCG64([self.seed, epoch, 0xA1E8]))
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        hi = 2 * self.pad + 1
        dy = rng.integers(0, hi, size=n) if self.pad else np.zeros(n, np.int64)
        dx = rng.integers(0, hi, size=n) if self.pad else np.zeros(n, np.int64)
        flip = rng.random(n) < 0.5 if self.flip else np.zeros(n, bool)
        return EpochPlan(order.astype(np.int64), dy.astype(np.int64), dx.astype(np.int64), flip)

    def batch(self, plan: EpochPlan, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's share of global batch ``step`` (all of it when not sharded)."""
        share = self.batch_size // self.world_size
        lo = step * self.batch_size + self.rank * share
        sl = slice(lo, min(lo + share, len(plan.order)))
        idx = plan.order[sl]
        xb, yb = self.x[idx], self.y[idx]
        if self.pad or self.flip:
            xb = self._augment(xb, plan.dy[sl], plan.dx[sl], plan.flip[sl])
        return xb, yb.astype(np.int64, copy=False)

    def _augment(self, xb: np.ndarray, dy: np.ndarray, dx: np.ndarray, flip: np.ndarray) -> np.ndarray:
        b, h, w, _ = xb.shape
        p = self.pad
        padded = np.pad(xb, ((0, 0), (p, p), (p, p), (0, 0))) if p else xb
        ar_h, ar_w = np.arange(h), np.arange(w)
        rows = dy[:, None] + ar_h[None, :]  # (B, H)
        cols = np.where(flip[:, None], dx[:, None] + (w - 1 - ar_w)[None, :], dx[:, None] + ar_w[None, :])
        return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield the batches of ``epoch`` from ``start_step`` on (resume continues mid-epoch)."""
        plan = self.plan(epoch)
        for step in range(start_step, len(self)):
            yield self.batch(plan, step)


def eval_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Fixed-order, un-augmented batches covering every image exactly once."""
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size].astype(np.int64, copy=False)


_END = object()


def prefetch(it: Iterator, depth: int = 3) -> Iterator:
    """Run ``it`` in a background thread, ``depth`` items ahead (keeps data off the critical path)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker() -> None:
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put(item)
            q.put(_END)
        except BaseException as exc:  # noqa: BLE001 - surface every error in the consumer
            q.put(exc)

    t = threading.Thread(target=worker, daemon=True, name="alexbench-prefetch")
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not q.empty():
            try:
                q.get_nowait()
            except queue.Empty:
                break
