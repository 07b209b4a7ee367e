"""``--resume`` continues only the same run.

A run folder holds its resolved config (``config.yaml``: what ran, with every ``auto`` and
``null`` decided), the config as given (``requested.yaml``) and, in ``state.json``, the
identity of the data it started on (name, source, sha256). A resume is refused in one
line when what was asked would compute another run:

- a config key differs from the given one (the message names each key with both values);
  only :data:`~alexbench.config.RESUME_FREE_KEYS` (how the run executes: device, threads,
  checkpoint interval) may change;
- the data's sha256 differs from the recorded one.

On the command line only the keys the user set count (``--model``, ``--framework``,
``--pretrained``, ``--weights``, the ``--config`` file, ``--set``): a plain ``--resume``
continues the stored config, on the recorded data when ``--data`` is not given.
The resumed run continues with ``config.yaml``, except the free keys, which come from what
was asked (or given) and are decided again on this machine.
The progress stored in a checkpoint is checked field by field before the loop uses it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from alexbench import rundir
from alexbench.config import (
    RESUME_FREE_KEYS,
    TrainConfig,
    config_differences,
    deep_merge,
    explicit_settings,
    load_yaml,
    validate,
)
from alexbench.errors import UserError

__all__ = ["same_run_config", "resume_config_from_args", "recorded_dataset", "check_same_data", "checked_progress"]


def _not_the_same_run(saved: Path, diff: list[tuple[str, Any, Any]]) -> UserError:
    shown = "; ".join(f"{k}: run has {a!r}, asked {b!r}" for k, a, b in diff[:4])
    more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
    return UserError(f"{saved}: --resume continues the same run, but {len(diff)} setting(s) differ: {shown}{more}; "
                     "resume without changing them, or start a new run in another --out")


def _given_path(out: Path) -> Path:
    """``requested.yaml`` (the config as given), or ``config.yaml`` for a run written before it existed."""
    requested = out / rundir.REQUESTED
    return requested if requested.is_file() else out / rundir.CONFIG


def same_run_config(out: Path, asked: TrainConfig | None) -> TrainConfig:
    """The stored config of the run in ``out`` when ``asked`` (None: what was given) computes the same
    run as the config it was given, with ``asked``'s free keys; a one-line refusal naming the keys that
    differ otherwise."""
    saved = out / rundir.CONFIG
    stored = validate(load_yaml(saved), str(saved))
    given_path = _given_path(out)
    given = stored if given_path == saved else validate(load_yaml(given_path), str(given_path))
    if asked is not None:
        diff = config_differences(given, asked)
        if diff:
            raise _not_the_same_run(given_path, diff)
    return stored.model_copy(update={k: getattr(asked or given, k) for k in RESUME_FREE_KEYS})


def resume_config_from_args(args: Any, out: Path) -> TrainConfig | None:
    """``train --resume``: the run's stored config with what the user set explicitly on top (the run
    then refuses any difference that changes it); None when ``out`` has no stored config."""
    if not (out / rundir.CONFIG).exists():
        return None
    saved = _given_path(out)
    base = {"model": args.model, "framework": args.framework}
    for key in ("pretrained", "weights"):
        if getattr(args, key, None):
            base[key] = getattr(args, key)
    stored = load_yaml(saved)
    try:
        return validate(deep_merge(stored, explicit_settings(args.config, args.overrides, base)),
                        f"{saved} + your flags")
    except UserError:  # another model's options do not fit it: name the real difference
        diff = [(k, stored.get(k), v) for k, v in base.items() if stored.get(k) != v]
        if diff:
            raise _not_the_same_run(saved, diff) from None
        raise


def recorded_dataset(out: Path) -> dict[str, Any]:
    """The data the run in ``out`` started on (name, source, sha256), or {} if not recorded."""
    rec = rundir.read_state(out).get("dataset")
    return rec if isinstance(rec, dict) else {}


def check_same_data(recorded: dict[str, Any], ds: Any) -> None:
    """Refuse a resume on data whose sha256 is not the recorded one."""
    if recorded.get("sha256") and recorded["sha256"] != ds.sha256:
        raise UserError(f"--data: {ds.name} ({ds.source}, sha256 {str(ds.sha256)[:12]}…) is not the data this run "
                        f"was started on ({recorded.get('name')}, {recorded.get('source')}, sha256 "
                        f"{str(recorded['sha256'])[:12]}…); resume with that data, or start a new run in another --out")


def checked_progress(meta: dict[str, Any], defaults: Any, where: str) -> dict[str, Any]:
    """The fields of ``meta`` that the progress dataclass ``defaults`` has, each checked against the type
    of its default: whole numbers >= 0, finite numbers, booleans, a list of per-epoch mappings."""
    known = {k: v for k, v in meta.items() if k in defaults.__dataclass_fields__}
    for name, v in known.items():
        default = getattr(defaults, name)
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        elif isinstance(default, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        else:
            ok = isinstance(v, list) and all(isinstance(r, dict) for r in v)
        if not ok:
            raise UserError(f"{where}: progress.{name}: {v!r:.60} is not a valid {type(default).__name__} value; "
                            "the checkpoint is damaged or was edited")
    return known
