"""The kill harness: SIGKILL tiny training runs at chosen moments, resume them, prove nothing was lost.

usage (from tests/, or with tests/ on PYTHONPATH):

    python -m support.kills suite [--trials N] [--keras-trials K] [--seed S] [--workdir DIR] [--json FILE] [--jobs J]
    python -m support.kills train OUT FRAMEWORK [--resume] [--ckpt-minutes M] [--epochs N] [--hold FILE --at-step K]
                                [--keras-backend B] [--over JSON]
    python -m support.kills hold FILE --preset P --out DIR --data SOURCE

``train`` is one tiny ``alexbench.train.train`` run on the toy set (it prints its test
accuracy and loss as JSON). With ``--hold FILE`` it stops before optimizer step K while
FILE exists, after creating ``FILE.held``: a test then kills it at a known point of a run
that has not ended. ``hold`` is one ``alexbench run`` held the same way before its first
step, with its locks taken and everything before that step written.

Every kill point is reached through the product's hook points (:mod:`alexbench.hooks`
for steps and evaluation passes, :func:`alexbench.atomic.add_file_hook` for renames);
nothing in the product is replaced.

``suite`` runs seeded trials. Each trial trains a tiny model (alexnet_cifar at 1/8 width, fp32, deterministic, one
thread, 2 epochs on a 160-image toy dataset read from a CIFAR-10 binary folder through
the ordinary data path and decoded-array cache), kills it with SIGKILL at a moment
drawn from the trial's own seeded generator, checks the files the kill left behind,
resumes (``--resume``), and compares the result with an uninterrupted reference run.

Where the kill lands (``phase``):

- ``batch``: inside the k-th optimizer step, before it runs or after it ran.
- ``checkpoint``: at the k-th rename under ``checkpoints/`` (including the hard-link
  rename of ``last`` to ``last.prev``): with the temp file torn (truncated), complete
  but not renamed, or renamed with the folder not yet fsynced.
- ``eval``: inside the k-th evaluation pass (validation or test) after j batches.
- ``files``: at the k-th rename of another run file (config, state, history,
  predictions, metrics; ``run.json`` under ``alexbench run``).
- ``cache``: at the k-th rename in the data home (content-hash sidecar, decoded cache).
- ``report``: at the k-th rename of a report file (HTML, Markdown, figures) while
  ``alexbench run`` rewrites the report at an epoch end.
- ``timed``: a SIGKILL from outside after a random delay.
- ``corrupt``: a kill, then ``last.*`` truncated on top; the resume must fall back to
  ``last.prev`` and say so.

Some trials are killed a second time during the resume. A trial is *resumed OK* when
the last resume exits 0, its learned results (test block, per-epoch losses and
accuracies, best epoch, test probabilities, final weights and optimizer state) are
bitwise equal to the reference for torch, or within :data:`KERAS_BOUND` for keras,
every file loads, no temporary file is left anywhere and no lock is left held.

**bytes_lost** counts bytes of files that were complete before a kill and were damaged
or lost by it: every published file (checkpoints, config, state, history, predictions,
metrics, report, figures, decoded cache and its sidecar) is hashed the instant before a
kill the child injects itself, and each must be byte-identical afterwards (``log.txt``
is append-only: its earlier bytes must be unchanged); after every kill and after the
resume, every published file must also load (a file that does not counts in full).
Work not yet checkpointed is recomputed, not lost, and is not counted. It must be 0.

With ``--jobs J`` the uninterrupted references run first, then J forked workers take the
trials one at a time (each trial still runs, kills and resumes its own children); the trial
lines then come in the order trials finish.

``suite`` prints one line per trial, then
``fault suite: trials=N faults_injected=N resumed_ok=N bytes_lost=0`` and exits 0 when
every trial resumed OK with nothing lost, else 1. Needs ``os.fork`` (Linux, macOS).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from alexbench.hooks import Hooks
from alexbench.rundir import run_slug
from support import support_command
from support.toydata import synthetic_dataset, tiny_config_dict, write_binary_source

__all__ = ["KERAS_BOUND", "PHASES", "Trial", "HoldAt", "command", "plan_trials", "run_suite", "summary_line",
           "preset_text", "max_abs_diff", "main"]

#: largest absolute difference allowed between a resumed keras run and its reference, over every
#: learned number (losses, accuracies, test metrics, probabilities). Measured: 0 so far (keras on CPU
#: with op determinism resumes exactly); the bound only leaves room for float noise.
KERAS_BOUND = 1e-6
TIMING_KEYS = {"seconds", "elapsed_seconds", "images_per_second"}
EVERY_STEP = 1e-6  # checkpoint_minutes that makes the loop checkpoint after every step
EPOCH_ENDS = 10.0  # ... and one that leaves only the epoch-end checkpoints
PHASES = ["batch", "checkpoint", "eval", "report", "timed", "checkpoint", "files", "batch", "cache", "corrupt"]
KERAS_PHASES = ["checkpoint", "batch", "eval", "timed"]


# ----------------------------------------------------------------------------- the tiny experiment


def command(*args: str) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that run this harness in a fresh interpreter: ``command("train", out, "torch")``."""
    argv, env = support_command("kills", *args)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return argv, env


