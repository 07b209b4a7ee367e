"""Output paths: alexbench replaces only files it can prove it wrote.

A user points ``--out`` or ``-o`` at a folder that may already hold their own files. Before
anything is written, every path alexbench is about to replace is checked for a proof of
authorship:

- a run folder is alexbench's when its ``state.json`` is a run state or its ``config.yaml``
  starts with :data:`CONFIG_HEADER`;
- the HTML report carries ``<meta name="generator" content="alexbench …">`` and its Markdown
  twin a first-line comment (or, before that comment existed, the closing "Written by
  alexbench" line);
- a figures folder (``<stem>_files/``) holds a manifest, :data:`MANIFEST`, with the SHA-256
  of every file alexbench put there; only a listed file whose bytes still match is replaced
  or removed, so a figure the user edited or dropped there is theirs.

Anything else is refused with one line that names the file and the way out (another path,
or ``--force``). ``--force`` replaces the named files; it never removes files alexbench does
not know about.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from alexbench.atomic import atomic_path, atomic_write_json
from alexbench.errors import UserError
from alexbench.rundir import CHECKPOINTS, CONFIG_HEADER, RUN_FILES, is_run_folder

__all__ = ["CONFIG_HEADER", "MANIFEST", "ensure_folder", "check_file_target", "refuse_foreign",
           "is_run_folder", "claim_run_folder", "missing_dirs", "remove_empty", "removed_if_unstarted",
           "check_json_output", "check_report_targets", "publish_folder", "unwritable"]

MD_MARKER = "<!-- generator: alexbench"
MANIFEST = ".alexbench-files.json"
_MANIFEST_FORMAT = "alexbench-files-v1"
_PROBE = 4096  # markers sit in the first (or last) few bytes; never read a user's whole file


def _deepest_existing(path: Path) -> Path:
    """``path`` itself, or its deepest ancestor that exists."""
    cur = path
    while not os.path.lexists(cur) and cur.parent != cur:
        cur = cur.parent
    return cur


def unwritable(path: Path, flag: str, exc: OSError) -> UserError:
    """One line for an OSError met while creating or writing an output path."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"{path}: not writable ({exc.strerror}); choose another {flag}")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return UserError(f"{path}: a file is in the way of this folder; choose another {flag}")
    return UserError(f"{path}: cannot create it ({exc.strerror or exc}); choose another {flag}")


def _check_ancestors(path: Path, flag: str, start: Path | None = None) -> None:
    """Refuse ``path`` when the deepest existing folder on its way (from ``start``) is a file or
    cannot be written."""
    base = _deepest_existing(start or path)
    if not base.is_dir():
        raise UserError(f"{path}: cannot be created, {base} is a file; choose another {flag}")
    if not os.access(base, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise UserError(f"{path}: {base} is not writable; choose another {flag}")


def ensure_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create output folder ``path`` (and its parents) or refuse in one line: it is a file, lies
    under a file, or cannot be written."""
    p = Path(path)
    if os.path.lexists(p) and not p.is_dir():
        raise UserError(f"{p}: exists and is not a folder; choose another {flag}")
    _check_ancestors(p, flag)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(p, flag, exc) from None
    return p


def check_file_target(path: str | os.PathLike, flag: str) -> Path:
    """Refuse an output file path that is a folder, lies under a file, or cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a folder; {flag} takes a file name")
    _check_ancestors(p, flag, start=p.parent)
    return p


def refuse_foreign(path: Path, flag: str, what: str = "") -> UserError:
    """The one-line refusal for a file alexbench did not write."""
    role = f" ({what})" if what else ""
    return UserError(f"{path}: exists and was not written by alexbench{role}; choose another {flag} "
                     "or pass --force to replace it")


def _head(path: Path, n: int = _PROBE) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def _tail(path: Path, n: int = _PROBE) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - n))
            return fh.read(n)
    except OSError:
        return b""


def html_is_ours(path: Path) -> bool:
    return path.is_file() and b'<meta name="generator" content="alexbench' in _head(path)


def md_is_ours(path: Path) -> bool:
    if not path.is_file():
        return False
    return _head(path).startswith(MD_MARKER.encode()) or (
        b"Written by alexbench " in _tail(path, 512) and b"from the run folders alone" in _tail(path, 512))


