"""Finding and recognising a data source, without decoding it.

Auto-detection (:func:`candidate_paths`, :func:`find_default_source`) looks for an
official CIFAR-10 copy where alexbench, torchvision and Keras keep theirs. A source's
format is told from file names alone: a directory's listing, or an archive's member
names streamed only until one decides (:func:`peek_tar_format`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alexbench.data import cache
from alexbench.data.archive import is_image_name, is_tar, iter_tar
from alexbench.data.cifar_batches import BIN_FILES, PY_FILES
from alexbench.data.download import official_md5
from alexbench.errors import UserError

__all__ = ["SAMPLE_PATH", "SAMPLE_NAME", "EMBEDDED", "candidate_paths", "find_default_source", "resolve_source",
           "dir_format_hint", "peek_tar_format", "describe_source"]

SAMPLE_PATH = Path(__file__).resolve().parent / "sample" / "cifar10-sample.tar.gz"
SAMPLE_NAME = "CIFAR-10 sample (embedded)"
EMBEDDED = "embedded"  # the ``source`` keyword that asks for the sample explicitly


def candidate_paths(cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where auto-detection looks, in order: the data home, torchvision's ``./data``, Keras's cache."""
    home = cache.data_home(cache_dir)
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"
    torch_data = Path.cwd() / "data"
    return [
        home / "cifar-10-batches-bin", home / "cifar-10-binary.tar.gz",
        home / "cifar-10-batches-py", home / "cifar-10-python.tar.gz",
        torch_data / "cifar-10-batches-py", torch_data / "cifar-10-python.tar.gz",
        keras_home / "cifar-10-batches-py", keras_home / "cifar-10-batches-py.tar.gz",
        keras_home / "cifar-10-python.tar.gz",
    ]


def find_default_source(cache_dir: str | os.PathLike | None = None) -> str | None:
    """The first official CIFAR-10 copy found by :func:`candidate_paths`, or None.

    A directory counts when it holds at least one batch file (an empty folder left by
    an aborted download does not); an archive counts when it is a non-empty file.
    """
    for path in candidate_paths(cache_dir):
        if path.is_dir():
            try:
                names = set(os.listdir(path))
            except OSError:
                continue  # unreadable: not something we can use
            if names & (set(BIN_FILES) | set(PY_FILES)):
                return str(path)
        elif path.is_file() and path.stat().st_size > 0:
            return str(path)
    return None


def resolve_source(source: str) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        if path.is_symlink():
            raise UserError(f"{source}: broken symbolic link")
        raise UserError(f"{source}: no such file or directory")
    if path.is_dir():
        # ``./data`` or the data home itself: step into the official folder it holds.
        for sub in ("cifar-10-batches-bin", "cifar-10-batches-py"):
            if not dir_format_hint(path) and (path / sub).is_dir():
                return (path / sub).resolve()
        return path.resolve()
    if not path.is_file():
        raise UserError(f"{source}: not a regular file or directory")
    if not is_tar(path):
        raise UserError(f"{source}: not a directory or tar archive (expected an official CIFAR-10 folder or "
                        f"archive, or an image folder)")
    return path.resolve()


def dir_format_hint(path: Path) -> str | None:
    names = set(os.listdir(path))
    if names & set(BIN_FILES):
        return "cifar-binary"
    if names & set(PY_FILES):
        return "cifar-python"
    return None


def _format_from_names(names: Iterable[str]) -> str | None:
    """Decide an archive's format from member names seen so far (None: undecided)."""
    for name in names:
        parts = name.split("/")
        if parts[-1] in BIN_FILES:
            return "cifar-binary"
        if parts[-1] in PY_FILES:
            return "cifar-python"
        if ("train" in parts[:-1] or "test" in parts[:-1]) and is_image_name(name):
            return "image-folder"
    return None


def peek_tar_format(path: Path) -> str | None:
    """Stream an archive's member names only until one decides the format."""
    for entry in iter_tar(path, want=lambda _: False):
        fmt = _format_from_names([entry.name])
        if fmt:
            return fmt
    return None


def describe_source(source: str | None) -> dict[str, Any]:
    """What a source is, without decoding it: path, format, container and size.

    ``source=None`` describes what :func:`load_dataset` would pick without downloading
    (an official copy found by auto-detection, else the embedded sample).
    """
    found_by = "argument"
    if source is None:
        source = find_default_source()
        found_by = "auto-detected" if source else "fallback"
    if source is None or source == EMBEDDED and not Path(EMBEDDED).exists():
        return {"source": str(SAMPLE_PATH), "format": "embedded-sample", "container": "tar.gz",
                "bytes": SAMPLE_PATH.stat().st_size if SAMPLE_PATH.exists() else None,
                "found_by": found_by, "embedded": True}
    path = resolve_source(source)
    if path.is_dir():
        fmt = dir_format_hint(path) or "image-folder"
        size = sum(p.stat().st_size for _, p in cache.walk_files(path))
        container = "directory"
    else:
        fmt = peek_tar_format(path) or "unknown"
        size = path.stat().st_size
        lower = path.name.lower()
        container = next((c for c, ends in (("tar.gz", (".gz", ".tgz")), ("tar.bz2", (".bz2", ".tbz2")),
                                             ("tar.xz", (".xz", ".txz"))) if lower.endswith(ends)), "tar")
    out = {"source": str(path), "format": fmt, "container": container, "bytes": size, "found_by": found_by,
           "embedded": False}
    if path.is_file() and official_md5(path.name):
        out["official_md5"] = official_md5(path.name)
    return out