def fault_config(framework: str, checkpoint_minutes: float) -> dict:
    """The toy run of every trial; eval batches of 8 so that a pass has several batches to die in.

    The resource sampler is off: it publishes resources.csv on a timer, which would make the
    per-category event counts (and so the kill points) depend on timing."""
    return tiny_config_dict(framework, eval_batch_size=8, checkpoint_minutes=checkpoint_minutes,
                            resource_interval_seconds=0)


def preset_text(framework: str, checkpoint_minutes: float) -> str:
    """A preset (``alexbench run --preset``) with the toy run as its one entry."""
    defaults = {k: v for k, v in fault_config(framework, checkpoint_minutes).items() if k not in ("model", "framework")}
    return json.dumps({"name": "faults", "seeds": [0], "defaults": defaults,
                       "entries": [{"model": "alexnet_cifar", "framework": framework}]}, indent=1)


class HoldAt(Hooks):
    """Wait before optimizer step ``step`` while ``hold`` exists, after creating ``hold``.held."""

    def __init__(self, hold: Path, step: int = 0) -> None:
        self.hold, self.step = Path(hold), step

    def step_start(self, global_step: int) -> None:
        if global_step != self.step or not self.hold.exists():
            return
        self.hold.with_suffix(".held").touch()
        while self.hold.exists():
            time.sleep(0.05)


# ----------------------------------------------------------------------------- trials


@dataclass
class Trial:
    index: int
    framework: str
    phase: str
    mode: str  # "train" (alexbench train) or "run" (alexbench run: the report is rewritten at epoch ends)
    checkpoint_minutes: float
    sub: str = ""  # where inside the phase: before/after/torn, or the batch count inside an eval pass
    k: int = 0  # which occurrence of the phase's event
    frac: float = 0.0  # torn files keep this fraction of their bytes
    delay_frac: float = 0.0  # timed kills: fraction of the reference duration
    second_kill: float = 0.0  # > 0: kill the resume too, after this fraction of the reference duration


@dataclass
class TrialResult:
    trial: dict
    kills: int = 0
    injected: int = 0
    resumed_ok: bool = False
    bytes_lost: int = 0
    max_abs_diff: float = 0.0
    seconds: float = 0.0
    notes: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def plan_trials(n_torch: int, n_keras: int, seed: int) -> list[Trial]:
    """The trial list: phases cycle so that every kind of kill is covered; the rest is seeded."""
    trials = []
    for i in range(n_torch + n_keras):
        rng = random.Random(f"alexbench-faults-{seed}-{i}")
        fw = "torch" if i < n_torch else "keras"
        j = i if fw == "torch" else i - n_torch
        phase = PHASES[(j + seed) % len(PHASES)] if fw == "torch" else KERAS_PHASES[j % len(KERAS_PHASES)]
        mode = "run" if phase == "report" or (phase in ("timed", "files") and rng.random() < 0.5) else "train"
        if fw == "keras":
            mode = "train"
        every = phase == "corrupt" or rng.random() < 0.7
        t = Trial(i, fw, phase, mode, EVERY_STEP if every else EPOCH_ENDS)
        t.sub = rng.choice(["before", "after", "torn", "torn"]) if phase in ("checkpoint", "files", "cache", "report") \
            else rng.choice(["before", "after"]) if phase == "batch" else ""
        t.frac = rng.random() * 0.95
        t.delay_frac = rng.uniform(0.05, 0.9)
        t.second_kill = rng.uniform(0.05, 0.8) if rng.random() < 0.2 else 0.0
        t.k = rng.randrange(1 << 30)  # reduced modulo the event count once the reference has counted events
        trials.append(t)
    return trials


# ----------------------------------------------------------------------------- children


