"""Loading a data source: the one entry point, and the glue between the formats and the cache.

Every source ends as one :class:`~alexbench.data.dataset.Dataset` (uint8 NHWC arrays,
int64 labels, class names). The work is split by concern:

- :mod:`~alexbench.data.detect`: auto-detection and telling a source's format from names;
- :mod:`~alexbench.data.download`: the official archives' URLs and MD5s, and the download;
- :mod:`~alexbench.data.cifar_batches`: the official ``cifar-binary`` and ``cifar-python``
  formats (``cifar-10-batches-bin/``, ``cifar-10-batches-py/`` or their archives);
- :mod:`~alexbench.data.image_folder`: ``train/<class>/*`` and ``test/<class>/*``, as a
  folder or a tarball;
- ``embedded-sample``: the small real sample shipped in the package, used only when
  nothing else is found, and flagged everywhere.

Whatever the format, the decoded arrays are cached by content hash (see
:mod:`alexbench.data.cache`), so a second load of the same source is a file read. This
module keeps the public names of all of them importable from one place.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexbench.data import cache, download
from alexbench.data.cifar_batches import Decoded, read_cifar_binary, read_cifar_python
from alexbench.data.dataset import CIFAR10_CLASSES, Dataset
from alexbench.data.detect import (
    EMBEDDED,
    SAMPLE_NAME,
    SAMPLE_PATH,
    candidate_paths,
    describe_source,
    dir_format_hint,
    find_default_source,
    peek_tar_format,
    resolve_source,
)
from alexbench.data.download import (
    BINARY_MD5,
    BINARY_SIZE,
    BINARY_URL,
    PYTHON_MD5,
    PYTHON_SIZE,
    PYTHON_URL,
    download_cifar10,
    official_md5,
)
from alexbench.data.image_folder import read_image_folder
from alexbench.errors import UserError

# The public names of the data sources, wherever they live now.
__all__ = ["CIFAR10_CLASSES", "BINARY_URL", "BINARY_MD5", "BINARY_SIZE", "PYTHON_URL", "PYTHON_MD5",
           "PYTHON_SIZE", "SAMPLE_PATH", "SAMPLE_NAME", "EMBEDDED", "LoadInfo", "official_md5", "load_dataset",
           "load_dataset_info", "find_default_source", "describe_source", "download_cifar10", "candidate_paths"]


def _decode(path: Path, resize: int | None, alloc=None) -> Decoded:  # noqa: ANN001 - see image_folder.Alloc
    fmt: str | None
    if path.is_dir():
        fmt = dir_format_hint(path) or "image-folder"
    else:
        fmt = peek_tar_format(path)
        if fmt is None:
            raise UserError(f"{path}: archive holds neither official CIFAR-10 batches nor train/<class>/ and "
                            f"test/<class>/ images")
    if fmt in ("cifar-binary", "cifar-python") and resize not in (None, 32):
        raise UserError(f"{path}: resize={resize} is not done at load time for official CIFAR-10 (32x32); "
                        f"models resize whole batches")
    if fmt == "cifar-binary":
        return read_cifar_binary(path)
    if fmt == "cifar-python":
        return read_cifar_python(path)
    return read_image_folder(path, resize, alloc)


# --------------------------------------------------------------------------- load

@dataclass
class LoadInfo:
    """How a load went; :func:`load_dataset_info` returns it for ``alexbench data``."""

    dataset: Dataset
    cache_hit: bool
    seconds: float
    found_by: str  # "argument" | "auto-detected" | "downloaded" | "fallback"
    verify: dict[str, Any] = field(default_factory=dict)


def load_dataset(source: str | None = None, *, verify: bool = False, resize: int | None = None,
                 download: bool = False, cache_dir: str | None = None) -> Dataset:
    """Load CIFAR-10 (or an image folder) as uint8 NHWC arrays, decoding at most once per source.

    Args:
        source: a directory or tar archive in one of the formats of this module, or
            ``"embedded"`` for the shipped sample. None: auto-detect an official copy
            (:func:`candidate_paths`); if none, download it when ``download`` is true,
            else fall back to the embedded sample (with a warning, and
            ``Dataset.embedded=True``).
        verify: recompute the source's hash (ignoring sidecars), decode every image
            again instead of reading the cache, and refresh the cache if it differed.
        resize: image folders only: resize every image to ``resize x resize`` while
            loading (needed for folders of mixed sizes).
        download: see ``source``.
        cache_dir: the data home; default ``$ALEXBENCH_DATA`` or ``~/.cache/alexbench``.

    Raises:
        UserError: for any bad input, naming the file and the problem.
    """
    return load_dataset_info(source, verify=verify, resize=resize, download=download,
                             cache_dir=cache_dir).dataset


def load_dataset_info(source: str | None = None, *, verify: bool = False, resize: int | None = None,
                      download: bool = False, cache_dir: str | None = None) -> LoadInfo:
    """:func:`load_dataset`, also telling whether the cache served it and how long it took."""
    t0 = time.perf_counter()
    if resize is not None and (not isinstance(resize, int) or not 1 <= resize <= 4096):
        raise UserError(f"resize: must be an integer in [1, 4096] (got {resize!r})")
    home = cache.data_home(cache_dir)
    found_by = "argument"
    if source is None:
        source = find_default_source(home)
        found_by = "auto-detected"
        if source is None and download:
            source = str(download_cifar10(home))
            found_by = "downloaded"
        elif source is None:
            found_by = "fallback"
    embedded = source is None or (source == EMBEDDED and not Path(EMBEDDED).exists())
    if embedded:
        if not SAMPLE_PATH.is_file():
            raise UserError(f"{SAMPLE_PATH}: the embedded sample is missing from this installation")
        path = SAMPLE_PATH
    else:
        path = resolve_source(str(source))

    expected_md5 = official_md5(path.name) if path.is_file() else None
    digests = cache.source_sha256(path, home, fresh=verify, md5=expected_md5 is not None)
    sha = digests["sha256"]
    report: dict[str, Any] = {}
    md5_note = None
    if verify:
        report["sha256_recomputed"] = sha
        if expected_md5:
            report["md5"] = digests["md5"]
            report["md5_official"] = digests["md5"] == expected_md5
    if expected_md5 and digests.get("md5") != expected_md5:
        md5_note = _md5_mismatch(path, home, digests["md5"], expected_md5)
    if embedded:
        _check_sample_sha(sha, verify, report)

    cpath = cache.cache_file(home, sha, resize)
    cached = cache.load_cached(cpath)
    if cached is not None and not verify:
        meta = cached["meta"]
        ds = Dataset(name=meta["name"], source=str(path), format=meta["format"], sha256=sha,
                     classes=cached["classes"], x_train=cached["x_train"], y_train=cached["y_train"],
                     x_test=cached["x_test"], y_test=cached["y_test"], embedded=embedded,
                     cache_path=str(cpath), notes=list(meta.get("notes", [])))
        if md5_note and md5_note not in ds.notes:
            ds.notes.append(md5_note)
        _finish_notes(ds, found_by, home)
        return LoadInfo(ds, True, time.perf_counter() - t0, found_by, report)

    with cache.scratch(home) as alloc:  # image folders decode to disk, not to memory
        return _decode_and_cache(path, resize, alloc, home, cpath, cached, sha, embedded, verify, md5_note, report,
                                 found_by, t0)


def _in_memory(a: Any) -> np.ndarray:
    return a.load() if isinstance(a, cache.ScratchArray) else a


def _decode_and_cache(path: Path, resize: int | None, alloc: Any, home: Path, cpath: Path, cached: Any, sha: str,
                      embedded: bool, verify: bool, md5_note: str | None, report: dict[str, Any], found_by: str,
                      t0: float) -> LoadInfo:
    dec = _decode(path, resize, alloc)
    if md5_note:
        dec.notes.append(md5_note)
    if embedded:
        dec.name, dec.format = SAMPLE_NAME, "embedded-sample"
        n_tr, n_te = len(dec.y_train), len(dec.y_test)
        dec.notes.insert(0, f"embedded sample: a small real subset of CIFAR-10 ({n_tr:,} train / {n_te:,} test "
                            f"JPEG images, {n_tr // max(len(dec.classes), 1)} and {n_te // max(len(dec.classes), 1)} "
                            f"per class); results on it are not CIFAR-10 results")
    arrays = {"x_train": dec.x_train, "y_train": dec.y_train, "x_test": dec.x_test, "y_test": dec.y_test,
              "classes": dec.classes}
    if verify:
        report["images_decoded"] = len(dec.y_train) + len(dec.y_test)
        if cached is not None:
            same = all(np.array_equal(cached[k], _in_memory(arrays[k])) for k in ("x_train", "y_train", "x_test",
                                                                                  "y_test")) \
                and cached["classes"] == dec.classes
            report["cache_matched"] = same
    final = cached  # the arrays to hand out: memory-mapped from the cache, never the scratch files
    if cached is None or not report.get("cache_matched", False):
        written = cache.save_cached(cpath, arrays, {"name": dec.name, "format": dec.format, "notes": dec.notes,
                                                    "source": str(path), "sha256": sha})
        if verify and cached is not None:
            report["cache_rewritten"] = written
        final = cache.load_cached(cpath) if written else None
    if final is not None:
        dec.x_train, dec.y_train, dec.x_test, dec.y_test = (final[k] for k in ("x_train", "y_train", "x_test",
                                                                               "y_test"))
    else:  # no cache could be written: the scratch files go away on return, so keep them in memory
        dec.x_train, dec.x_test = _in_memory(dec.x_train), _in_memory(dec.x_test)
    ds = Dataset(name=dec.name, source=str(path), format=dec.format, sha256=sha, classes=dec.classes,
                 x_train=dec.x_train, y_train=dec.y_train, x_test=dec.x_test, y_test=dec.y_test,
                 embedded=embedded, cache_path=str(cpath) if cpath.is_file() else None, notes=dec.notes)
    _finish_notes(ds, found_by, home)
    return LoadInfo(ds, False, time.perf_counter() - t0, found_by, report)


def _finish_notes(ds: Dataset, found_by: str, home: Path) -> None:
    if found_by == "fallback":
        msg = (f"no CIFAR-10 copy found (looked in {home}, ./data and ~/.keras/datasets); using the small "
               f"embedded sample. Run `alexbench data --download` or pass a source for the full dataset")
        cache.warn(msg)  # once, on stderr (not repeated among the dataset's notes)
    elif found_by == "downloaded":
        ds.notes.append(f"downloaded from {download.BINARY_URL} (MD5 verified)")


def _md5_mismatch(path: Path, home: Path, got: str, expected: str) -> str:
    """An official archive name whose MD5 is wrong.

    In the data home it is our own download gone bad: set it aside as ``.bad-<md5>``
    (never deleted) and stop. Elsewhere it is the user's file: warn, then read it anyway
    (a truncated copy fails to read with its own clear error).
    """
    if path.parent.resolve() == home.resolve():
        bad = path.with_name(f"{path.name}.bad-{got}")
        os.replace(path, bad)
        raise UserError(f"{path}: MD5 mismatch (got {got}, expected {expected}); the file was kept aside at {bad}")
    msg = (f"{path}: MD5 {got} is not the official {path.name}'s ({expected}); reading it anyway, "
           f"results may not be official CIFAR-10")
    cache.warn(msg)
    return msg


def _check_sample_sha(sha: str, verify: bool, report: dict[str, Any]) -> None:
    expected_file = SAMPLE_PATH.with_suffix("").with_suffix(".sha256")
    try:
        expected = expected_file.read_text().split()[0]
    except (OSError, IndexError):
        return
    if verify:
        report["sample_sha256_matches"] = expected == sha
    if expected != sha:
        raise UserError(f"{SAMPLE_PATH}: sha256 {sha} does not match {expected_file.name} ({expected}); "
                        f"the installed sample is damaged")
