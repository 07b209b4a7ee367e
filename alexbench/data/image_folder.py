"""Reader of the ``image-folder`` format, from a directory or a tar archive.

``train/<class>/*`` and ``test/<class>/*``, optionally under one top-level folder
(``cifar10-jpeg/train/...``). Class order: CIFAR-10's when the class set is exactly
CIFAR-10's, else sorted names. Files without an image extension (and hidden files) are
skipped and counted in a warning. Every Pillow image mode becomes 8-bit RGB
(:func:`alexbench.data.archive.to_rgb8`). Mixed sizes are an error unless ``resize`` is
given, in which case each image is resized once with PIL while loading (then cached):
a one-off decode step, not the training path, where resizing happens on whole batches.

Bounded cost: the files are listed first (a tar archive is streamed once for its names,
once for the images), then decoded one at a time straight into arrays of the final size,
which the caller may place on disk (``alloc``), so memory does not grow with the number
of images. An image file over :data:`~alexbench.data.archive.MAX_IMAGE_FILE_BYTES` is
refused before it is read, each image's pixel count is checked from its header, and
the decoded total may not pass :data:`MAX_DECODED_BYTES`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alexbench.data import cache
from alexbench.data.archive import MAX_IMAGE_FILE_BYTES, decode_image, is_image_name, iter_tar
from alexbench.data.cifar_batches import Decoded, read_file
from alexbench.data.dataset import CIFAR10_CLASSES
from alexbench.errors import UserError

__all__ = ["MAX_DECODED_BYTES", "read_image_folder"]

MAX_DECODED_BYTES = 16 << 30  # decoded uint8 pixels of a whole folder; CIFAR-10 is 184 MB
#: ``alloc(split, shape)`` returns where to put the images: ``a[i] = img`` and ``a.shape``
#: (an array in memory by default; :class:`alexbench.data.cache.ScratchArray` on disk)
Alloc = Callable[[str, tuple[int, ...]], Any]


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _list_entries(path: Path) -> tuple[list[tuple[str, Path | None]], set[str]]:
    """(relative name, its path in a directory or None in an archive) of every file, and every folder name."""
    files: list[tuple[str, Path | None]] = []
    dirs: set[str] = set()
    if path.is_dir():
        files = [(rel, p) for rel, p in cache.walk_files(path, dirs)]
    else:
        for entry in iter_tar(path, want=lambda _: False):  # names only: nothing is read
            if entry.is_dir:
                dirs.add(entry.name)
            else:
                files.append((entry.name, None))
                parts = entry.name.split("/")
                dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return files, dirs


def read_image_folder(path: Path, resize: int | None, alloc: Alloc | None = None) -> Decoded:
    """Decode an image folder (directory or tar archive); ``alloc`` places the image arrays."""
    files, dirs = _list_entries(path)
    tops = {n.split("/")[0] for n in dirs | {f for f, _ in files}} - {"__MACOSX"}
    tops = {t for t in tops if not t.startswith(".")}
    if "train" in dirs or "test" in dirs:
        root = ""
    elif len(tops) == 1 and ({f"{t}/train" for t in tops} | {f"{t}/test" for t in tops}) & dirs:
        root = f"{next(iter(tops))}/"
    else:
        raise UserError(f"{path}: no train/ and test/ folders found (expected train/<class>/* and "
                        f"test/<class>/*, optionally under one top-level folder)")
    for split in ("train", "test"):
        if f"{root}{split}" not in dirs:
            raise UserError(f"{path}: no {root}{split}/ folder (expected train/<class>/* and test/<class>/*)")

    def classes_of(split: str) -> set[str]:
        prefix = f"{root}{split}/"
        return {d[len(prefix):] for d in dirs if d.startswith(prefix) and "/" not in d[len(prefix):]
                and not d[len(prefix):].startswith(".")}

    train_classes, test_classes = classes_of("train"), classes_of("test")
    if not train_classes:
        raise UserError(f"{path}: {root}train/ has no class folders")
    if train_classes != test_classes:
        only_train = sorted(train_classes - test_classes)
        only_test = sorted(test_classes - train_classes)
        if not only_test:
            raise UserError(f"{path}: class folder{'s' if len(only_train) > 1 else ''} missing from "
                            f"{root}test/: {', '.join(only_train)}")
        sides = [f"only in {root}train/: {', '.join(only_train)}"] if only_train else []
        sides.append(f"only in {root}test/: {', '.join(only_test)}")
        raise UserError(f"{path}: train and test have different class sets ({'; '.join(sides)})")
    classes = CIFAR10_CLASSES[:] if train_classes == set(CIFAR10_CLASSES) else sorted(train_classes)
    index = {c: i for i, c in enumerate(classes)}

    members: dict[str, list[tuple[str, str, str, Path | None]]] = {"train": [], "test": []}
    skipped: list[str] = []
    for name, fpath in files:
        rel = name[len(root):] if name.startswith(root) else None
        parts = rel.split("/") if rel is not None else []
        if len(parts) == 3 and parts[0] in members and parts[1] in index and is_image_name(name):
            members[parts[0]].append((parts[1], parts[2], name, fpath))
        elif not any(p.startswith(".") for p in name.split("/")[:-1]):
            skipped.append(name)  # files inside hidden folders are not even worth a mention
    for split, items in members.items():
        present = {c for c, _, _, _ in items}
        for c in classes:
            if c not in present:
                raise UserError(f"{path}: {root}{split}/{c}/ is empty (no image files)")
        items.sort(key=lambda t: (index[t[0]], _natural_key(t[1])))

    notes: list[str] = []
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        msg = f"{path}: skipped {len(skipped)} non-image file{'s' if len(skipped) > 1 else ''} ({shown})"
        cache.warn(msg)
        notes.append(msg)

    slot = {name: (split, i) for split, items in members.items() for i, (_, _, name, _) in enumerate(items)}
    ys = {split: np.array([index[c] for c, _, _, _ in items], dtype=np.int64) for split, items in members.items()}
    xs: dict[str, np.ndarray] = {}
    formats: set[str] = set()
    first: tuple[str, tuple[int, ...]] | None = None

    def place(name: str, data: bytes) -> None:
        nonlocal first
        shown = f"{path}:{name}" if path.is_file() else str(path / name)
        img, fmt = decode_image(data, shown, resize=resize)
        formats.add(fmt)
        if first is None:
            first = (shown, img.shape)
            n = len(slot)
            if n * img.size > MAX_DECODED_BYTES:
                raise UserError(f"{path}: {n:,} images of {img.shape[1]}x{img.shape[0]} decode to "
                                f"{n * img.size / 2**30:.1f} GiB, over the {MAX_DECODED_BYTES >> 30} GiB limit")
            for split, items in members.items():
                shape = (len(items), *img.shape)
                xs[split] = alloc(split, shape) if alloc is not None else np.empty(shape, np.uint8)
        split, i = slot[name]
        if img.shape != xs[split].shape[1:]:
            h0, w0 = first[1][:2]
            raise UserError(f"{shown}: image is {img.shape[1]}x{img.shape[0]}, but {first[0]} is {w0}x{h0}; "
                            f"mixed image sizes need an explicit resize (load_dataset(..., resize=N))")
        xs[split][i] = img

    if path.is_dir():
        for items in members.values():
            for _, _, name, fpath in items:
                assert fpath is not None  # a folder's members all have their file
                place(name, read_file(fpath, MAX_IMAGE_FILE_BYTES))
    else:  # second pass, in archive order; each member is decoded and dropped
        for entry in iter_tar(path, want=slot.__contains__, max_read=MAX_IMAGE_FILE_BYTES):
            if entry.data is not None:
                place(entry.name, entry.data)
    out = {split: (xs.get(split, np.empty((0, 32, 32, 3), np.uint8)), ys[split]) for split in members}
    if resize is not None:
        notes.append(f"images resized to {resize}x{resize} with PIL bilinear while loading (cached once)")

    if set(classes) == set(CIFAR10_CLASSES):
        name = "CIFAR-10 (JPEG copy)" if formats == {"JPEG"} else "CIFAR-10 (image folder)"
        if formats == {"JPEG"}:
            notes.append("JPEG copy of CIFAR-10: lossy, so accuracy on it is close to but not the same as "
                         "on official CIFAR-10")
    else:
        stem = path.name
        for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        name = f"{stem} (image folder)"
    return Decoded(name, "image-folder", classes, *out["train"], *out["test"], notes=notes)