def _fork(fn: Callable[[], Any], log: Path, result: Path | None = None) -> int:
    """Run ``fn`` in a forked child with stdout/stderr in ``log``; its return value goes to ``result``."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        value = fn()
        if result is not None:
            result.write_text(json.dumps(value))
        code = 0
    except BaseException as exc:  # noqa: BLE001 - a child reports everything through its exit code and log
        from alexbench.errors import UserError

        if isinstance(exc, UserError):
            print(f"error: {exc}", file=sys.stderr)
            code = 2
        else:
            traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _wait(pid: int, timeout: float = 600.0) -> int:
    """Exit status as os.waitstatus_to_exitcode gives it (-9 for SIGKILL); kills a child that hangs."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            raise TimeoutError(f"child {pid} still running after {timeout:.0f}s")
        time.sleep(0.01)


def _is_temp(name: str) -> bool:
    return name.endswith(".tmp")


def _is_lock(name: str) -> bool:
    return name.startswith(".alexbench") and name.endswith(".lock")


def _published(root: Path) -> list[Path]:
    """Every file a run has published under ``root`` (no temp files, no locks)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not _is_temp(p.name) and not _is_lock(p.name))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(root: Path) -> dict[str, list]:
    return {str(p.relative_to(root)): [p.stat().st_size, _sha(p)] for p in _published(root)}


def _die(trial_dir: Path, n: int) -> None:
    """Record what is complete right now, then SIGKILL this process (no cleanup runs)."""
    data = json.dumps(manifest(trial_dir / "w")).encode()
    fd = os.open(trial_dir / f"manifest-{n}.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _category(dst: Path, root: Path) -> str | None:
    try:
        rel = dst.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    if rel.parts[0] == "data":
        return "cache"
    if "checkpoints" in rel.parts:
        return "checkpoint"
    if dst.name.startswith("report") or dst.parent.name.endswith("_files"):
        return "report"
    return "files"


class _Killer(Hooks):
    """Counts the events of every phase; with a trial, kills the process at its chosen event.

    Steps and evaluation passes arrive as training hooks; renames as file hooks (every rename
    that publishes a file goes through :func:`alexbench.atomic.publish`)."""

    def __init__(self, root: Path, trial: Trial | None, counts: dict | None, trial_dir: Path, kill_n: int,
                 ready_fd: int | None = None) -> None:
        self.root, self.trial, self.trial_dir, self.kill_n, self.ready_fd = root, trial, trial_dir, kill_n, ready_fd
        self.counts: dict[str, int] = {}
        self.target = None
        self._after_step = False
        self._renamed: Path | None = None
        self._eval_stop: int | None = None
        if trial is not None and trial.phase in ("batch", "checkpoint", "eval", "files", "cache", "report", "corrupt"):
            phase = "batch" if trial.phase == "corrupt" else trial.phase
            total = max(1, counts.get(phase, 1)) if counts else 1
            k = trial.k % total + 1
            if trial.phase == "corrupt":  # late enough that last.prev exists: after the first epoch
                steps = counts["batch"] // 2
                k = steps + 2 + trial.k % max(1, counts["batch"] - steps - 1)
            self.target = (phase, k)

    def hit(self, phase: str) -> bool:
        self.counts[phase] = self.counts.get(phase, 0) + 1
        return self.target == (phase, self.counts[phase])

    def die(self) -> None:
        _die(self.trial_dir, self.kill_n)

    # -- training hooks
    def step_start(self, global_step: int) -> None:
        if self.ready_fd is not None:  # tell the parent that training has started
            os.write(self.ready_fd, b"s")
            self.ready_fd = None
        if self.hit("batch"):
            if self.trial.sub != "after":
                self.die()
            self._after_step = True

    def step_end(self, global_step: int, loss: float) -> None:
        if self._after_step:
            self.die()

    def eval_start(self) -> None:
        self._eval_stop = self.trial.k % 3 if self.hit("eval") else None

    def eval_batch(self, index: int) -> None:
        if self._eval_stop == index:
            self.die()

    def eval_end(self, batches: int) -> None:
        if self._eval_stop is not None:
            self.die()

    # -- file hook
    def file(self, tmp: Path, target: Path, when: str) -> None:
        if when == "renamed":
            if self._renamed == target:
                self.die()
            return
        cat = _category(target, self.root)
        if cat is None or not self.hit(cat):
            return
        sub = self.trial.sub
        if sub == "torn" and _is_temp(tmp.name) and not tmp.name.endswith(".link.tmp"):
            os.truncate(tmp, int(os.path.getsize(tmp) * self.trial.frac))
        if sub == "after":
            self._renamed = target  # die once the rename is done, before the folder is fsynced
            return
        self.die()


def _child_main(trial: Trial | None, fw: str, mode: str, ckpt_minutes: float, trial_dir: Path, source: Path,
                resume: bool, counts: dict | None, kill_n: int, arm: bool, ready_fd: int | None) -> dict:
    """What a child process does: (resume) one run, with the trial's kill armed or just counting."""
    from alexbench.atomic import add_file_hook

    root = trial_dir / "w"
    os.environ["ALEXBENCH_DATA"] = str(root / "data")
    os.environ["ALEXBENCH_QUIET"] = "1"
    killer = _Killer(root, trial if arm else None, counts, trial_dir, kill_n, ready_fd)
    add_file_hook(killer.file)
    t0 = time.perf_counter()
    if mode == "train":
        from alexbench.config import validate
        from alexbench.train import train

        train(validate(fault_config(fw, ckpt_minutes)), root / "run", data=str(source), resume=resume, quiet=True,
              hooks=killer)
    else:
        from alexbench.runner import run

        preset = trial_dir / "faults.yaml"
        if not preset.exists():
            preset.write_text(preset_text(fw, ckpt_minutes))
        run(str(preset), str(root / "run"), data=str(source), resume=resume, hooks=killer)
    return {"counts": killer.counts, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- checks (run in a child: they load torch)


def _check_file(path: Path) -> str | None:
    """None if ``path`` is a complete file of its kind, else what is wrong."""
    name = path.name
    try:
        if name == "log.txt":
            path.read_text(encoding="utf-8", errors="strict")
        elif name.endswith(".pt"):
            import torch

            blob = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(blob, dict) or blob.get("format") != "alexbench-torch-checkpoint-v1":
                return "not an alexbench checkpoint"
        elif name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                for key in z.files:
                    z[key]  # reading checks the zip CRC
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".yaml"):
            import yaml

            yaml.safe_load(path.read_text())
        elif name.endswith(".csv"):
            text = path.read_text()
            rows = [r.split(",") for r in text.splitlines()]
            if not text.endswith("\n") or len({len(r) for r in rows}) != 1:
                return "ragged or unterminated csv"
        elif name.endswith(".html"):
            if not path.read_text().rstrip().endswith("</html>"):
                return "html without its end"
        elif name.endswith(".md"):
            if not path.read_text(encoding="utf-8").strip():
                return "empty markdown"
        elif name.endswith(".png"):
            data = path.read_bytes()
            if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data[-12:-8] == b"\0\0\0\0" and data[-8:-4] == b"IEND"):
                return "png without its end"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    return None


