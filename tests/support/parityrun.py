"""``check_backends`` in a process of its own, keeping what it compared.

usage: python -m support.parityrun OUT MODEL BACKENDS BATCH   (BACKENDS comma-separated; tests/ on PYTHONPATH)

Runs :func:`alexbench.models.parity.check_backends` (one child process per backend, as
``alexbench parity --keras-backends`` does) and writes OUT/results.json (its return value),
OUT/gathered.json and OUT/gathered.npz: the arguments it passed to
:func:`~alexbench.models.parity.compare_backends` (the native torch logits, each backend's
logits, each backend's own check), so a test can rerun the verdict on altered references.
:func:`load_gathered` reads them back as those arguments.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from alexbench.models import parity


def _recording(out: Path):  # a compare_backends with the same signature
    real = parity.compare_backends

    def compare(items, refs, logits, own, backends, num_classes, batch, seed):
        arrays = {f"ref/{vid}": a for vid, a in refs.items()}
        arrays.update({f"logits/{vid}/{b}": a for vid, per in logits.items() for b, a in per.items()})
        np.savez(out / "gathered.npz", **arrays)
        (out / "gathered.json").write_text(json.dumps({
            "items": items, "own": own, "backends": backends, "num_classes": num_classes, "batch": batch,
            "seed": seed}))
        return real(items, refs, logits, own, backends, num_classes, batch, seed)

    return compare


def load_gathered(out: Path) -> dict[str, Any]:
    """compare_backends's keyword arguments as the run passed them."""
    kw = json.loads((out / "gathered.json").read_text())
    refs: dict[str, np.ndarray] = {}
    logits: dict[str, dict[str, np.ndarray]] = {it["id"]: {} for it in kw["items"]}
    with np.load(out / "gathered.npz", allow_pickle=False) as z:
        for key in z.files:
            kind, rest = key.split("/", 1)
            if kind == "ref":
                refs[rest] = z[key]
            else:
                vid, backend = rest.rsplit("/", 1)
                logits[vid][backend] = z[key]
    return {**kw, "refs": refs, "logits": logits}


def main(argv: list[str]) -> int:
    out, model, backends, batch = Path(argv[0]), argv[1], argv[2].split(","), int(argv[3])
    parity.compare_backends = _recording(out)
    results = parity.check_backends([model], backends, batch=batch)
    (out / "results.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
