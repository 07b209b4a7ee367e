"""Official CIFAR-10 archives: where they are published, their MD5s, and the download.

:func:`download_cifar10` streams the binary archive into the data home while hashing
it, with a progress bar on a terminal (:class:`_Progress`), and renames it into place
only when the MD5 is the published one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alexbench.atomic import atomic_path
from alexbench.data import cache
from alexbench.errors import UserError
from alexbench.log import get_logger, progress_enabled

__all__ = ["BINARY_URL", "BINARY_MD5", "BINARY_SIZE", "PYTHON_URL", "PYTHON_MD5", "PYTHON_SIZE", "official_md5",
           "download_cifar10"]

log = get_logger(__name__)

# Official archives (https://www.cs.toronto.edu/~kriz/cifar.html).
BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
BINARY_SIZE = 170_052_171
PYTHON_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
PYTHON_MD5 = "c58f30108f718f92721af3b95e74349a"
PYTHON_SIZE = 170_498_071
# File names under which the official archives are known (Keras saves the python one as
# cifar-10-batches-py.tar.gz), and which constant holds each one's MD5.
_OFFICIAL_NAMES = {"cifar-10-binary.tar.gz": "BINARY_MD5", "cifar-10-python.tar.gz": "PYTHON_MD5",
                   "cifar-10-batches-py.tar.gz": "PYTHON_MD5"}


def official_md5(name: str) -> str | None:
    """The published MD5 for an official archive file name, else None."""
    const = _OFFICIAL_NAMES.get(name)
    return globals()[const] if const else None


def _want_progress() -> bool:
    return progress_enabled()


class _Progress:
    """A rich progress bar on a terminal (not under CI); silent otherwise."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self._bar, self._task = label, total, None, None
        if _want_progress():
            try:
                from rich.console import Console
                from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

                self._bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                                     console=Console(stderr=True))
                self._bar.start()
                self._task = self._bar.add_task(label, total=total)
            except ImportError:  # pragma: no cover - rich is a dependency
                self._bar = None

    def update(self, n: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def download_cifar10(cache_dir: str | os.PathLike | None = None, *, url: str | None = None,
                     md5: str | None = None, size: int | None = None,
                     opener: Callable[..., Any] | None = None) -> Path:
    """Download the official binary CIFAR-10 archive into the data home; return its path.

    The file is streamed into a temporary file next to the target while its MD5 is
    computed, then renamed into place (atomic). On an MD5 mismatch the download is kept
    as ``<name>.bad-<md5>`` beside the target and a :class:`UserError` says where.
    An existing target with the right MD5 is reused. ``url``/``md5``/``size`` default to
    the module's ``BINARY_*`` constants; ``opener`` defaults to ``urllib.request.urlopen``.
    """
    url = url or BINARY_URL
    md5 = md5 or BINARY_MD5
    size = size if size is not None else (BINARY_SIZE if url == BINARY_URL else None)
    opener = opener or urllib.request.urlopen
    home = cache.data_home(cache_dir)
    target = home / "cifar-10-binary.tar.gz"
    if target.is_file() and cache.hash_file(target, ("md5",))["md5"] == md5:
        return target
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{home}: cannot create the data folder ({exc.strerror or exc})") from exc
    # progress lines on a terminal; in logs (CI, redirected) only with --verbose
    level = logging.INFO if _want_progress() else logging.DEBUG
    log.log(level, "downloading %s to %s", url, target)
    with atomic_path(target) as tmp:
        digest = hashlib.md5()
        received = 0
        try:
            response = opener(url, timeout=60)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise UserError(f"{url}: download failed ({getattr(exc, 'reason', None) or exc})") from None
        with response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            bar = _Progress(target.name, int(length) if length else size)
            try:
                while True:
                    try:
                        chunk = response.read(1 << 20)
                    except OSError as exc:  # network trouble is not a disk error: say so
                        raise UserError(f"{url}: download interrupted after {received:,} bytes ({exc})") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != md5:
            bad = target.with_name(f"{target.name}.bad-{got}")
            os.replace(tmp, bad)
            expected = f"{size:,} bytes, " if size else ""
            raise UserError(f"{url}: MD5 mismatch: got {got} ({received:,} bytes), expected {md5} ({expected}"
                            f"official); the downloaded file was kept at {bad}")
    log.log(level, "downloaded %s bytes, MD5 verified: %s", f"{received:,}", target)
    return target
