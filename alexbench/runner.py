"""``alexbench run``: a matrix of train runs (model × framework × pretrained × seed), then the report.

Each entry is an ordinary ``train`` run in its own sub-folder of ``--out``. The report
(``report.html`` + ``report.md``) is rewritten at every epoch end, so opening it shows
progress. ``--resume`` skips finished entries and continues the interrupted one.
Entries whose pretrained weights are unavailable are listed as skipped with the reason.

One entry never loses the matrix: an entry that fails is recorded as failed, with its
reason, in ``run.json``, in its run folder's ``state.json`` and in the report, and the
next entry starts. ``run`` then exits 2 if every failure was bad input (a UserError:
the entry's config, data or weights) and 1 if any was an internal error. Ctrl-C still
stops the whole run; ``--resume`` retries failed entries.
``executor="ray"`` runs the entries as Ray tasks instead (:mod:`alexbench.ray_executor`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from alexbench import rundir
from alexbench.atomic import RunLock, atomic_write_json
from alexbench.config import MAX_SEED, TrainConfig, apply_overrides, deep_merge, load_yaml, validate
from alexbench.errors import UserError
from alexbench.hooks import Hooks
from alexbench.outputs import check_report_targets, ensure_folder, refuse_foreign

EXECUTORS = ("local", "ray")
PRESETS_DIR = resources.files("alexbench") / "presets"
# every file in alexbench/presets/ is a preset, named by its stem (quick, seeds, seeds-1, standard, ...)
PRESETS = tuple(sorted(p.name[:-len(".yaml")] for p in PRESETS_DIR.iterdir() if p.name.endswith(".yaml")))


@dataclass
class Entry:
    slug: str
    cfg: TrainConfig


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        p = Path(name)
        if p.suffix in (".yaml", ".yml") or os.sep in name:  # a file, not a preset's name
            if not p.exists():
                raise UserError(f"--preset: {name}: not found")
            return p
        raise UserError(f"--preset: unknown preset {name!r} (choose from {', '.join(PRESETS)}, or give a .yaml file)")
    return Path(str(PRESETS_DIR / f"{name}.yaml"))


MAX_SEEDS = 100  # seeds per entry: mean ± std needs a handful; each seed is a full training run
MAX_ENTRIES = 1000  # entries × seeds in one plan


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: ``N`` means seeds 0..N-1; ``a,b,c`` lists them (at most :data:`MAX_SEEDS`)."""
    shown = text if len(text) <= 40 else text[:40] + "…"
    if text.count(",") >= MAX_SEEDS:
        raise UserError(f"--seeds: at most {MAX_SEEDS} seeds (got {text.count(',') + 1})")
    try:
        if "," in text:
            seeds = [int(v) for v in text.split(",")]
        else:
            n = int(text)
            if n > MAX_SEEDS:
                raise UserError(f"--seeds: at most {MAX_SEEDS} seeds (got {n})")
            seeds = list(range(n))
    except ValueError:
        raise UserError(f"--seeds: expected a count such as 3 or a list such as 0,1,2 (got {shown!r})") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds: need at least one seed, none negative or repeated (got {shown!r})")
    if max(seeds) > MAX_SEED:
        raise UserError(f"--seeds: {max(seeds)} is too large (seeds go up to {MAX_SEED})")
    return seeds


