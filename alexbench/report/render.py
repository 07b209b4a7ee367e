"""Write the report: one self-contained HTML file and its Markdown twin.

- ``report.html``: every figure is a PNG embedded as a ``data:`` URI; the CSS is inline;
  there is no script, no web font and no external request. One file to mail or archive.
- ``report.md``: the same content as Markdown. Its figures are the same PNGs written
  as files into a sibling folder ``<stem>_files/`` (Markdown viewers such as GitHub do
  not show ``data:`` images), referenced by relative links.

Every file is written atomically, so the runner can rewrite the report at each epoch
end while someone has it open: a reader sees the previous report or the new one.
Figures of finished runs are cached in memory by file identity, so those rewrites
only redraw what changed (the learning curves).
"""

from __future__ import annotations

import base64
import datetime as _dt
import os
import re
import struct
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import jinja2
import numpy as np

from alexbench import __version__, rundir
from alexbench.atomic import atomic_path
from alexbench.errors import UserError
from alexbench.outputs import check_report_targets, publish_folder, unwritable
from alexbench.report import plots
from alexbench.report.compare import RunRecord, compare_runs, load_runs
from alexbench.report.formatting import FILTERS
from alexbench.stats import ALPHA

__all__ = ["write_report", "build_context"]

_TEMPLATES = Path(__file__).parent / "templates"


# ------------------------------------------------------------------------------------
# Figure cache: finished runs do not change, so their figures are drawn once per process.
# ------------------------------------------------------------------------------------

_CACHE: "OrderedDict[tuple, bytes]" = OrderedDict()
_CACHE_MAX = 64