def _state_sha(path: Path) -> str:
    """sha256 over the weights and optimizer state of a checkpoint (not its timing metadata)."""
    h = hashlib.sha256()
    if path.suffix == ".pt":
        import torch

        blob = torch.load(path, map_location="cpu", weights_only=True)

        def walk(obj: Any) -> None:
            if isinstance(obj, torch.Tensor):
                h.update(obj.detach().cpu().contiguous().numpy().tobytes())
            elif isinstance(obj, dict):
                for key in sorted(obj, key=str):
                    h.update(str(key).encode())
                    walk(obj[key])
            elif isinstance(obj, (list, tuple)):
                for v in obj:
                    walk(v)
            else:
                h.update(repr(obj).encode())

        walk(blob["model"])
        walk(blob["optimizer"])
    else:
        with np.load(path, allow_pickle=False) as z:
            for key in sorted(z.files):
                if key.startswith(("model/", "opt")):
                    h.update(key.encode())
                    h.update(z[key].tobytes())
    return h.hexdigest()


def _inspect(root: Path, fw: str, mode: str, final: bool) -> dict:
    """Broken files under ``root``; with ``final``, also the learned results of the finished run."""
    broken = {str(p.relative_to(root)): err for p in _published(root) if (err := _check_file(p))}
    out: dict[str, Any] = {"broken": broken, "sizes": {str(p.relative_to(root)): p.stat().st_size
                                                      for p in _published(root)}}
    if final:
        run_dir = root / "run" / (run_slug("alexnet_cifar", fw, None, 0) if mode == "run" else "")
        m = json.loads((run_dir / "metrics.json").read_text())
        ext = ".pt" if fw == "torch" else ".npz"
        out["learned"] = {"test": m["test"], "best_epoch": m["best_epoch"],
                          "epochs": [{k: v for k, v in e.items() if k not in TIMING_KEYS} for e in m["epochs"]]}
        with np.load(run_dir / "predictions.npz", allow_pickle=False) as z:
            out["probs"] = z["probs"].astype(np.float64).tolist()
        out["weights"] = {n: _state_sha(run_dir / "checkpoints" / f"{n}{ext}") for n in ("last", "best")}
        out["temps"] = sorted(str(p.relative_to(root)) for p in root.rglob("*") if _is_temp(p.name))
        out["locks"] = sorted(str(p.relative_to(root)) for p in root.rglob("*") if _is_lock(p.name))
        if mode == "run":
            out["report"] = (root / "run" / "report.html").is_file() and (root / "run" / "report.md").is_file()
    return out


