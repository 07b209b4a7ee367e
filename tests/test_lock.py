"""One writer per output folder: a second `run` or `train` refuses, naming the first one's PID;
the lock file records the PID; a lock left by a dead process is taken over.

The end-to-end test starts a real `alexbench run` in a subprocess (tests/faultrun.py holds
it before its first step), aims a second `run` and a second `train` at the same folders,
then SIGKILLs the first and resumes: the stale locks are taken over and the run finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alexbench.atomic import RunLock
from alexbench.cli import main
from alexbench.errors import UserError
from alexbench.faults import _preset_text, write_binary_source

SLUG = "alexnet_cifar-torch-scratch-s0"


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=60)
    return p.pid


def refused(rc: int, err: str, command: str, pid: int) -> str:
    lines = [line for line in err.splitlines() if line]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"alexbench {command}: error: "), lines[0]
    assert f"another alexbench process (PID {pid}) is writing here" in lines[0], lines[0]
    return lines[0]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the first run exited ({proc.returncode}) before {path.name} appeared:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout}s")
        time.sleep(0.1)


def test_second_run_and_second_train_refuse_then_stale_locks_are_taken_over(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALEXBENCH_DATA", str(tmp_path / "home"))
    src = write_binary_source(tmp_path / "src")
    preset = tmp_path / "tiny.yaml"
    preset.write_text(_preset_text("torch", 10.0))
    out = tmp_path / "out"
    hold = tmp_path / "hold"
    hold.touch()
    run_args = ["run", "--preset", str(preset), "--out", str(out), "--data", str(src)]
    first = subprocess.Popen([sys.executable, str(Path(__file__).parent / "faultrun.py"), str(hold), *run_args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        run_lock, train_lock = out / ".alexbench-run.lock", out / SLUG / ".alexbench.lock"
        # the run holds its locks and has reached its first training step, so it writes nothing more
        wait_for(hold.with_suffix(".held"), first)
        assert run_lock.read_text().split() == [str(first.pid)]
        assert train_lock.read_text().split() == [str(first.pid)]
        listing = sorted(str(p.relative_to(out)) for p in out.rglob("*"))

        for extra in ([], ["--resume"]):
            refused(main(run_args + extra), capsys.readouterr().err, "run", first.pid)
        train_args = ["train", "--model", "alexnet_cifar", "--framework", "torch", "--data", str(src),
                      "--out", str(out / SLUG)]
        for extra in ([], ["--resume"]):
            refused(main(train_args + extra), capsys.readouterr().err, "train", first.pid)
        # the refused commands changed nothing
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == listing
        assert run_lock.read_text().split() == [str(first.pid)]
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert run_lock.exists() and train_lock.exists()  # a SIGKILL leaves its locks behind

    hold.unlink()
    assert main(run_args + ["--resume"]) == 0, capsys.readouterr().err
    log = (out / SLUG / "log.txt").read_text()
    assert f"took over a stale lock left by PID {first.pid}" in log
    assert json.loads((out / "run.json").read_text())["entries"][SLUG]["status"] == "finished"
    assert not run_lock.exists() and not train_lock.exists()  # released at the end


def test_lock_records_the_pid_and_is_released(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.path.read_text().split() == [str(os.getpid())]
        assert lock.took_over_from is None
    assert not lock.path.exists()


def test_stale_lock_of_an_exited_process_is_taken_over(tmp_path):
    pid = dead_pid()
    (tmp_path / ".alexbench.lock").write_text(f"{pid}\n")
    with RunLock(tmp_path) as lock:
        assert lock.took_over_from == pid
        assert lock.path.read_text().split() == [str(os.getpid())]
    assert not lock.path.exists()


@pytest.mark.parametrize("content", ["", "not a pid\n", "-5\n"])
def test_unreadable_lock_is_taken_over(tmp_path, content):
    (tmp_path / ".alexbench.lock").write_text(content)
    with RunLock(tmp_path) as lock:
        assert lock.path.read_text().split() == [str(os.getpid())]


def test_lock_of_a_live_process_refuses_and_names_it(tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        out = tmp_path / "run"
        out.mkdir()
        (out / ".alexbench.lock").write_text(f"{sleeper.pid}\n")
        with pytest.raises(UserError, match=f"PID {sleeper.pid}.*remove {out / '.alexbench.lock'}"):
            RunLock(out).acquire()
        rc = main(["train", "--model", "alexnet_cifar", "--framework", "torch", "--out", str(out)])
        refused(rc, capsys.readouterr().err, "train", sleeper.pid)
        assert sorted(p.name for p in out.iterdir()) == [".alexbench.lock"]  # nothing written
        assert (out / ".alexbench.lock").read_text().split() == [str(sleeper.pid)]
    finally:
        sleeper.kill()
        sleeper.wait(timeout=60)


def test_release_never_removes_another_owners_lock(tmp_path):
    lock = RunLock(tmp_path).acquire()
    lock.path.write_text("1\n")  # someone else took it over meanwhile
    lock.release()
    assert lock.path.read_text() == "1\n"
