"""Build the embedded CIFAR-10 sample shipped in ``alexbench/data/sample/``.

Run from the repository root (a maintainer's step; users never need it)::

    .venv/bin/python tools/make_sample.py ../shared/data/cifar10-jpeg.tar.gz

It takes a stratified, deterministic subset of the JPEG copy of CIFAR-10: for every
class, ``--train`` (default 500) train and ``--test`` (default 100) test images, chosen
with a seeded ``numpy`` generator and kept in file order. The JPEG bytes are copied as
they are (not re-encoded). It writes, in the image-folder layout
(``cifar10-sample/{train,test}/<class>/NNNN.jpg``):

- ``alexbench/data/sample/cifar10-sample.tar.gz``, byte-for-byte reproducible (fixed
  member order, mtimes, owners and gzip header), at most 5 MB; if the defaults give a
  larger file it falls back to 400/80 per class, and fails if that is still too big;
- ``alexbench/data/sample/cifar10-sample.sha256``, which ``alexbench data --verify``
  (and every load of the sample) checks.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

import numpy as np

from alexbench.data import CIFAR10_CLASSES
from alexbench.data.archive import is_image_name, iter_tar

MAX_BYTES = 5_000_000
OUT_DIR = Path(__file__).resolve().parent.parent / "alexbench" / "data" / "sample"
TOP = "cifar10-sample"


def read_jpeg_copy(source: Path) -> dict[tuple[str, str], list[tuple[str, bytes]]]:
    """(split, class) -> [(file name, bytes)] in natural file order, from the JPEG copy."""
    groups: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    for entry in iter_tar(source, want=is_image_name):
        parts = entry.name.split("/")
        if entry.data is None or len(parts) < 3 or parts[-3] not in ("train", "test"):
            continue
        groups.setdefault((parts[-3], parts[-2]), []).append((parts[-1], entry.data))
    for items in groups.values():
        items.sort()
    return groups


def choose(groups: dict[tuple[str, str], list[tuple[str, bytes]]], n_train: int, n_test: int,
           seed: int) -> list[tuple[str, bytes]]:
    """Archive members (name, bytes) of the subset, in a fixed order."""
    rng = np.random.default_rng(seed)
    members: list[tuple[str, bytes]] = []
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in CIFAR10_CLASSES:
            items = groups.get((split, cls), [])
            if len(items) < n:
                raise SystemExit(f"make_sample: {split}/{cls}: only {len(items)} images, {n} wanted")
            picks = np.sort(rng.choice(len(items), size=n, replace=False))
            members += [(f"{TOP}/{split}/{cls}/{items[i][0]}", items[i][1]) for i in picks]
    return members


def write_tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    """A reproducible .tar.gz: folders first, fixed metadata, gzip header without mtime/name."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        folders = sorted({"/".join(name.split("/")[:i]) for name, _ in members for i in (1, 2, 3)})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tf.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tf.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/make_sample.py", description=__doc__.split("\n")[0])
    p.add_argument("source", type=Path, help="the JPEG copy, e.g. ../shared/data/cifar10-jpeg.tar.gz")
    p.add_argument("--train", type=int, default=500, help="train images per class (default 500)")
    p.add_argument("--test", type=int, default=100, help="test images per class (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = p.parse_args(argv)

    groups = read_jpeg_copy(args.source)
    data = write_tar_gz(choose(groups, args.train, args.test, args.seed))
    if len(data) > MAX_BYTES and (args.train, args.test) == (500, 100):
        print(f"make_sample: {len(data):,} bytes with 500/100 per class is over {MAX_BYTES:,}; using 400/80",
              file=sys.stderr)
        args.train, args.test = 400, 80
        data = write_tar_gz(choose(groups, args.train, args.test, args.seed))
    if len(data) > MAX_BYTES:
        raise SystemExit(f"make_sample: {len(data):,} bytes is over the {MAX_BYTES:,}-byte limit")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / "cifar10-sample.tar.gz"
    out.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    (args.out_dir / "cifar10-sample.sha256").write_text(f"{sha}  {out.name}\n")
    print(f"wrote {out} ({len(data):,} bytes; {args.train}+{args.test} images per class; sha256 {sha})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