def load_plan(preset: str, config_file: str | None = None, overrides: list[str] | None = None,
              seeds: list[int] | None = None) -> tuple[dict, list[Entry]]:
    """Read a preset (and optional config file applied to every entry); expand entries × seeds.

    ``seeds`` replaces the preset's own list (the ``--seeds`` option).
    """
    path = preset_path(preset)
    plan = load_yaml(path)
    unknown = set(plan) - {"name", "description", "defaults", "entries", "seeds"}
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    defaults = plan.get("defaults") or {}
    if config_file:
        defaults = deep_merge(defaults, load_yaml(config_file))
    seeds = seeds or plan.get("seeds") or [defaults.get("seed", 0)]
    raw_entries = plan.get("entries") or []
    if not isinstance(seeds, list) or not isinstance(raw_entries, list):
        raise UserError(f"{path}: seeds and entries must be lists")
    if len(seeds) > MAX_SEEDS or len(raw_entries) * len(seeds) > MAX_ENTRIES:
        raise UserError(f"{path}: {len(raw_entries)} entries × {len(seeds)} seeds is too many "
                        f"(at most {MAX_SEEDS} seeds and {MAX_ENTRIES} runs in one plan)")
    entries: list[Entry] = []
    for i, raw in enumerate(raw_entries):
        if not isinstance(raw, dict) or "model" not in raw or "framework" not in raw:
            raise UserError(f"{path}: entries[{i}]: needs at least model and framework")
        for seed in seeds:
            data = deep_merge(defaults, raw)
            data["seed"] = seed
            if overrides:
                data = apply_overrides(data, overrides)
            cfg = validate(data, f"{path}: entries[{i}]")
            slug = rundir.run_slug(cfg.model, cfg.framework, cfg.pretrained, seed, cfg.keras_backend)
            entries.append(Entry(slug, cfg))
    if not entries:
        raise UserError(f"{path}: no entries")
    dup = {s for s, n in Counter(e.slug for e in entries).items() if n > 1}
    if dup:
        raise UserError(f"{path}: duplicate entries {', '.join(sorted(dup))}")
    return plan, entries


def expected_weights_name(model: str, framework: str) -> str | None:
    """File name of the official ImageNet weights a pretrained entry loads (what --weights-dir must hold)."""
    from urllib.parse import urlparse

    from alexbench.models.pretrained import KERAS_APPLICATIONS_WEIGHTS, TORCHVISION_WEIGHTS, imagenet_source

    source = imagenet_source(model, framework)
    if source == "keras.applications":
        return KERAS_APPLICATIONS_WEIGHTS[model][0]
    if source == "torchvision":
        return Path(urlparse(TORCHVISION_WEIGHTS[model][2]).path).name
    return None


def _with_offline_weights(cfg: TrainConfig, weights_dir: str | None) -> TrainConfig:
    if not weights_dir or cfg.pretrained != "imagenet" or cfg.weights:
        return cfg
    name = expected_weights_name(cfg.model, cfg.framework)
    cand = Path(weights_dir) / name if name else None
    return cfg.model_copy(update={"weights": str(cand)}) if cand and cand.exists() else cfg


