"""Checkpoint files that are never half-written, with a fallback to the previous good one.

Layout inside a run folder: ``checkpoints/last<ext>``, ``checkpoints/last.prev<ext>`` and
``checkpoints/best<ext>``. Saving ``last`` first hard-links the current ``last`` to
``last.prev`` (atomically, costing no space), then writes the new ``last`` through a
temp file, fsync and rename. At every instant both names hold complete files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

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
