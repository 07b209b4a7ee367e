"""Evaluation metrics, identical for both engines because both call this one function.

Per-class figures come from the whole test set (never per batch), through
scikit-learn; the accuracy interval is Wilson's (:mod:`alexbench.stats`, through SciPy).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from alexbench.stats import per_class_from_confusion, wilson_interval


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str], loss: float) -> dict:
    """The ``test`` block of metrics.json from true labels and class probabilities."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(classes)
    labels = np.arange(n_classes)
    y_pred = probs.argmax(1)
    n = len(y_true)
    correct = int((y_pred == y_true).sum())
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    per_class = per_class_from_confusion(cm)
    prec, rec, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    k = min(5, n_classes)
    # Top-k hit: fewer than k classes score strictly higher than the true one. Ties count in the true
    # class's favour, as arg-max does (scikit-learn's top_k_accuracy_score may drop a tied arg-max
    # from its top k, giving top-5 < top-1 on ties).
    hits = (probs > probs[np.arange(n), y_true][:, None]).sum(1) < k
    top5 = float(hits.mean()) if n else 0.0
    return {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci95": list(wilson_interval(correct, n)),
        "loss": float(loss),
        "per_class_accuracy": {c: float(v) if np.isfinite(v) else None for c, v in zip(classes, per_class)},
        "precision": {c: float(v) for c, v in zip(classes, prec)},
        "recall": {c: float(v) for c, v in zip(classes, rec)},
        "f1": {c: float(v) for c, v in zip(classes, f1)},
        "macro_f1": float(np.mean(f1)),
        "confusion_matrix": cm.astype(int).tolist(),
        "top5_accuracy": top5,
    }
