"""How the report and the comparison table write numbers: percentages, intervals, durations, p-values.

Every function takes what a run folder may hold (a number, None, NaN, text) and returns
text, with an en dash for a missing value. They are the report templates' Jinja filters
(:data:`FILTERS`) and the terminal table's formatters.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import markupsafe

__all__ = ["FILTERS", "fmt_pct", "fmt_ci", "fmt_points", "fmt_count", "fmt_pflop", "fmt_duration", "fmt_p",
           "fmt_p_phrase", "fmt_bytes", "fmt_int", "fmt_framework", "html_wbr", "md_cell"]

_FRAMEWORK_NAMES = {"torch": "PyTorch", "keras": "Keras", "tensorflow": "TensorFlow"}


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except Exception:  # noqa: BLE001 - None, text, or a jinja2 Undefined for a key a run did not record
        return None
    return None if math.isnan(v) else v


def fmt_pct(x: Any, digits: int = 1) -> str:
    v = _num(x)
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def fmt_ci(ci: Sequence[float] | None) -> str:
    if not ci:
        return ""
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}%"


def fmt_points(x: Any) -> str:
    """A difference of accuracies in percentage points, signed."""
    v = _num(x)
    return "–" if v is None else f"{100 * v:+.1f}".replace("-", "−")


def fmt_count(x: Any) -> str:
    """61100000 -> '61.1 M'."""
    v = _num(x)
    if v is None:
        return "–"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g} {unit}"
    return f"{v:.0f}"


def fmt_pflop(x: Any) -> str:
    """4.63e14 FLOPs -> '0.463' (PFLOP, training compute of a run)."""
    v = _num(x)
    if v is None:
        return "–"
    return f"{v / 1e15:.3g}"


def fmt_duration(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "–"
    s = int(round(v))
    if v < 60:
        return f"{v:.1f}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def fmt_p(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "–"
    if v < 1e-4:
        return "< 0.0001"
    return f"{v:.4f}" if v < 0.01 else f"{v:.3f}"


def fmt_p_phrase(x: Any) -> str:
    """'p = 0.285' or 'p < 0.0001', for running text."""
    text = fmt_p(x)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_bytes(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "–"
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= div:
            return f"{v / div:.1f} {unit}"
    return f"{v:.0f} B"


def fmt_int(x: Any) -> str:
    v = _num(x)
    return "–" if v is None else f"{v:,.0f}"


def fmt_framework(fw: str, backend: str | None = None) -> str:
    """``PyTorch``, ``Keras (TensorFlow)``, ``Keras (JAX)`` or ``Keras (torch)``."""
    from alexbench import rundir

    return rundir.framework_label(fw, backend) if fw in ("torch", "keras") else _FRAMEWORK_NAMES.get(fw, fw)


def html_wbr(text: Any) -> markupsafe.Markup:
    """Escaped text with line-break opportunities after each '/', for long run labels."""
    return markupsafe.escape(str(text)).replace("/", markupsafe.Markup("/<wbr>"))


def md_cell(x: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(x).replace("|", "\\|").replace("\n", " ")


#: the templates' filter names
FILTERS = {"pct": fmt_pct, "ci": fmt_ci, "points": fmt_points, "human": fmt_count, "pflop": fmt_pflop,
           "duration": fmt_duration, "p": fmt_p, "p_phrase": fmt_p_phrase, "bytes": fmt_bytes, "thousands": fmt_int,
           "framework": fmt_framework, "md": md_cell, "wbr": html_wbr}
