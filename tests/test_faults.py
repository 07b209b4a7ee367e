"""Kill tests: SIGKILL at seeded moments, then --resume; nothing lost, results bitwise equal.

The trials themselves run in one subprocess, ``python -m support.kills suite`` with a small
trial count (the same command runs 100+ trials when asked): it imports the frameworks
once, computes the uninterrupted reference runs once, and forks one child per run, so
a trial costs seconds instead of two interpreter start-ups; two trials run at a time
(``--jobs 2``: two forked workers). Each trial here is one test item. See
tests/support/kills.py for the kill points and the definition of ``bytes_lost`` (bytes of
previously complete files damaged or lost by a kill: must be 0).

The suite's summary line, ``fault suite: trials=N faults_injected=N resumed_ok=N
bytes_lost=0``, is printed in pytest's terminal summary.

Below the trials: the corrupt-latest-checkpoint fallback, the exact regressions for the
bugs the trials found, and the clean-up of temp files left by a killed writer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import synthetic_dataset, tiny_config
from support.kills import KERAS_BOUND, PHASES, command
from support.toydata import write_binary_source

from alexbench import checkpoint as ckpt
from alexbench.atomic import _HOST, atomic_write_text, remove_stale_temps
from alexbench.cli import main

N_TORCH = 20
N_KERAS = 4
TIMING = {"seconds", "elapsed_seconds", "images_per_second"}


class _SummaryLine:
    """Registered while the session runs: writes the fault suite's line into pytest's terminal summary."""

    def __init__(self, line: str) -> None:
        self.line = line

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_line(self.line)


@pytest.fixture(scope="session")
def fault_suite(tmp_path_factory, request):
    work = tmp_path_factory.mktemp("faults")
    report = work / "results.json"
    cmd, env = command("suite", "--trials", str(N_TORCH), "--keras-trials", str(N_KERAS), "--seed", "0",
                       "--workdir", str(work / "trials"), "--json", str(report), "--jobs", "2")
    env["PYTHONHASHSEED"] = "0"
    env.pop("ALEXBENCH_DATA", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    if not report.exists():
        pytest.fail(f"the fault suite did not finish (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}")
    out = json.loads(report.read_text())
    out["stdout"] = proc.stdout
    out["returncode"] = proc.returncode
    request.config.pluginmanager.register(_SummaryLine(out["summary"]), "alexbench-fault-suite-summary")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("index", range(N_TORCH + N_KERAS))
def test_kill_then_resume_trial(fault_suite, index):
    r = fault_suite["trials"][index]
    t = r["trial"]
    label = f"{t['framework']} {t['mode']} {t['phase']}/{t['sub']} k={t['k']} ckpt={t['checkpoint_minutes']}"
    assert r["injected"] >= 1, f"{label}: no kill landed"
    assert r["bytes_lost"] == 0, f"{label}: {r['problems']}"
    assert r["resumed_ok"], f"{label}: {r['problems']}"


@pytest.mark.slow
def test_fault_suite_summary(fault_suite):
    trials = fault_suite["trials"]
    line = fault_suite["summary"]
    n = len(trials)
    assert n == N_TORCH + N_KERAS
    assert line.startswith(f"fault suite: trials={n} faults_injected=")
    assert line.endswith(f"resumed_ok={n} bytes_lost=0"), line
    assert sum(r["injected"] for r in trials) >= n
    assert line in fault_suite["stdout"].splitlines()  # the command prints the same line last
    assert fault_suite["returncode"] == 0
    # every kind of kill was exercised, in both the train and the run (report) command
    covered = {r["trial"]["phase"] for r in trials}
    assert covered == set(PHASES), covered
    torn = {r["trial"]["phase"] for r in trials if r["trial"]["sub"] == "torn"}
    assert {"checkpoint", "report"} <= torn, torn
    assert {r["trial"]["mode"] for r in trials} == {"train", "run"}
    assert sum(r["kills"] >= 2 for r in trials) >= 1  # some resumes were killed again


@pytest.mark.slow
def test_keras_resume_within_measured_bound(fault_suite):
    keras = [r for r in fault_suite["trials"] if r["trial"]["framework"] == "keras"]
    assert len(keras) == N_KERAS
    assert fault_suite["keras_max_abs_diff"] <= KERAS_BOUND
    assert all(r["max_abs_diff"] <= KERAS_BOUND for r in keras)


# ----------------------------------------------------------------------------- corrupt latest checkpoint


def _learned(m: dict) -> dict:
    return {"test": m["test"], "best_epoch": m["best_epoch"],
            "epochs": [{k: v for k, v in e.items() if k not in TIMING} for e in m["epochs"]]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted tiny torch run (2 epochs), once for this module."""
    from alexbench.train import train

    return _learned(train(tiny_config("torch"), tmp_path_factory.mktemp("ref") / "r", data=synthetic_dataset()))


class _Stop(BaseException):
    """Stands in for a kill in-process: not an Exception, so nothing in the loop catches it."""


