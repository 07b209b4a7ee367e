"""One writer per output folder: a second `run` or `train` refuses, naming the first one's PID;
the lock is an flock on a file that records the PID; a lock file left by a dead process is
just an unlocked file and is taken over, whatever PID it names (PIDs get reused), and when
two processes race to take over the same stale lock, exactly one wins.

The end-to-end test starts a real `alexbench run` in a subprocess (the kill harness, tests/support/kills.py, holds
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
from support import kills
from support.toydata import write_binary_source

from alexbench.atomic import RunLock
from alexbench.cli import main
from alexbench.errors import UserError
from alexbench.rundir import run_slug

SLUG = run_slug("alexnet_cifar", "torch", None, 0)


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


@pytest.mark.slow
def test_second_run_and_second_train_refuse_then_stale_locks_are_taken_over(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALEXBENCH_DATA", str(tmp_path / "home"))
    src = write_binary_source(tmp_path / "src")
    preset = tmp_path / "tiny.yaml"
    preset.write_text(kills.preset_text("torch", 10.0))
    out = tmp_path / "out"
    hold = tmp_path / "hold"
    hold.touch()
    run_args = ["run", "--preset", str(preset), "--out", str(out), "--data", str(src)]
    cmd, env = kills.command("hold", str(hold), *run_args[1:])
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
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
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": _SRC})
    try:
        assert sleeper.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"{out}: another alexbench process \\(PID {sleeper.pid}\\) is writing"):
            RunLock(out).acquire()
        rc = main(["train", "--model", "alexnet_cifar", "--framework", "torch", "--out", str(out)])
        refused(rc, capsys.readouterr().err, "train", sleeper.pid)
        assert sorted(p.name for p in out.iterdir()) == [".alexbench.lock"]  # nothing written
        assert (out / ".alexbench.lock").read_text().split() == [str(sleeper.pid)]
    finally:
        sleeper.kill()
        sleeper.wait(timeout=60)


_SRC = str(Path(__file__).resolve().parents[1])
# hold the lock of the folder argv[1] until killed
_HOLDER = """
import sys, time
from alexbench.atomic import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_live_pid_in_an_unlocked_file_is_taken_over(tmp_path):
    """A PID in the file proves nothing (it may belong to an unrelated process now): only the flock counts."""
    (tmp_path / ".alexbench.lock").write_text(f"{os.getppid()}\n")  # alive, and not holding the lock
    with RunLock(tmp_path) as lock:
        assert lock.took_over_from == os.getppid()
        assert lock.path.read_text().split() == [str(os.getpid())]


# A taker process plays many rounds. Each round: wait for "go" on stdin, try the lock,
# print "won <PID it took over from>" or "refused <message>"; a winner then waits for "check",
# prints whether the lock file at its path is still the one it locked and still names it,
# and releases.
_TAKER = """
import os, sys
from alexbench.atomic import RunLock
from alexbench.errors import UserError
for line in sys.stdin:
    if line.strip() != "go":
        break
    lock = RunLock(sys.argv[1])
    try:
        lock.acquire()
    except UserError as exc:
        print("refused", exc, flush=True)
        continue
    mine = os.stat(lock.path).st_ino
    print("won", lock.took_over_from, flush=True)
    assert sys.stdin.readline().strip() == "check"
    intact = os.stat(lock.path).st_ino == mine and lock.path.read_text().split() == [str(os.getpid())]
    print("intact" if intact else "replaced", flush=True)
    lock.release()
"""


def test_two_takers_of_a_stale_lock_exactly_one_wins(tmp_path):
    """Two processes take over the same stale lock at the same moment, 100 times over: exactly one
    wins each time, the loser names the winner, and the winner's lock file stays in place.

    (The PID-file lock this replaced failed here: both takers could find the PID dead, and the
    second then deleted the first one's fresh lock file and wrote its own.)
    """
    folder = tmp_path / "run"
    folder.mkdir()
    lock_file = folder / ".alexbench.lock"
    takers = [subprocess.Popen([sys.executable, "-c", _TAKER, str(folder)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                               env={**os.environ, "PYTHONPATH": _SRC}) for _ in range(2)]
    stale = dead_pid()
    try:
        for round_ in range(100):
            lock_file.write_text(f"{stale}\n")  # left behind by a process that died holding it
            for t in takers:
                t.stdin.write("go\n")
                t.stdin.flush()
            lines = [t.stdout.readline().split() for t in takers]
            won = [i for i, line in enumerate(lines) if line[:1] == ["won"]]
            assert len(won) == 1, (round_, lines)
            w = won[0]
            winner = takers[w]
            assert lines[w] == ["won", str(stale)], (round_, lines)
            assert f"another alexbench process (PID {winner.pid}) is writing here" in " ".join(lines[1 - w])
            assert lock_file.read_text().split() == [str(winner.pid)]
            winner.stdin.write("check\n")
            winner.stdin.flush()
            assert winner.stdout.readline().strip() == "intact", round_
            while lock_file.exists():  # the winner releases (and removes the file) right after
                time.sleep(0.001)
        for t in takers:
            t.stdin.close()
            assert t.wait(timeout=60) == 0, t.stderr.read()
    finally:
        for t in takers:
            t.kill()
            t.wait(timeout=60)


def test_release_never_removes_another_owners_lock(tmp_path):
    lock = RunLock(tmp_path).acquire()
    lock.path.write_text("1\n")  # someone else took it over meanwhile
    lock.release()
    assert lock.path.read_text() == "1\n"
