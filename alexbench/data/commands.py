"""``alexbench data [SOURCE] [--verify] [--download]``: locate, verify, cache, and describe a dataset."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from alexbench.data.sources import load_dataset_info

__all__ = ["data_command", "summary_rows"]


def summary_rows(classes: list[str], y_train: np.ndarray, y_test: np.ndarray) -> list[tuple[str, int, int]]:
    """(class, train count, test count) per class, then a ``total`` row."""
    n = len(classes)
    tr = np.bincount(y_train, minlength=n)
    te = np.bincount(y_test, minlength=n)
    rows = [(c, int(tr[i]), int(te[i])) for i, c in enumerate(classes)]
    rows.append(("total", int(len(y_train)), int(len(y_test))))
    return rows


def _use_rich() -> bool:
    if not sys.stdout.isatty():
        return False
    try:
        import rich  # noqa: F401
    except ImportError:  # pragma: no cover - rich is a dependency
        return False
    return True


def data_command(args: argparse.Namespace) -> int:
    """Print source, format, sha256, image shape/dtype, counts per split and class, and the cache."""
    info = load_dataset_info(args.source, verify=bool(getattr(args, "verify", False)),
                             download=bool(getattr(args, "download", False)))
    ds = info.dataset
    h, w, c = ds.image_shape
    fields: list[tuple[str, str]] = [
        ("dataset", ds.name + ("  [SMALL EMBEDDED SAMPLE, not full CIFAR-10]" if ds.embedded else "")),
        ("source", f"{ds.source} ({info.found_by})"),
        ("format", ds.format),
        ("sha256", ds.sha256),
        ("images", f"{h}x{w}x{c} {ds.x_train.dtype} (NHWC), {len(ds.classes)} classes"),
        ("cache", f"{ds.cache_path or 'not written'}"
                  f" ({'served from cache' if info.cache_hit else 'decoded now'}, {info.seconds:.2f} s)"),
    ]
    v = info.verify
    if v:
        parts = [f"sha256 recomputed; {v.get('images_decoded', 0):,} images decoded"]
        if "md5_official" in v:
            parts.append(f"MD5 {v['md5']} {'matches' if v['md5_official'] else 'does NOT match'} the official one")
        if "sample_sha256_matches" in v:
            parts.append("sample sha256 matches the package's record")
        if "cache_matched" in v:
            parts.append("cache matched the source" if v["cache_matched"]
                         else "cache differed from the source and was rewritten")
        fields.append(("verify", "; ".join(parts)))
    rows = summary_rows(ds.classes, ds.y_train, ds.y_test)
    if _use_rich():
        _print_rich(fields, rows, ds.notes)
    else:
        _print_plain(fields, rows, ds.notes)
    return 0


def _print_plain(fields: list[tuple[str, str]], rows: list[tuple[str, int, int]], notes: list[str]) -> None:
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        print(f"{key + ':':<{width + 1}} {value}")
    cw = max(max(len(r[0]) for r in rows), len("class"))
    print()
    print(f"{'class':<{cw}}  {'train':>8}  {'test':>8}")
    for name, tr, te in rows:
        if name == "total":
            print("-" * (cw + 20))
        print(f"{name:<{cw}}  {tr:>8,}  {te:>8,}")
    for note in notes:
        print(f"note: {note}")


def _print_rich(fields: list[tuple[str, str]], rows: list[tuple[str, int, int]], notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for key, value in fields:
        console.print(f"[bold]{key}:[/bold] {value}", highlight=False, markup=True, soft_wrap=True)
    table = Table(show_footer=True)
    total: Any = rows[-1]
    table.add_column("class", footer="total")
    table.add_column("train", justify="right", footer=f"{total[1]:,}")
    table.add_column("test", justify="right", footer=f"{total[2]:,}")
    for name, tr, te in rows[:-1]:
        table.add_row(name, f"{tr:,}", f"{te:,}")
    console.print(table)
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
