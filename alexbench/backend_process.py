"""One training run in a child process, for a Keras backend this process cannot switch to.

Keras reads ``KERAS_BACKEND`` once, when it is first imported. A process that already
runs Keras on TensorFlow therefore cannot train on JAX or torch: :func:`train_in_child`
starts ``python -m alexbench.backend_process SPEC`` with ``KERAS_BACKEND`` set, hands it
the resolved config and the already-loaded dataset through files in a temporary folder
(a JSON spec and an uncompressed ``.npz``), and waits. The child is an ordinary
:func:`alexbench.train.train` call: it writes the same run folder, takes the run's lock,
and resumes the same way. While it runs, the parent calls ``on_epoch_end`` for each new
row of ``history.csv`` (so ``alexbench run`` refreshes its report). A user error in the
child comes back as the same exception type and message; Ctrl-C is passed on (the child
checkpoints and stops), and the child dies with its parent (Linux).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from alexbench import rundir
from alexbench.config import TrainConfig, load_yaml, validate
from alexbench.errors import TrainingDiverged, UserError
from alexbench.frameworks import can_use_keras_backend, check_keras_backend

__all__ = ["run_config", "needs_child", "train_in_child", "main"]

_CHILD_ENV = "ALEXBENCH_BACKEND_CHILD"
_POLL_SECONDS = 1.0
_DATASET_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def run_config(cfg: TrainConfig | None, out: Path, resume: bool) -> TrainConfig | None:
    """The config the run will train with: a resumed run keeps the one saved in its folder."""
    saved = out / rundir.CONFIG
    if resume and saved.is_file():
        return validate(load_yaml(saved), str(saved))
    return cfg


def needs_child(cfg: TrainConfig) -> bool:
    """True for a Keras run on a backend other than the one Keras already runs on here.

    Also refuses an unknown backend or one whose library is missing (one clear line, exit 2).
    """
    if cfg is None or cfg.framework != "keras":
        return False
    check_keras_backend(cfg.keras_backend)
    if can_use_keras_backend(cfg.keras_backend):
        return False
    if os.environ.get(_CHILD_ENV):  # pragma: no cover - a fresh child can always choose its backend
        raise UserError(f"keras_backend: {cfg.keras_backend!r} cannot be used in this process")
    return True


def _write_dataset(ds, path: Path) -> None:  # noqa: ANN001 - alexbench.data.Dataset
    meta = {k: getattr(ds, k) for k in ("name", "source", "format", "sha256", "classes", "embedded",
                                        "cache_path", "notes")}
    with open(path, "wb") as fh:
        np.savez(fh, meta_json=np.array(json.dumps(meta)), **{k: getattr(ds, k) for k in _DATASET_ARRAYS})


def _read_dataset(path: Path):  # noqa: ANN202 - alexbench.data.Dataset
    from alexbench.data import Dataset

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta_json"]))
        arrays = {k: data[k] for k in _DATASET_ARRAYS}
    return Dataset(**meta, **arrays)


def _new_rows(history: Path, seen: int) -> list[dict]:
    """Rows of history.csv after the first ``seen`` (a half-written last line is left for the next look)."""
    try:
        return rundir.read_history(history)[seen:]
    except UserError:
        return []


def _verbosity() -> int | None:
    """This process's CLI verbosity, for the child to log the same way (None: logging not configured here)."""
    from alexbench import log

    logger = log.get_logger()
    if not logger.handlers:
        return None
    level = logger.getEffectiveLevel()
    return next((v for v in (log.VERBOSE, log.NORMAL, log.QUIET) if log.verbosity_level(v) >= level), log.QUIET)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def train_in_child(cfg: TrainConfig, out: Path, *, data=None, resume: bool = False,  # noqa: ANN001
                   on_epoch_end: Callable[[Path, dict], None] | None = None, quiet: bool = False,
                   force: bool = False) -> dict:
    """Run :func:`alexbench.train.train` for ``cfg`` in a child process on ``cfg.keras_backend``."""
    from alexbench.data import Dataset, load_dataset

    ds = data if isinstance(data, Dataset) else load_dataset(data)
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "KERAS_BACKEND": cfg.keras_backend, _CHILD_ENV: "1",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory(prefix="alexbench-backend-") as tmp:
        spec: dict[str, Any] = {"config": cfg.model_dump(mode="json"), "out": str(out), "resume": resume,
                                "quiet": quiet, "force": force, "verbosity": _verbosity(),
                                "dataset": str(Path(tmp) / "dataset.npz"), "result": str(Path(tmp) / "result.json")}
        _write_dataset(ds, Path(spec["dataset"]))
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "alexbench.backend_process", str(Path(tmp) / "spec.json")]
        history = out / rundir.HISTORY
        seen = len(_new_rows(history, 0))
        # a session of its own: a Ctrl-C at the terminal reaches only this process, which passes it on once
        proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            while True:
                try:
                    proc.wait(timeout=_POLL_SECONDS)
                    done = True
                except subprocess.TimeoutExpired:
                    done = False
                rows = _new_rows(history, seen)
                seen += len(rows)
                if on_epoch_end is not None:
                    for row in rows:
                        on_epoch_end(out, row)
                if done:
                    break
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # the child checkpoints and stops (it may have had one already)
            proc.wait()
            raise
        result = json.loads(Path(spec["result"]).read_text()) if Path(spec["result"]).is_file() else {}
    if proc.returncode == 0:
        return rundir.read_json(out / rundir.METRICS)
    if proc.returncode == 130:
        raise KeyboardInterrupt
    if result.get("error"):
        from alexbench.models import WeightsUnavailable

        kinds = {"TrainingDiverged": TrainingDiverged, "WeightsUnavailable": WeightsUnavailable}
        raise kinds.get(result["error"], UserError)(result["message"])
    raise RuntimeError(f"the Keras ({cfg.keras_backend}) training process for {out} ended with exit code "
                       f"{proc.returncode}; see {out / rundir.LOG}")


def main(argv: list[str] | None = None) -> int:
    """Child side: ``python -m alexbench.backend_process SPEC.json``."""
    from alexbench.train import train

    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    if spec.get("verbosity") is not None:
        from alexbench.log import configure

        configure(spec["verbosity"])
    result: dict = {}
    try:
        cfg = validate(spec["config"], "config")
        train(cfg, spec["out"], data=_read_dataset(Path(spec["dataset"])), resume=spec["resume"],
              quiet=spec["quiet"], force=spec["force"])
        rc = 0
    except UserError as exc:
        result = {"error": type(exc).__name__, "message": str(exc)}
        rc = 2
    except KeyboardInterrupt:
        rc = 130
    Path(spec["result"]).write_text(json.dumps(result))
    return rc


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
