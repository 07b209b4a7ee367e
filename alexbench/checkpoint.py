"""Checkpoint files that are never half-written, with a fallback to the previous good one.

Layout inside a run folder: ``checkpoints/last<ext>``, ``checkpoints/last.prev<ext>`` and
``checkpoints/best<ext>``. Saving ``last`` first hard-links the current ``last`` to
``last.prev`` (atomically, costing no space), then writes the new ``last`` through a
temp file, fsync and rename. At every instant both names hold complete files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from alexbench.atomic import atomic_path, publish
from alexbench.errors import UserError
from alexbench.log import get_logger
from alexbench.rundir import CHECKPOINTS

log = get_logger(__name__)

EXT = {"torch": ".pt", "keras": ".npz"}


def ckpt_path(run_dir: Path, name: str, framework: str) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{name}{EXT[framework]}"


def save(run_dir: Path, name: str, framework: str, writer: Callable[[str], None], keep_previous: bool = True) -> Path:
    """Write a checkpoint with ``writer(tmp_path)``; the old one becomes ``<name>.prev``."""
    target = ckpt_path(run_dir, name, framework)
    target.parent.mkdir(parents=True, exist_ok=True)
    if keep_previous and target.exists():
        prev = ckpt_path(run_dir, f"{name}.prev", framework)
        link_tmp = prev.with_name(prev.name + ".link.tmp")
        link_tmp.unlink(missing_ok=True)
        try:
            os.link(target, link_tmp)
            publish(link_tmp, prev)
            # if prev already was this same file (a crash came between the previous link and its new
            # target), rename() of two names of one file does nothing (POSIX) and leaves link_tmp behind
            link_tmp.unlink(missing_ok=True)
        except OSError:
            link_tmp.unlink(missing_ok=True)  # filesystems without hard links: keep going without .prev
    with atomic_path(target) as tmp:
        writer(str(tmp))
    return target


def load_with_fallback(run_dir: Path, name: str, framework: str, loader: Callable[[str], dict]) -> tuple[dict, Path]:
    """Load ``<name>``; if it is missing or corrupt, warn and fall back to ``<name>.prev``."""
    first = ckpt_path(run_dir, name, framework)
    prev = ckpt_path(run_dir, f"{name}.prev", framework)
    errors = []
    for path in (first, prev):
        if not path.exists():
            errors.append(f"{path}: not found")
            continue
        try:
            meta = loader(str(path))
        except UserError as exc:
            errors.append(str(exc))
            log.warning("%s; trying the previous checkpoint", exc)
            continue
        if path == prev:
            log.warning("resumed from the previous good checkpoint %s", path)
        return meta, path
    raise UserError("; ".join(errors))


# -- checks of a checkpoint's content, shared by both engines ------------------------------------

MAX_META_BYTES = 16 << 20  # a run's metadata (config, progress, per-epoch history) is a few KB


def check_expansion(path: str | os.PathLike) -> None:
    """Refuse a zip container (``.pt``, ``.npz``) whose members expand far beyond the file: both
    formats store arrays uncompressed, so a compressed giant is a bomb, not a checkpoint."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(i.file_size for i in zf.infolist())
    except (OSError, zipfile.BadZipFile):
        return  # not a zip (or unreadable): the format's own reader refuses it
    size = os.path.getsize(path)
    if declared > 2 * size + (1 << 20):
        raise UserError(f"{path}: refused: its members expand to {declared / 2**20:.0f} MiB from a "
                        f"{size / 2**20:.1f} MiB file (checkpoints are stored uncompressed)")


def parse_meta(path: str | os.PathLike, text: object) -> dict:
    """The checkpoint's metadata JSON as a dict, or a one-line refusal."""
    import json

    if not isinstance(text, str):
        raise UserError(f"{path}: meta_json: expected JSON text (got {type(text).__name__})")
    if len(text) > MAX_META_BYTES:
        raise UserError(f"{path}: meta_json: larger than {MAX_META_BYTES >> 20} MiB")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path}: meta_json: not valid JSON ({str(exc).split(';')[0][:100]})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: meta_json: expected a JSON object (got {type(meta).__name__})")
    return meta


def resume_meta(path: str | os.PathLike, meta: dict) -> dict:
    """Metadata a resume needs: a ``progress`` mapping (its fields are checked by the loop)."""
    if not isinstance(meta.get("progress"), dict):
        raise UserError(f"{path}: meta_json: progress missing or not a mapping; cannot resume from it")
    return meta


def dtype_kind(x: Any) -> str:
    """NumPy's dtype kind letter ('f', 'i', 'u', 'b', 'c', ...; 'x' if unknown) of a NumPy array, a
    torch tensor or a dtype name."""
    if hasattr(x, "is_floating_point"):  # a torch tensor: bfloat16 has no NumPy dtype
        if x.is_floating_point():
            return "f"
        x = str(x.dtype).removeprefix("torch.")
    try:
        return np.dtype(getattr(x, "dtype", x)).kind
    except TypeError:
        return "x"


def check_weight(path: str | os.PathLike, name: str, arr: Any) -> None:
    """Refuse weights that are neither floating point nor integer (counters such as BatchNorm's
    ``num_batches_tracked``), and floating-point weights with NaN or infinity anywhere."""
    kind = dtype_kind(arr)
    if kind not in ("f", "i", "u"):
        raise UserError(f"{path}: {name}: dtype {arr.dtype} is neither floating point nor integer")
    finite = bool(arr.isfinite().all()) if hasattr(arr, "isfinite") else bool(np.isfinite(arr).all())
    if kind == "f" and not finite:
        raise UserError(f"{path}: {name}: holds NaN or infinite values; refusing to load it")


def check_weight_kind(path: str | os.PathLike, name: str, got: Any, want: Any) -> None:
    """A layer's floating-point tensor must stay floating point (and an integer counter an integer)."""
    g, w = dtype_kind(got) == "f", dtype_kind(want) == "f"
    if g != w:
        kinds = {True: "floating point", False: "integer"}
        raise UserError(f"{path}: {name}: is {kinds[g]} in the file, the model expects {kinds[w]}")
