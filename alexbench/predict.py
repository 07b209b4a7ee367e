"""``alexbench predict``: the top-k classes of a trained model for your own images.

The model is a run folder, a checkpoint or an ONNX file from ``alexbench export``;
all three carry their class names and the run's preprocessing (see
:mod:`alexbench.inference`). Each image (any format and mode PIL reads) is decoded to
8-bit RGB, resized to the training images' size as the data loader does, normalised
and resized as in training, and evaluated as the run evaluated its test set (with
the mirror image when the run used ``tta_flip``).

Output: one line per image, or with ``--json`` a JSON list with one object per image,
``{"image": PATH, "top": [{"class": NAME, "probability": P}, ...]}`` (a contract).
An image that cannot be read is reported on stderr, one line each; the exit code is 2
when no image could be read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from alexbench.errors import UserError
from alexbench.log import get_logger

__all__ = ["predict", "predict_command", "collect_images"]

log = get_logger(__name__)


def collect_images(paths: Iterable[str]) -> list[Path]:
    """Files as given; folders expanded to the image files in them (recursively, sorted, hidden ones skipped)."""
    from alexbench.data.archive import is_image_name

    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(root) / f for f in sorted(files) if is_image_name(f)]
            if not found:
                log.warning(f"{p}: no image files in this folder")
            out += found
        else:
            out.append(p)  # given by name: try it whatever its extension, report it if unreadable
    return out


def predict(target: str, images: Iterable[str], top: int = 5) -> tuple[list[dict], list[str]]:
    """``([{"image", "top": [{"class", "probability"}]}, ...], [error line per unreadable image])``."""
    from alexbench.inference import load_predictor
    from alexbench.preprocess import load_image

    if top < 1:
        raise UserError(f"--top: must be at least 1 (got {top})")
    files = collect_images(images)
    if not files:
        raise UserError("no images given (pass image files or folders)")
    pred = load_predictor(target)
    ok: list[tuple[Path, np.ndarray]] = []
    errors: list[str] = []
    for f in files:
        try:
            ok.append((f, pred.pre.fit_image(load_image(f))))
        except UserError as exc:
            errors.append(str(exc))
    results: list[dict] = []
    if ok:
        probs = pred.probabilities(np.stack([a for _, a in ok]))
        k = min(top, probs.shape[1])
        for (f, _), p in zip(ok, probs):
            order = np.argsort(-p, kind="stable")[:k]
            results.append({"image": str(f), "top": [{"class": pred.classes[i], "probability": float(p[i])}
                                                     for i in order]})
    return results, errors


def predict_command(args) -> int:  # noqa: ANN001 - argparse namespace
    results, errors = predict(args.target, args.images, args.top)
    for e in errors:
        log.error(f"alexbench predict: {e}")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        width = max((len(r["image"]) for r in results), default=0)
        for r in results:
            tops = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
            print(f"{r['image']:<{width}}  {tops}")
    if not results:
        log.error(f"alexbench predict: none of the {len(errors)} image(s) could be read")
        return 2
    return 0