# ----------------------------------------------------------------------------- comparison


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool):
        return [float(obj)]
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if obj is None:
        return [math.nan]
    if isinstance(obj, dict):
        return [x for k in sorted(obj) for x in _numbers(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in _numbers(v)]
    return []


def max_abs_diff(a: dict, b: dict) -> float:
    """Largest absolute difference between two runs' learned numbers and test probabilities."""
    xa = _numbers(a["learned"]) + _numbers(a["probs"])
    xb = _numbers(b["learned"]) + _numbers(b["probs"])
    if len(xa) != len(xb):
        return math.inf
    worst = 0.0
    for u, v in zip(xa, xb):
        if math.isnan(u) and math.isnan(v):
            continue
        worst = max(worst, abs(u - v))
    return worst


# ----------------------------------------------------------------------------- the suite


class Suite:
    def __init__(self, workdir: Path, echo: Callable[[str], None] = print, keep: bool = False) -> None:
        self.workdir = workdir
        self.echo = echo
        self.keep = keep  # keep the folders of passed trials too (failed ones are always kept)
        self.source = write_binary_source(workdir / "source")
        self.refs: dict[tuple, dict] = {}  # (fw, mode, ckpt) -> {"counts", "seconds", "fp"}
        self.fingerprints: dict[str, dict] = {}  # fw -> the first reference's final inspection

    def _run_child(self, trial_dir: Path, n: int, *, trial: Trial | None, fw: str, mode: str, ckpt: float,
                   resume: bool, counts: dict | None, arm: bool, kill_after: float | None = None) -> tuple[int, dict]:
        """One (resumed) run in a child; returns (exit code, its result). ``kill_after`` s: SIGKILL from outside."""
        result = trial_dir / f"result-{n}.json"
        result.unlink(missing_ok=True)
        r, w = os.pipe()
        pid = _fork(lambda: _child_main(trial, fw, mode, ckpt, trial_dir, self.source, resume, counts, n, arm, w),
                    trial_dir / f"child-{n}.log", result)
        os.close(w)
        if kill_after is not None:
            started = False
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                ready, _, _ = select.select([r], [], [], 0.5)
                if ready:
                    started = os.read(r, 1) == b"s"
                    break
                if os.waitpid(pid, os.WNOHANG)[0]:
                    os.close(r)
                    return -99, {}  # exited before training started (a finished run): nothing to kill
            if started:
                time.sleep(kill_after)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        os.close(r)
        code = _wait(pid)
        value = json.loads(result.read_text()) if code == 0 and result.exists() else {}
        return code, value

    def _inspect(self, trial_dir: Path, fw: str, mode: str, final: bool, n: int) -> dict:
        result = trial_dir / f"inspect-{n}.json"
        code = _wait(_fork(lambda: _inspect(trial_dir / "w", fw, mode, final), trial_dir / f"inspect-{n}.log",
                           result))
        if code != 0:
            raise RuntimeError(f"inspection failed: {(trial_dir / f'inspect-{n}.log').read_text()[-2000:]}")
        return json.loads(result.read_text())

    def reference(self, fw: str, mode: str, ckpt: float) -> dict:
        key = (fw, mode, ckpt)
        if key not in self.refs:
            d = self.workdir / f"ref-{fw}-{mode}-{'step' if ckpt == EVERY_STEP else 'epoch'}"
            d.mkdir(parents=True)
            code, value = self._run_child(d, 1, trial=None, fw=fw, mode=mode, ckpt=ckpt, resume=False, counts=None,
                                          arm=False)
            if code != 0:
                raise RuntimeError(f"reference run failed ({code}): {(d / 'child-1.log').read_text()[-3000:]}")
            fp = self._inspect(d, fw, mode, True, 1)
            if fp["broken"] or fp["temps"] or fp["locks"]:
                raise RuntimeError(f"reference run left {fp['broken'] or fp['temps'] or fp['locks']}")
            self.fingerprints.setdefault(fw, fp)
            first = self.fingerprints[fw]
            diff = max_abs_diff(first, fp)
            same = fp["learned"] == first["learned"] and fp["probs"] == first["probs"] \
                and fp["weights"] == first["weights"]
            if fw == "torch" and not same or diff > KERAS_BOUND:
                raise RuntimeError(f"{fw} references differ between checkpoint intervals/modes (max diff {diff:g})")
            self.refs[key] = {"counts": value["counts"], "seconds": value["seconds"]}
            if not self.keep:
                shutil.rmtree(d, ignore_errors=True)
            self.echo(f"reference {fw}/{mode}/ckpt={ckpt:g}: {value['seconds']:.1f}s, events {value['counts']}")
        return self.refs[key]

    def _after_kill(self, res: TrialResult, trial_dir: Path, t: Trial, n: int, manifest_expected: bool) -> None:
        root = trial_dir / "w"
        mpath = trial_dir / f"manifest-{n}.json"
        if mpath.exists():
            before = json.loads(mpath.read_text())
            for rel, (size, sha) in before.items():
                p = root / rel
                if not p.is_file():
                    res.bytes_lost += size
                    res.problems.append(f"kill {n}: {rel} ({size} bytes) disappeared")
                    continue
                data = p.read_bytes()
                keep = data[:size] if p.name == "log.txt" else data
                if hashlib.sha256(keep).hexdigest() != sha:
                    res.bytes_lost += size
                    res.problems.append(f"kill {n}: {rel} ({size} bytes) changed")
        elif manifest_expected:
            res.problems.append(f"kill {n}: the child died without recording its manifest")
        info = self._inspect(trial_dir, t.framework, t.mode, False, n)
        for rel, err in info["broken"].items():
            res.bytes_lost += info["sizes"].get(rel, 0)
            res.problems.append(f"kill {n}: {rel} does not load ({err})")

    def run_trial(self, t: Trial) -> TrialResult:
        res = TrialResult(trial=asdict(t))
        t0 = time.perf_counter()
        trial_dir = self.workdir / f"trial-{t.index:04d}"
        try:
            self._trial(t, trial_dir, res)
        except Exception as exc:  # noqa: BLE001 - a broken trial is reported, not raised
            res.problems.append(f"{type(exc).__name__}: {exc}")
        res.seconds = time.perf_counter() - t0
        if res.resumed_ok and not self.keep:
            shutil.rmtree(trial_dir, ignore_errors=True)  # ~50 MB of checkpoints each
        return res

    def _trial(self, t: Trial, trial_dir: Path, res: TrialResult) -> None:
        ref = self.reference(t.framework, t.mode, t.checkpoint_minutes)
        # duration from the first step to the end (data and engine start-up excluded)
        dur = max(0.2, ref["seconds"] * 0.8)
        trial_dir.mkdir(parents=True)
        n = 1
        if t.phase == "timed":
            for attempt in range(5):  # a kill that lands after the run finished injects nothing: try earlier
                code, _ = self._run_child(trial_dir, n, trial=t, fw=t.framework, mode=t.mode, ckpt=t.checkpoint_minutes,
                                          resume=False, counts=None, arm=False,
                                          kill_after=dur * t.delay_frac / (2 ** attempt))
                if code == -9:
                    break
                shutil.rmtree(trial_dir / "w", ignore_errors=True)
        else:
            code, _ = self._run_child(trial_dir, n, trial=t, fw=t.framework, mode=t.mode, ckpt=t.checkpoint_minutes,
                                      resume=False, counts=ref["counts"], arm=True)
        res.kills += 1
        if code != -9:
            res.problems.append(f"the first run was not killed (exit {code}): "
                                f"{(trial_dir / 'child-1.log').read_text()[-1500:]}")
            return
        res.injected += 1
        self._after_kill(res, trial_dir, t, n, manifest_expected=t.phase != "timed")
        if t.phase == "corrupt":
            ext = ".pt" if t.framework == "torch" else ".npz"
            last = trial_dir / "w" / "run" / "checkpoints" / f"last{ext}"
            size = last.stat().st_size
            with open(last, "r+b") as fh:
                fh.truncate(int(size * t.frac))
            res.notes.append(f"truncated last{ext} to {int(size * t.frac)} of {size} bytes")
        if t.second_kill:
            n += 1
            code, _ = self._run_child(trial_dir, n, trial=None, fw=t.framework, mode=t.mode,
                                      ckpt=t.checkpoint_minutes, resume=True, counts=None, arm=False,
                                      kill_after=dur * t.second_kill)
            if code == -9:
                res.kills += 1
                res.injected += 1
                self._after_kill(res, trial_dir, t, n, manifest_expected=False)
            elif code != -99 and code != 0:
                res.problems.append(f"resume {n} failed (exit {code}): "
                                    f"{(trial_dir / f'child-{n}.log').read_text()[-1500:]}")
                return
        n += 1
        code, _ = self._run_child(trial_dir, n, trial=None, fw=t.framework, mode=t.mode, ckpt=t.checkpoint_minutes,
                                  resume=True, counts=None, arm=False)
        logs = "".join((trial_dir / f"child-{i}.log").read_text() for i in range(2, n + 1)
                       if (trial_dir / f"child-{i}.log").exists())
        if code != 0:
            res.problems.append(f"resume failed (exit {code}): {(trial_dir / f'child-{n}.log').read_text()[-1500:]}")
            return
        if t.phase == "corrupt" and "resumed from the previous good checkpoint" not in logs:
            res.problems.append("a truncated last checkpoint did not fall back to last.prev with a warning")
        fin = self._inspect(trial_dir, t.framework, t.mode, True, n)
        ref_fp = self.fingerprints[t.framework]
        for rel, err in fin["broken"].items():
            res.bytes_lost += fin["sizes"].get(rel, 0)
            res.problems.append(f"after the resume {rel} does not load ({err})")
        if fin["temps"]:
            res.problems.append(f"temporary files left after the resume: {fin['temps']}")
        if fin["locks"]:
            res.problems.append(f"lock files left after the resume: {fin['locks']}")
        if t.mode == "run" and not fin.get("report"):
            res.problems.append("no report.html/report.md after the resumed run")
        res.max_abs_diff = max_abs_diff(ref_fp, fin)
        if t.framework == "torch":
            if fin["learned"] != ref_fp["learned"] or fin["probs"] != ref_fp["probs"]:
                res.problems.append(f"results differ from the uninterrupted run (max diff {res.max_abs_diff:g})")
            if fin["weights"] != ref_fp["weights"]:
                res.problems.append("final weights/optimizer state differ from the uninterrupted run")
        elif res.max_abs_diff > KERAS_BOUND:
            res.problems.append(f"keras results differ by {res.max_abs_diff:g} > {KERAS_BOUND:g}")
        res.resumed_ok = not res.problems


def summary_line(results: list[TrialResult]) -> str:
    return (f"fault suite: trials={len(results)} faults_injected={sum(r.injected for r in results)} "
            f"resumed_ok={sum(r.resumed_ok for r in results)} bytes_lost={sum(r.bytes_lost for r in results)}")


def _describe(r: TrialResult) -> str:
    t = r.trial
    where = t["phase"] + (f"/{t['sub']}" if t["sub"] else "")
    status = "ok" if r.resumed_ok else "FAILED: " + "; ".join(r.problems)
    diff = f" diff={r.max_abs_diff:g}" if t["framework"] == "keras" else ""
    return (f"trial {t['index']:3d} {t['framework']:5s} {t['mode']:5s} {where:17s} kills={r.kills} "
            f"lost={r.bytes_lost}{diff} {r.seconds:5.1f}s {status}")


def _run_in_workers(suite: Suite, trials: list[Trial], jobs: int) -> list[TrialResult]:
    """Run ``trials`` in ``jobs`` forked worker processes, each taking the next unclaimed trial (claimed by
    creating ``claim-INDEX`` exclusively); returns the results in trial order. A worker is a fork of this
    process, so it starts no framework runtime either: its runs and inspections are forks of their own."""
    claims = suite.workdir / "claims"
    claims.mkdir()

    def work() -> None:
        for t in trials:
            try:
                os.close(os.open(claims / f"claim-{t.index}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            r = suite.run_trial(t)
            (claims / f"result-{t.index}.json").write_text(json.dumps(asdict(r)))
            suite.echo(_describe(r))

    pids = []
    for _ in range(jobs):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                work()
                code = 0
            except BaseException:  # noqa: BLE001 - the parent reports the trials left without a result
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    codes = [_wait(pid, timeout=3600) for pid in pids]
    results = []
    for t in trials:
        path = claims / f"result-{t.index}.json"
        if path.is_file():
            results.append(TrialResult(**json.loads(path.read_text())))
        else:
            results.append(TrialResult(trial=asdict(t), problems=[f"no result: a worker exited with {codes}"]))
    shutil.rmtree(claims, ignore_errors=True)
    return results


def run_suite(n_torch: int, n_keras: int, seed: int, workdir: Path, echo: Callable[[str], None] = print,
              keep: bool = False, jobs: int = 1) -> dict:
    """Run the trials, ``jobs`` at a time; returns {"trials": [...], "summary": line, "keras_max_abs_diff": x}."""
    from alexbench.frameworks import import_keras, import_torch

    if not hasattr(os, "fork"):
        raise SystemExit("the kill suite needs os.fork (Linux or macOS)")
    # torch and torchvision before TensorFlow (see frameworks.import_keras); only imports here: no
    # framework runtime may start in this process, because every run happens in a forked child
    import_keras(1)  # system_info() reports the TensorFlow/Keras versions of every run: import them once here
    import_torch(1)
    import alexbench.report  # imported once here rather than in every child
    import alexbench.runner
    import alexbench.train  # noqa: F401

    suite = Suite(workdir, echo, keep)
    trials = plan_trials(n_torch, n_keras, seed)
    if jobs > 1:
        for t in trials:  # the uninterrupted references first, here, so that every worker has them all
            suite.reference(t.framework, t.mode, t.checkpoint_minutes)
        results = _run_in_workers(suite, trials, jobs)
    else:
        results = []
        for t in trials:
            r = suite.run_trial(t)
            results.append(r)
            echo(_describe(r))
    keras = [r.max_abs_diff for r in results if r.trial["framework"] == "keras"]
    line = summary_line(results)
    return {"trials": [asdict(r) for r in results], "summary": line,
            "keras_max_abs_diff": max(keras) if keras else None, "references": {
                f"{k[0]}/{k[1]}/{k[2]:g}": v for k, v in suite.refs.items()}}


def _suite_main(a: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    n_keras = a.trials // 10 if a.keras_trials is None else a.keras_trials
    if a.trials < 0 or n_keras < 0:
        p.error("trial counts must be >= 0")
    if a.jobs < 1:
        p.error("--jobs must be >= 1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if a.workdir:
        workdir = Path(a.workdir)
        if workdir.exists() and any(workdir.iterdir()):
            p.error(f"--workdir {workdir} is not empty")
        workdir.mkdir(parents=True, exist_ok=True)
        out = run_suite(a.trials, n_keras, a.seed, workdir, lambda s: print(s, flush=True), a.keep, a.jobs)
    else:
        with tempfile.TemporaryDirectory(prefix="alexbench-kills-") as tmp:
            out = run_suite(a.trials, n_keras, a.seed, Path(tmp), lambda s: print(s, flush=True), jobs=a.jobs)
    if out["keras_max_abs_diff"] is not None:
        print(f"keras: largest difference between a resumed run and its reference: {out['keras_max_abs_diff']:g} "
              f"(bound {KERAS_BOUND:g})")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    print(out["summary"], flush=True)
    failed = [t for t in out["trials"] if not t["resumed_ok"] or t["bytes_lost"]]
    return 1 if failed else 0


def _train_main(a: argparse.Namespace) -> int:
    from alexbench.config import validate
    from alexbench.errors import UserError
    from alexbench.train import train

    cfg = validate(tiny_config_dict(a.framework, **{"epochs": a.epochs, "checkpoint_minutes": a.ckpt_minutes,
                                                    "keras_backend": a.keras_backend, **json.loads(a.over)}))
    hooks = HoldAt(Path(a.hold), a.at_step) if a.hold else None
    try:
        m = train(cfg, a.out, data=synthetic_dataset(), resume=a.resume, quiet=True, hooks=hooks)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"accuracy": m["test"]["accuracy"], "loss": m["test"]["loss"]}))
    return 0


def _hold_main(a: argparse.Namespace) -> int:
    from alexbench.errors import UserError
    from alexbench.runner import run

    try:
        run(a.preset, a.out, data=a.data, hooks=HoldAt(Path(a.hold_file), 0))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m support.kills", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("suite", help="seeded kill-and-resume trials")
    s.add_argument("--trials", type=int, default=100, help="torch trials (default 100)")
    s.add_argument("--keras-trials", type=int, default=None, help="keras trials (default: trials // 10)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workdir", default=None,
                   help="work here and keep the folders of failed trials (default: a temp folder, removed)")
    s.add_argument("--keep", action="store_true", help="with --workdir: keep the folders of passed trials too")
    s.add_argument("--json", default=None, help="write every trial's result here")
    s.add_argument("--jobs", type=int, default=1,
                   help="trials run at a time, each in a worker process (default 1); the references run first")
    t = sub.add_parser("train", help="one tiny train run on the toy set")
    t.add_argument("out")
    t.add_argument("framework", choices=["torch", "keras"])
    t.add_argument("--resume", action="store_true")
    t.add_argument("--ckpt-minutes", type=float, default=10.0)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--hold", default=None, help="wait before step --at-step while this file exists")
    t.add_argument("--at-step", type=int, default=0)
    t.add_argument("--keras-backend", default="tensorflow", help="Keras's backend (trains in this process)")
    t.add_argument("--over", default="{}", help="more config keys, as JSON")
    h = sub.add_parser("hold", help="one alexbench run held before its first step while HOLD_FILE exists")
    h.add_argument("hold_file")
    h.add_argument("--preset", required=True)
    h.add_argument("--out", required=True)
    h.add_argument("--data", required=True)
    a = p.parse_args(argv)
    if a.mode == "suite":
        return _suite_main(a, p)
    return _train_main(a) if a.mode == "train" else _hold_main(a)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