def run(preset: str, out_dir: str, *, data=None, config_file: str | None = None,  # noqa: ANN001
        overrides: list[str] | None = None, weights_dir: str | None = None, resume: bool = False,
        seeds: list[int] | None = None, force: bool = False, hooks: Hooks | None = None,
        executor: str = "local", address: str | None = None) -> dict:
    """Train every entry of the plan into ``out_dir/<slug>`` and keep the report up to date.

    ``hooks`` (see :mod:`alexbench.hooks`) are passed to every entry's training loop (local executor).
    ``executor="ray"`` makes each entry a Ray task on the cluster at ``address`` (default: a local one).
    """
    from alexbench.data import Dataset, load_dataset
    from alexbench.models import WeightsUnavailable
    from alexbench.report import write_report
    from alexbench.train import train

    if executor not in EXECUTORS:
        raise UserError(f"--executor: unknown executor {executor!r} (choose from {', '.join(EXECUTORS)})")
    if address and executor != "ray":
        raise UserError("--address: only with --executor ray")
    if hooks is not None and executor != "local":
        raise UserError("hooks watch a training loop in this process; they need executor 'local'")
    plan, entries = load_plan(preset, config_file, overrides, seeds)
    out = ensure_folder(out_dir, "--out")
    status_path = out / rundir.RUN_STATUS
    with RunLock(out, ".alexbench-run.lock"):
        status = _read_status(status_path, force)
        if status and not resume:
            raise UserError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
        check_report_targets(out / "report.html", force=force)
        status.update({"preset": plan.get("name", preset), "entries": status.get("entries", {}),
                       "started": status.get("started", time.time())})
        ds = data if isinstance(data, Dataset) else load_dataset(data)
        status["dataset"] = ds.describe()
        if ds.embedded:
            print("note: no CIFAR-10 found; using the small embedded sample (results are indicative only). "
                  "Pass --data to use full CIFAR-10.", file=sys.stderr)
        html = out / "report.html"
        skipped: list[dict] = []  # skipped and failed entries, for the report

        def report(*_: object) -> None:
            failed = {s["entry"] for s in skipped if s.get("status") == "failed"}
            dirs = [out / e.slug for e in entries
                    if e.slug not in failed and (out / e.slug / rundir.HISTORY).exists()]
            if not (dirs or skipped):
                return
            try:
                write_report(dirs, html, title=f"alexbench: {plan.get('name', preset)}", skipped=skipped,
                             force=force)
            except Exception as exc:  # noqa: BLE001 - a report problem must never stop training
                why = str(exc) if isinstance(exc, UserError) else f"internal error: {type(exc).__name__}: {exc}"
                print(f"warning: report not updated: {why}", file=sys.stderr)

        def started(k: int, slug: str) -> None:
            print(f"[{k}/{len(entries)}] {slug}", file=sys.stderr, flush=True)
            status["entries"][slug] = {"status": "running"}
            atomic_write_json(status_path, status)

        def ended(k: int, slug: str, cfg: TrainConfig, exc: BaseException | None = None) -> None:
            """Record an entry that finished, was skipped (its weights are unavailable) or failed."""
            if isinstance(exc, WeightsUnavailable):
                wanted = expected_weights_name(cfg.model, cfg.framework)
                reason = exc.way_out(f"pass --weights-dir DIR holding {wanted}" if wanted else
                                     "pass --weights-dir DIR holding the weights file")
                print(f"[{k}/{len(entries)}] {slug}: skipped: {reason}", file=sys.stderr)
                backend = rundir.run_backend(cfg.framework, cfg.keras_backend)
                skipped.append({"entry": slug, "model": cfg.model, "framework": cfg.framework, "backend": backend,
                                "pretrained": cfg.pretrained, "reason": reason})
                status["entries"][slug] = {"status": "skipped", "reason": reason, "model": cfg.model,
                                           "framework": cfg.framework, "backend": backend,
                                           "pretrained": cfg.pretrained}
                atomic_write_json(status_path, status)
                _drop_empty_run(out / slug)
                return
            if exc is not None:
                row = _failed(slug, cfg, exc, out / slug)
                print(f"[{k}/{len(entries)}] {slug}: failed ({row['error']}): {row['reason']}", file=sys.stderr)
                skipped.append({"entry": slug, **{key: row[key] for key in ("model", "framework", "backend",
                                                                        "pretrained", "status", "reason")}})
                status["entries"][slug] = row
            else:
                status["entries"][slug] = {"status": "finished"}
            atomic_write_json(status_path, status)
            report()

        todo = []
        for k, e in enumerate(entries, 1):
            prev = status["entries"].get(e.slug, {})
            if prev.get("status") in ("skipped", "failed"):
                prev = {}  # weights may be available now, the cause fixed: try again
            if prev.get("status") == "finished" and (out / e.slug / rundir.METRICS).exists():
                print(f"[{k}/{len(entries)}] {e.slug}: finished earlier, skipping", file=sys.stderr)
                continue
            run_dir = out / e.slug
            todo.append((k, e.slug, _with_offline_weights(e.cfg, weights_dir), run_dir,
                         resume and (run_dir / rundir.CONFIG).exists()))
        if executor == "ray":
            from alexbench.ray_executor import run_on_ray

            run_on_ray(todo, data=ds, address=address, force=force, started=started, ended=ended, report=report)
        else:
            for k, slug, cfg, run_dir, can_resume in todo:
                started(k, slug)
                try:
                    # keep_failed: a failed entry's folder records the failure (_failed); a skipped one is dropped
                    train(cfg, run_dir, data=ds, resume=can_resume, on_epoch_end=report, force=force, hooks=hooks,
                          keep_failed=True)
                except Exception as exc:  # noqa: BLE001 - one entry must not lose the matrix (Ctrl-C stops it)
                    ended(k, slug, cfg, exc)
                    continue
                ended(k, slug, cfg)
        # skipped entries from an earlier, resumed invocation still belong in the report
        for slug, st in status["entries"].items():
            if st.get("status") in ("skipped", "failed") and slug not in {s["entry"] for s in skipped}:
                skipped.append({"entry": slug,
                                **{k: st.get(k) for k in ("model", "framework", "backend", "pretrained")},
                                "status": st["status"], "reason": st.get("reason", "")})
        status["finished"] = time.time()
        atomic_write_json(status_path, status)
        report()
    return status