def _file_id(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


def _cached(key: tuple, draw: Callable[[], bytes]) -> bytes:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    png = draw()
    _CACHE[key] = png
    while len(_CACHE) > _CACHE_MAX:
        _CACHE.popitem(last=False)
    return png


def _publish(path: Path, data: bytes) -> None:
    """Atomic write, readable by others (the report is meant to be shared or served)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)


def _png_size(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])  # IHDR: first chunk of every PNG
    return int(width), int(height)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "run"


class _Figures:
    """Collects PNGs: a data URI for the HTML, a file name for the Markdown."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def add(self, name: str, png: bytes, alt: str) -> dict[str, Any]:
        base, k = _slug(name), 2
        fname = base
        while fname in self.items:
            fname, k = f"{base}_{k}", k + 1
        w, h = _png_size(png)
        item = {"name": fname, "file": f"{fname}.png", "png": png, "alt": alt, "width": w, "height": h,
                "uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}
        self.items[fname] = item
        return item


# ------------------------------------------------------------------------------------
# Context
# ------------------------------------------------------------------------------------

def _class_name(classes: Sequence[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def _skipped_entry(d: dict[str, Any]) -> dict[str, Any]:
    pre = d.get("pretrained")
    return {"entry": str(d.get("entry") or f"{d.get('model', '?')}/{d.get('framework', '?')}"),
            "model": d.get("model", ""), "framework": d.get("framework", ""), "backend": d.get("backend"),
            "pretrained": "" if pre in (None, False) else str(pre),
            "status": str(d.get("status", "skipped")), "reason": str(d.get("reason") or "no reason given")}


def _datasets(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in runs:
        ds = r.dataset
        if not ds:
            continue
        key = str(ds.get("sha256") or ds.get("name"))
        item = seen.setdefault(key, {**ds, "runs": []})
        item["runs"].append(r.label)
    return list(seen.values())


def _banners(datasets: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    if any(d.get("embedded_sample") for d in datasets):
        out.append({"kind": "warn", "title": "Made from the small embedded sample, not full CIFAR-10.",
                    "text": "These numbers show that the pipeline works; they say little about the models. "
                            "Run with --data pointing at CIFAR-10 for real numbers."})
    if any("jpeg copy" in str(d.get("name", "")).lower() for d in datasets):
        out.append({"kind": "info", "title": "Accuracies are on the CIFAR-10 JPEG copy.",
                    "text": "The images were JPEG-compressed, so numbers can differ slightly from "
                            "results on the original CIFAR-10 files."})
    if len(datasets) > 1:
        out.append({"kind": "warn", "title": "The runs used different datasets.",
                    "text": "Accuracies of runs on different data are not comparable; pairwise tests "
                            "are only done within one dataset."})
    return out


def _headline(finished: Sequence[RunRecord], pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    if not finished:
        return {}
    best = max(finished, key=lambda r: r.accuracy or 0.0)
    by_label = {r.label: r for r in finished}
    framework_pairs = []
    for p in pairs:
        a, b = by_label[p["a"]], by_label[p["b"]]
        if a.model == b.model and a.init == b.init and a.seed == b.seed and a.framework_label != b.framework_label:
            framework_pairs.append({**p, "model": a.model, "init": a.init, "seed": a.seed,
                                    "fw_a": a.framework_label, "fw_b": b.framework_label})
    return {"best": best, "n_test": best.n_test, "framework_pairs": framework_pairs}


def _image_sections(runs: Sequence[RunRecord], colors: dict[str, str], figs: _Figures
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Grids of misclassified test images (per run) and of training samples (deduplicated)."""
    mis, train = [], []
    train_seen: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []
    for r in runs:
        pred = r.predictions
        if pred is None:
            continue
        classes = r.classes
        pid = _file_id(r.path / rundir.PREDICTIONS)
        imgs = pred.get("mis_images")
        if imgs is not None and len(imgs):
            none: list[int] = []
            t, p = pred.get("mis_true", none), pred.get("mis_pred", none)
            caps = [f"{_class_name(classes, int(a))}→{_class_name(classes, int(b))}" for a, b in zip(t, p)]
            png = _cached(("mis", pid, tuple(classes)), partial(plots.image_grid, imgs, caps, ["#a8232f"] * len(caps)))
            wrong = int(np.count_nonzero(pred["y_true"] != pred["y_pred"]))
            mis.append({"run": r, "color": colors[r.label], "shown": len(imgs), "wrong": wrong,
                        "n": int(pred["y_true"].size),
                        "fig": figs.add(f"misclassified {r.label}", png,
                                        f"misclassified test images of {r.label}, true→predicted")})
        timgs, tlab = pred.get("train_images"), pred.get("train_labels")
        if timgs is not None and len(timgs) and tlab is not None:
            for prev_imgs, prev_lab, item in train_seen:
                if (prev_imgs.shape == timgs.shape and np.array_equal(prev_imgs, timgs)
                        and np.array_equal(prev_lab, tlab)):
                    item["runs"].append(r)
                    break
            else:
                caps = [_class_name(classes, int(k)) for k in tlab]
                png = _cached(("train", pid, tuple(classes)), partial(plots.image_grid, timgs, caps))
                item = {"runs": [r], "fig": figs.add(f"training samples {r.label}", png,
                                                     f"training images as fed to {r.label}, with labels")}
                train_seen.append((timgs, tlab, item))
                train.append(item)
    return mis, train


def build_context(runs: Sequence[RunRecord], skipped: Sequence[dict[str, Any]] | None, title: str | None,
                  figs: _Figures) -> dict[str, Any]:
    """Everything the templates show, with figures registered in ``figs``."""
    cmp = compare_runs(runs) if runs else {"rows": [], "pairs": [], "not_compared": [], "groups": []}
    colors = dict(zip([r.label for r in runs], plots.run_colors(len(runs))))
    finished = [r for r in runs if r.finished]
    active = [r for r in runs if r.status in ("finished", "running")]
    stopped = [r for r in runs if r.status not in ("finished", "running")]
    skipped_rows = [_skipped_entry(d) for d in (skipped or [])]
    skipped_rows += [{"entry": r.label, "model": r.model, "framework": r.framework, "backend": r.backend,
                      "pretrained": r.pretrained or "",
                      "status": r.status, "reason": str((r.state or {}).get("reason") or "no reason given")}
                     for r in stopped]

    rows = []
    best_acc = max((r.accuracy for r in finished if r.accuracy is not None), default=None)
    for row, r in zip(cmp["rows"], runs):
        rows.append({**row, "color": colors[r.label], "run": r,
                     "is_best": best_acc is not None and r.accuracy == best_acc and len(finished) > 1})

    with_curve = [r for r in runs if r.curve]
    series = [(r.label, colors[r.label], r.curve) for r in with_curve]
    curves = {}
    if series:
        curves["epoch"] = figs.add("curves per epoch", plots.learning_curves(series, "epoch"),
                                   "learning curves: accuracy and loss per epoch, all runs")
        if any(row.get("elapsed_seconds") for _, _, rows_ in series for row in rows_):
            curves["time"] = figs.add("curves per time", plots.learning_curves(series, "time"),
                                      "learning curves: accuracy and loss per wall-clock time, all runs")
        res_series = [(r.label, colors[r.label], r.resources,
                       int(((r.metrics or {}).get("system") or {}).get("cores") or os.cpu_count() or 1))
                      for r in runs if r.resources]
        if res_series:
            curves["resources"] = figs.add("resources per time", plots.resource_curves(res_series),
                                           "CPU, memory and GPU use per wall-clock time, all runs")

    overview = None
    scored = [r for r in finished if r.accuracy is not None and r.accuracy_ci95]
    if scored:
        key = ("overview",) + tuple((r.label, colors[r.label], _file_id(r.path / rundir.METRICS)) for r in scored)
        png = _cached(key, lambda: plots.accuracy_overview([r.label for r in scored],
                                                           [colors[r.label] for r in scored],
                                                           [r.accuracy for r in scored if r.accuracy is not None],
                                                           [r.accuracy_ci95 for r in scored if r.accuracy_ci95]))
        overview = figs.add("accuracy overview", png, "test accuracy of each finished run with its 95% interval")

    per_class = None
    pc_runs = [r for r in finished if r.test.get("per_class_accuracy")]
    if pc_runs:
        classes = pc_runs[0].classes or list(pc_runs[0].test["per_class_accuracy"])
        table = [{"cls": c, "values": [r.test["per_class_accuracy"].get(c) for r in pc_runs]} for c in classes]
        key = ("per_class",) + tuple((r.label, colors[r.label], _file_id(r.path / rundir.METRICS)) for r in pc_runs)
        png = _cached(key, lambda: plots.per_class_bars(
            classes, [(r.label, colors[r.label], [r.test["per_class_accuracy"].get(c) for c in classes])
                      for r in pc_runs]))
        per_class = {"runs": pc_runs, "classes": classes, "table": table,
                     "fig": figs.add("per class accuracy", png, "per-class test accuracy, one bar per run")}

    confusions = []
    for r in finished:
        cm = r.test.get("confusion_matrix")
        if not cm:
            continue
        classes = r.classes or [str(i) for i in range(len(cm))]
        png = _cached(("cm", _file_id(r.path / rundir.METRICS), colors[r.label], r.label),
                      partial(plots.confusion_matrix, cm, classes, r.label, colors[r.label]))
        confusions.append({"run": r, "color": colors[r.label],
                           "fig": figs.add(f"confusion {r.label}", png,
                                           f"confusion matrix of {r.label}, normalised per true class")})

    misclassified, train_samples = _image_sections(finished, colors, figs)
    datasets = _datasets(runs)
    systems = [{"run": r, "color": colors[r.label], "sys": (r.metrics or {}).get("system") or {},
                "m": r.metrics or {}} for r in finished]
    n_running = sum(r.status == "running" for r in runs)
    return {
        "title": title or "alexbench report",
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "runs": runs, "active": active, "finished": finished, "colors": colors,
        "n_running": n_running, "running": [r for r in runs if r.status == "running"],
        "rows": rows, "groups": cmp["groups"], "pairs": cmp["pairs"], "not_compared": cmp["not_compared"],
        "skipped": skipped_rows, "headline": _headline(finished, cmp["pairs"]),
        "datasets": datasets, "banners": _banners(datasets),
        "curves": curves, "overview": overview, "per_class": per_class, "confusions": confusions,
        "misclassified": misclassified, "train_samples": train_samples, "systems": systems,
        "alpha": ALPHA, "notes": [(r.label, n) for r in runs for n in r.notes],
    }


# ------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------

def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"),
                                                                 default_for_string=False),
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(FILTERS)
    return env


def write_report(run_dirs: Sequence[str | os.PathLike | RunRecord], html_path: str | os.PathLike, *,
                 title: str | None = None, skipped: Sequence[dict[str, Any]] | None = None,
                 force: bool = False) -> tuple[Path, Path]:
    """Write ``html_path`` (self-contained HTML) and its Markdown twin ``<stem>.md``.

    ``run_dirs`` are run folders (finished or in progress) or a folder of run folders;
    ``skipped`` lists entries that did not run, as dicts with ``entry``, ``model``,
    ``framework``, ``pretrained`` and ``reason``. The Markdown's figures go to
    ``<stem>_files/``. Returns ``(html_path, md_path)``. An existing file that alexbench did
    not write is refused (see :mod:`alexbench.outputs`) unless ``force``.
    """
    html_out = Path(html_path)
    if html_out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"{html_out}: the report file name must end in .html")
    md_out, files_dir = check_report_targets(html_out, force=force)
    runs = load_runs(run_dirs, allow_incomplete=True)
    if not runs and not skipped:
        raise UserError("report: no run folders given")
    figs = _Figures()
    ctx = build_context(runs, skipped, title, figs)
    env = _environment()
    html = env.get_template("report.html.j2").render(**ctx, fig_src=lambda f: f["uri"])
    md = env.get_template("report.md.j2").render(**ctx, fig_src=lambda f: f"{files_dir.name}/{f['file']}")

    try:
        publish_folder(files_dir, {item["file"]: item["png"] for item in figs.items.values()}, flag="-o",
                       force=force, write=_publish)
    except OSError as exc:
        raise unwritable(files_dir, "-o", exc) from None
    _publish(md_out, md.encode("utf-8"))
    _publish(html_out, html.encode("utf-8"))
    return html_out, md_out

