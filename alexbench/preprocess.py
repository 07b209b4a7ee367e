"""A run's preprocessing, written down once so a trained model can be used outside alexbench.

Training feeds uint8 RGB images of the dataset's size (32x32 for CIFAR-10) to the
engine, which normalises them, ``(x - mean) / std`` on the 0..255 scale (channels
swapped to BGR first for ``caffe``), and resizes the whole batch to the model's input
size (bilinear, half-pixel centres, no antialias) when the two differ.
:class:`Preprocess` holds those numbers, read from the run's record
(:func:`alexbench.rundir.preprocessing`, saved in every checkpoint and in
``metrics.json``); it is copied into exported models' metadata and applied here in
NumPy by ``predict`` and by the export check, equal to the engines' in-graph version
(a test compares them).

A new image (any size, any mode PIL reads) is first decoded to 8-bit RGB and resized
to the dataset's image size with PIL's bilinear filter, as the data loader does for
an image folder that needs resizing (:func:`alexbench.data.archive.decode_image`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from alexbench.errors import UserError

__all__ = ["Preprocess", "load_image", "resize_matrix"]


@dataclass(frozen=True)
class Preprocess:
    image_size: tuple[int, int]  # (height, width) of the training images, before the model's resize
    input_size: int  # the model's input side
    mean: tuple[float, float, float]  # per channel, in ``channel_order``, on the 0..255 scale
    std: tuple[float, float, float]
    channel_order: str = "RGB"  # "RGB" or "BGR" (caffe): the order of the model's input channels
    tta_flip: bool = False  # the run evaluated by averaging the logits of the image and its mirror
    normalization: str = ""  # the preset the numbers came from ("dataset", "imagenet", "caffe")

    def to_dict(self) -> dict[str, Any]:
        """The record's ``preprocess`` block (:func:`alexbench.rundir.preprocessing`), plus the resize rule."""
        return {"normalization": self.normalization, "mean": list(self.mean), "std": list(self.std),
                "channel_order": self.channel_order, "scale": "0-255", "image_size": list(self.image_size),
                "input_size": self.input_size, "tta_flip": self.tta_flip,
                "resize": "bilinear, half-pixel centres, no antialias, after normalising"}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> "Preprocess":
        """From a ``preprocess`` block whose ``image_size`` is known."""
        try:
            h, w = (int(v) for v in d["image_size"])
            pre = cls(image_size=(h, w), input_size=int(d["input_size"]),
                      mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]  # 3 values: checked below
                      std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
                      channel_order=str(d.get("channel_order", "RGB")), tta_flip=bool(d.get("tta_flip", False)),
                      normalization=str(d.get("normalization", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: preprocessing record is incomplete or malformed ({exc})") from None
        if len(pre.mean) != 3 or len(pre.std) != 3 or pre.channel_order not in ("RGB", "BGR") or \
                min(pre.std) <= 0 or min(h, w, pre.input_size) < 1:
            raise UserError(f"{where}: preprocessing record has invalid values ({d!r})")
        return pre

    def model_input(self, images: np.ndarray, layout: str = "NCHW") -> np.ndarray:
        """uint8 NHWC images at ``image_size`` -> float32 model input in ``layout`` ("NCHW" or "NHWC")."""
        if images.ndim != 4 or images.shape[1:] != (*self.image_size, 3):
            raise ValueError(f"expected (N, {self.image_size[0]}, {self.image_size[1]}, 3) images, "
                             f"got {images.shape}")
        x: np.ndarray = images.astype(np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.image_size != (self.input_size, self.input_size):
            rh = resize_matrix(self.image_size[0], self.input_size)
            rw = resize_matrix(self.image_size[1], self.input_size)
            x = np.einsum("oh,nhwc->nowc", rh, x, optimize=True)
            x = np.einsum("pw,nowc->nopc", rw, x, optimize=True)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "NCHW" else x, dtype=np.float32)
        return x

    def fit_image(self, rgb: np.ndarray) -> np.ndarray:
        """One decoded uint8 RGB image -> ``image_size`` (PIL bilinear, as the data loader resizes)."""
        if rgb.shape[:2] == self.image_size:
            return rgb
        from PIL import Image

        h, w = self.image_size
        return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D bilinear resizing with half-pixel centres and no antialias.

    The same sampling as ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False, antialias=False)`` and ``tf.image.resize(method="bilinear")``:
    output pixel ``o`` reads input position ``(o + 0.5) * n_in / n_out - 0.5``, clamped at
    the borders.
    """
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m.astype(np.float32)


def load_image(path: Path) -> np.ndarray:
    """A file PIL can read -> uint8 HWC RGB (see :func:`alexbench.data.archive.decode_image`)."""
    from PIL import Image

    from alexbench.data.archive import decode_image

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    arr, _ = decode_image(data, str(path), max_pixels=Image.MAX_IMAGE_PIXELS, formats=None)
    return arr