def check_report_targets(html_out: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Refuse, before any work, a report path whose HTML or Markdown twin is not alexbench's.

    Returns the Markdown twin's path and the figures folder's.
    """
    check_file_target(html_out, "-o")
    md_out = html_out.with_suffix(".md")
    files_dir = html_out.with_name(f"{html_out.stem}_files")
    if os.path.lexists(files_dir) and not files_dir.is_dir():
        raise refuse_foreign(files_dir, "-o", "the report's figures folder goes there")
    if not force:
        if os.path.lexists(html_out) and not html_is_ours(html_out):
            raise refuse_foreign(html_out, "-o")
        if os.path.lexists(md_out) and not md_is_ours(md_out):
            raise refuse_foreign(md_out, "-o", "the report's Markdown twin goes there")
    return md_out, files_dir


def claim_run_folder(folder: Path, force: bool = False) -> None:
    """Refuse a folder that is not an alexbench run but holds a file a run would write."""
    if force or is_run_folder(folder):
        return
    for name in RUN_FILES:
        if os.path.lexists(folder / name):
            raise refuse_foreign(folder / name, "--out", "the folder is not an alexbench run")


def missing_dirs(path: Path) -> list[Path]:
    """The folders that creating ``path`` would create, deepest first."""
    made = []
    while not os.path.lexists(path) and path.parent != path:
        made.append(path)
        path = path.parent
    return made


def remove_empty(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: those a failed command created."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            break


@contextlib.contextmanager
def removed_if_unstarted(out: Path, enabled: bool = True) -> Iterator[None]:
    """On an exception in the block, before the run's first checkpoint: remove the run files the block
    created in ``out`` (a run with a checkpoint is kept for ``--resume``; other files are never touched)."""
    before = set(os.listdir(out))
    try:
        yield
    except BaseException:
        ckpts = out / CHECKPOINTS
        if enabled and not (ckpts.is_dir() and any(not p.name.endswith(".tmp") for p in ckpts.iterdir())):
            for name in RUN_FILES:
                p = out / name
                if name in before or not os.path.lexists(p):
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        raise


def check_json_output(path: str | os.PathLike, keys: tuple[str, ...], flag: str, force: bool = False) -> Path:
    """Refuse a JSON output path that exists and is not a JSON object with ``keys`` (what alexbench
    writes there), unless ``force``."""
    p = check_file_target(path, flag)
    if force or not os.path.lexists(p):
        return p
    try:
        data = json.loads(p.read_text(encoding="utf-8")) if p.is_file() and p.stat().st_size < 1 << 24 else None
    except (OSError, ValueError):
        data = None
    if not (isinstance(data, dict) and all(k in data for k in keys)):
        raise refuse_foreign(p, flag)
    return p


def _sha(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _read_manifest(folder: Path) -> dict[str, list[str]]:
    path = folder / MANIFEST
    if not path.is_file() or path.stat().st_size > 1 << 20:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _MANIFEST_FORMAT or not isinstance(data.get("files"), dict):
        return {}
    return {str(k): [str(h) for h in v] for k, v in data["files"].items() if isinstance(v, list)}


def _write_manifest(folder: Path, files: Mapping[str, list[str]]) -> None:
    atomic_write_json(folder / MANIFEST, {"format": _MANIFEST_FORMAT, "written_by": "alexbench",
                                          "files": dict(sorted(files.items()))})


def publish_folder(folder: Path, files: Mapping[str, bytes], *, flag: str, force: bool = False,
                   write: Callable[[Path, bytes], None] | None = None) -> None:
    """Make ``folder`` hold exactly ``files`` among those alexbench wrote there.

    Files listed in the manifest whose bytes are unchanged are alexbench's: they are replaced,
    and removed when no longer in ``files``. Any other existing file that ``files`` would
    replace is refused (``--force`` replaces it). Other files are never touched.
    The manifest lists old and new hashes while files are replaced, so a writer killed at any
    point leaves every file either untouched or provably alexbench's.
    """
    if os.path.lexists(folder) and not folder.is_dir():
        raise refuse_foreign(folder, flag, "the report's figures folder")
    ours = _read_manifest(folder)

    def owned(name: str) -> bool:
        return _sha(folder / name) in ours.get(name, ())

    new = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    if not force:
        for name in sorted(files):
            p = folder / name
            if os.path.lexists(p) and not owned(name):
                raise refuse_foreign(p, flag, "a figure of the report goes there")
    stale = [n for n in ours if n not in files and owned(n)]
    folder.mkdir(parents=True, exist_ok=True)
    _write_manifest(folder, {**{n: ours[n] for n in stale},
                             **{n: sorted(set(ours.get(n, [])) | {h}) for n, h in new.items()}})
    for name, data in files.items():
        if write is not None:
            write(folder / name, data)
        else:
            with atomic_path(folder / name) as tmp:
                tmp.write_bytes(data)
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    _write_manifest(folder, {n: [h] for n, h in new.items()})