def _read_status(path: Path, force: bool) -> dict:
    """``run.json`` of an earlier invocation ({} if none); a file that is not one is refused."""
    if not os.path.lexists(path):
        return {}
    try:
        status = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size < 1 << 24 else None
    except (OSError, ValueError):
        status = None
    if isinstance(status, dict) and isinstance(status.get("entries"), dict) and "preset" in status:
        return status
    if force:
        return {}
    raise refuse_foreign(path, "--out", "an alexbench run writes its status there")


def _failed(slug: str, cfg: TrainConfig, exc: BaseException, run_dir: Path) -> dict:
    """The run.json row of an entry that raised ``exc``; its run folder (if any) says failed too.

    Bad input (a UserError) is its one-line message; anything else is an internal error,
    whose traceback goes to the entry's log.txt for a bug report.
    """
    bad_input = isinstance(exc, UserError)
    reason = str(exc) if bad_input else f"{type(exc).__name__}: {exc}"
    if run_dir.is_dir():
        if not bad_input:
            with open(run_dir / rundir.LOG, "a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} internal error in {slug}:\n"
                         + "".join(traceback.format_exception(exc)))
        if (run_dir / rundir.CONFIG).exists():  # the entry had started its run folder
            state = rundir.read_state(run_dir)
            rundir.write_state(run_dir, "failed", int(state.get("epoch") or 0), cfg.epochs, reason)
    return {"status": "failed", "error": "bad input" if bad_input else "internal error", "reason": reason,
            "model": cfg.model, "framework": cfg.framework,
            "backend": rundir.run_backend(cfg.framework, cfg.keras_backend), "pretrained": cfg.pretrained}


def _drop_empty_run(run_dir: Path) -> None:
    """A skipped entry leaves no half run behind: only files this run itself created are removed."""
    for name in (rundir.REQUESTED, rundir.CONFIG, rundir.STATE, rundir.LOG):
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        pass


def run_command(args) -> int:  # noqa: ANN001
    status = run(args.preset, args.out, data=args.data, config_file=args.config, overrides=args.overrides,
                 weights_dir=args.weights_dir, resume=args.resume,
                 seeds=parse_seeds(args.seeds) if args.seeds else None, force=getattr(args, "force", False),
                 executor=getattr(args, "executor", "local"), address=getattr(args, "address", None))
    out = Path(args.out)
    finished = [out / s for s, st in status["entries"].items() if st.get("status") == "finished"]
    if finished:
        from alexbench.report.commands import print_comparison

        print_comparison(finished)
    for s, st in status["entries"].items():
        if st.get("status") == "skipped":
            print(f"skipped {s}: {st.get('reason', '')}")
    failed = {s: st for s, st in status["entries"].items() if st.get("status") == "failed"}
    for s, st in failed.items():
        print(f"failed {s} ({st.get('error', 'internal error')}): {st.get('reason', '')}")
    print(f"report: {out / 'report.html'} and {out / 'report.md'}")
    if not failed:
        return 0
    print(f"alexbench run: {len(failed)} of {len(status['entries'])} entries failed (see above and run.json)",
          file=sys.stderr)
    return 2 if all(st.get("error") == "bad input" for st in failed.values()) else 1
