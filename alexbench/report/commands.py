"""``alexbench compare`` and ``alexbench report``: thin wrappers that parse nothing and print."""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from typing import Any, Sequence, TextIO

from alexbench.report.compare import compare
from alexbench.report.formatting import (
    fmt_ci,
    fmt_count,
    fmt_duration,
    fmt_framework,
    fmt_int,
    fmt_p,
    fmt_pct,
    fmt_pflop,
    fmt_points,
)
from alexbench.report.render import write_report

__all__ = ["compare_command", "report_command", "print_comparison", "format_tables", "embedded_note", "use_rich"]


def use_rich(stream: TextIO) -> bool:
    """Colour tables only for a person at a terminal: not in pipes, files, CI or with NO_COLOR."""
    if os.environ.get("CI") or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], set[int]]]:
    """(title, header, rows, right-aligned column indexes) for each table to print."""
    out = []
    header = ["run", "model", "framework", "weights", "params", "FLOPs", "train PFLOP", "epochs", "train time", "img/s",
              "test acc", "95% CI", "macro-F1", "best ep.", "status"]
    rows = []
    for r in result["rows"]:
        cut_short = r["epochs_total"] and r["epochs_total"] != r["epochs"]
        epochs = str(r["epochs"]) + (f"/{r['epochs_total']}" if cut_short else "")
        rows.append([r["entry"], r["model"], fmt_framework(r["framework"], r.get("backend")), r["init"],
                     fmt_count(r["params_total"]), fmt_count(r["flops_per_image"]), fmt_pflop(r.get("train_flops")),
                     epochs, fmt_duration(r["train_seconds"]),
                     fmt_int(r["images_per_second"]), fmt_pct(r["test_accuracy"]), fmt_ci(r["accuracy_ci95"]) or "–",
                     fmt_pct(r["macro_f1"]), "–" if r["best_epoch"] is None else str(r["best_epoch"]), r["progress"]])
    out.append(("Comparison", header, rows, {4, 5, 6, 7, 8, 9, 10, 11, 12, 13}))
    if result["groups"]:
        g_rows = [[g["label"], str(g["n"]), f"{fmt_pct(g['accuracy_mean'])} ± {fmt_pct(g['accuracy_std'])}",
                   f"{fmt_pct(g['macro_f1_mean'])} ± {fmt_pct(g['macro_f1_std'])}",
                   f"{fmt_duration(g['train_seconds_mean'])} ± {fmt_duration(g['train_seconds_std'])}"]
                  for g in result["groups"]]
        out.append(("Mean ± std over seeds (sample std)", ["entry", "seeds", "test acc", "macro-F1", "train time"],
                    g_rows, {1, 2, 3, 4}))
    if result["pairs"]:
        p_rows = [[p["a"], p["b"], fmt_points(p["diff"]),
                   f"{fmt_points(p['diff_ci95'][0])} to {fmt_points(p['diff_ci95'][1])}",
                   str(p["only_a_right"]), str(p["only_b_right"]), fmt_p(p["p_value"]), p["verdict"]]
                  for p in result["pairs"]]
        out.append(("Pairs on the same test set: exact McNemar test, alpha 0.05",
                    ["A", "B", "A−B (pts)", "95% CI (Newcombe)", "only A right", "only B right", "p", "verdict"],
                    p_rows, {2, 3, 4, 5, 6}))
    return out


def embedded_note(result: dict[str, Any]) -> str | None:
    """The line every comparison prints when a run used the embedded sample."""
    runs = result.get("embedded_sample") or []
    if not runs:
        return None
    which = "all runs" if len(runs) == len(result["rows"]) else ", ".join(runs)
    return (f"note: {which}: trained and tested on the small embedded CIFAR-10 sample, not full CIFAR-10; "
            "the accuracies are indicative only (pass --data with CIFAR-10 for real numbers)")


def _aligned(cells: Sequence[str], widths: Sequence[int], right: set[int]) -> str:
    """One table line: each cell padded to its column's width, right-aligned in the columns of ``right``."""
    return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                     for i, (c, w) in enumerate(zip(cells, widths))).rstrip()


def format_tables(result: dict[str, Any]) -> str:
    """Plain aligned text of every table, no colour codes (pipes, files, CI)."""
    parts = []
    for title, header, rows, right in _tables(result):
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        line = partial(_aligned, widths=widths, right=right)
        parts.append("\n".join([title, line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]))
    for n in result["not_compared"]:
        parts.append(f"not compared: {n['a']} vs {n['b']}: {n['reason']}")
    note = embedded_note(result)
    if note:
        parts.append(note)
    return "\n\n".join(parts) + "\n"


def _print_rich(result: dict[str, Any], stream: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream)
    for title, header, rows, right in _tables(result):
        table = Table(title=title, title_justify="left", header_style="bold")
        for i, h in enumerate(header):
            # run labels stay whole; the numbers squeeze on narrow terminals
            table.add_column(h, justify="right" if i in right else "left", no_wrap=i == 0 or h in ("A", "B"))
        for r in rows:
            cells = list(r)
            if "verdict" in header:
                v = cells[-1]
                cells[-1] = f"[red]{v}[/red]" if v == "significant" else f"[green]{v}[/green]"
            table.add_row(*cells)
        console.print(table)
    for n in result["not_compared"]:
        console.print(f"[dim]not compared: {n['a']} vs {n['b']}: {n['reason']}[/dim]")
    note = embedded_note(result)
    if note:
        console.print(f"[yellow]{note}[/yellow]", highlight=False, markup=True, soft_wrap=True)


def print_comparison(run_dirs: Sequence[Any], stream: TextIO | None = None) -> dict[str, Any]:
    """Compare runs and print the tables: rich on a terminal, plain aligned text otherwise.

    Returns the :func:`~alexbench.report.compare.compare` result. ``alexbench run`` calls
    this at the end with its finished runs.
    """
    out = stream if stream is not None else sys.stdout
    result = compare(run_dirs)
    if use_rich(out):
        _print_rich(result, out)
    else:
        out.write(format_tables(result))
    return result


def compare_command(args: argparse.Namespace) -> int:
    """``alexbench compare RUN...``: print the comparison table and the pairwise tests."""
    print_comparison(args.runs)
    return 0


def report_command(args: argparse.Namespace) -> int:
    """``alexbench report RUN... -o FILE.html``: write the HTML report and its Markdown twin."""
    html, md = write_report(args.runs, args.output, force=getattr(args, "force", False))
    print(html)
    print(md)
    return 0