def _run_until(out: Path, stop_when, data=None) -> None:
    """Train (checkpoint after every step) until ``stop_when(progress)`` is true right after a last-checkpoint save."""
    from alexbench.hooks import Hooks
    from alexbench.train import train

    class StopAfter(Hooks):
        def checkpoint_written(self, name, path, progress):
            if name == "last" and stop_when(progress):
                raise _Stop

    with pytest.raises(_Stop):
        train(tiny_config("torch", checkpoint_minutes=1e-6), out,
              data=data if data is not None else synthetic_dataset(), hooks=StopAfter())


def test_truncated_last_falls_back_to_prev_with_a_warning(tmp_path, monkeypatch, capsys, reference):
    from alexbench.train import train

    out = tmp_path / "r"
    _run_until(out, lambda p: p["epoch"] == 1 and p["step"] == 3)
    last, prev = out / "checkpoints" / "last.pt", out / "checkpoints" / "last.prev.pt"
    assert prev.exists()
    with open(last, "r+b") as fh:
        fh.truncate(last.stat().st_size // 3)
    capsys.readouterr()
    m = train(tiny_config("torch", checkpoint_minutes=1e-6), out, data=synthetic_dataset(), resume=True)
    err = capsys.readouterr().err
    assert "last.pt: not a loadable alexbench checkpoint" in err
    assert f"warning: resumed from the previous good checkpoint {prev}" in err
    assert _learned(m) == reference


def test_both_checkpoints_corrupt_is_one_clear_error(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    src = write_binary_source(tmp_path / "src")
    monkeypatch.setenv("ALEXBENCH_DATA", str(tmp_path / "home"))
    # the resume names the data the run started on, so the refusal is about the checkpoints, not the data
    _run_until(out, lambda p: p["epoch"] == 0 and p["step"] == 3, data=str(src))
    for name in ("last.pt", "last.prev.pt"):
        (out / "checkpoints" / name).write_bytes(b"PK\x03\x04 garbage")
    rc = main(["train", "--model", "alexnet_cifar", "--framework", "torch", "--out", str(out), "--resume",
               "--data", str(src)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("alexbench train: error:")]
    assert rc == 2 and "Traceback" not in err and len(errors) == 1, err
    assert "last.pt: not a loadable alexbench checkpoint" in errors[0]
    assert "last.prev.pt: not a loadable alexbench checkpoint" in errors[0]


# ----------------------------------------------------------------------------- regressions found by the trials


def test_resume_from_the_checkpoint_after_an_epochs_final_step(tmp_path, monkeypatch, reference):
    """A kill between the checkpoint after the epoch's last step and the epoch-end one: nothing left to
    run in that epoch on resume (this crashed with UnboundLocalError: lr)."""
    from alexbench.train import train

    out = tmp_path / "r"
    _run_until(out, lambda p: p["epoch"] == 0 and p["step"] == 6)  # 96 images / 16 = 6 steps
    meta = json.loads(__import__("torch").load(out / "checkpoints" / "last.pt", weights_only=True)["meta_json"])
    assert meta["progress"]["step"] == 6 and meta["progress"]["epoch"] == 0
    m = train(tiny_config("torch", checkpoint_minutes=1e-6), out, data=synthetic_dataset(), resume=True)
    assert _learned(m) == reference


def test_no_link_temp_left_when_prev_already_is_last(tmp_path):
    """A kill after last was hard-linked to last.prev but before the new last replaced it leaves two
    names of one file; the next save used to leave last.prev.pt.link.tmp behind (rename is a no-op)."""
    ckpt.save(tmp_path, "last", "torch", lambda p: Path(p).write_bytes(b"one"))
    d = tmp_path / "checkpoints"
    os.link(d / "last.pt", d / "last.prev.pt")
    ckpt.save(tmp_path, "last", "torch", lambda p: Path(p).write_bytes(b"two"))
    assert sorted(p.name for p in d.iterdir()) == ["last.prev.pt", "last.pt"]
    assert (d / "last.prev.pt").read_bytes() == b"one" and (d / "last.pt").read_bytes() == b"two"


_KILLED_WRITER = """
import os, signal, sys
from alexbench.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as fh:
        fh.write(b"half of a checkpoint")
        fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temp_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)])
    assert proc.wait(timeout=120) == -signal.SIGKILL
    temps = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and str(proc.pid) in temps[0]
    assert target.read_bytes() == b"previous"  # the kill left the previous file whole
    # temps that are not a dead writer's stay: ours (live), another host's, and files we did not name
    live = tmp_path / f".state.json.{_HOST}-{os.getpid()}-abcdefgh.json.tmp"
    other_host = tmp_path / f".state.json.elsewhere-{proc.pid}-abcdefgh.json.tmp"
    users = tmp_path / "notes.tmp"
    for p in (live, other_host, users):
        p.write_text("x")
    atomic_write_text(tmp_path / "other.txt", "new")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["last.pt", "other.txt", live.name, other_host.name, users.name]), left
    assert remove_stale_temps(tmp_path) == []
