"""Long-lived worker processes and interleaved timing rounds.

A :class:`Worker` is one ``python -m benchmarks.worker`` process holding one built
configuration (an engine, a plain loop, a GEMM). The parent talks to it with one JSON
line per request on stdin and one JSON line per answer on stdout; everything the
frameworks print goes to the worker's log file. :func:`interleave` asks each
configuration for one timed block per round, in turn, so that configurations compared
with each other always run minutes apart at most, under the same machine load.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A worker failed or timed out; the message carries the tail of its log."""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Worker:
    """One configuration in its own process. ``spec`` is passed to :func:`benchmarks.worker.build`."""

    def __init__(self, name: str, spec: dict, log_dir: Path, env: dict | None = None) -> None:
        self.name = name
        self.spec = spec
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name.replace('/', '_').replace(' ', '_')}.log"
        self._log = open(self.log_path, "w")
        full_env = dict(os.environ)
        full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker"], cwd=str(REPO),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=full_env, text=True, bufsize=1)
        self._send(spec)
        self.setup: dict | None = None

    def _send(self, obj: dict) -> None:
        try:
            stdin = self.proc.stdin
            assert stdin is not None  # Popen(stdin=PIPE)
            stdin.write(json.dumps(obj) + "\n")
            stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"worker {self.name} died; its log ends with:\n{_tail(self.log_path)}") from None

    def _recv(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise BenchError(f"worker {self.name} timed out after {timeout:.0f}s; log:\n{_tail(self.log_path)}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 5.0))
            if ready:
                line = self.proc.stdout.readline()  # type: ignore[union-attr]  # Popen(stdout=PIPE)
                if not line:
                    self.proc.wait()
                    raise BenchError(f"worker {self.name} exited ({self.proc.returncode}); "
                                     f"its log ends with:\n{_tail(self.log_path)}")
                reply = json.loads(line)
                if "error" in reply:
                    raise BenchError(f"worker {self.name}: {reply['error']}\n{reply.get('traceback', '')}")
                return reply

    def wait_ready(self, timeout: float = 600) -> dict:
        if self.setup is None:
            self.setup = self._recv(timeout)
        return self.setup

    def call(self, op: dict, timeout: float = 900) -> dict:
        self.wait_ready(timeout)
        self._send(op)
        return self._recv(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send({"op": "exit"})
                self.proc.wait(timeout=30)
            except (BenchError, subprocess.TimeoutExpired):
                self.kill()
        self._log.close()


@dataclass
class Config:
    """One measured configuration: a label, the worker that runs it and the request it sends."""

    label: str
    worker: Worker
    op: dict
    results: list[dict] = field(default_factory=list)
    warm: dict | None = None  # the untimed first round's answer (tracing, compiling)


def _cpu_times() -> tuple[float, float]:
    """(busy, total) CPU-seconds over all CPUs since boot, from /proc/stat (Linux)."""
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(vals) - vals[3] - vals[4]) / hz, sum(vals) / hz


class Machine:
    """Watches how much CPU *other* processes take, and waits (a bounded time) for quiet.

    On a shared machine another job can take a core for minutes. Before each timed
    block, while all our workers are idle, the machine is sampled for ``sample``
    seconds; if others keep more than ``threshold`` of all CPUs busy, it waits (at most
    ``max_wait`` seconds per block and ``budget`` seconds per run), then measures anyway.
    During each block, the CPU time of everything except the measured worker is recorded
    as ``others_cpu_share``, so contended blocks are visible in the results.
    """

    def __init__(self, threshold: float = 0.25, sample: float = 0.5, max_wait: float = 10.0,
                 budget: float = 120.0) -> None:
        self.threshold, self.sample, self.max_wait, self.budget = threshold, sample, max_wait, budget
        self.waited_total = 0.0
        self.others_shares: list[float] = []  # one per timed block
        self.ncpu = os.cpu_count() or 1
        try:
            _cpu_times()
            self.available = True
        except (OSError, ValueError, IndexError):
            self.available = False

    def busy_now(self) -> float | None:
        if not self.available:
            return None
        b0, t0 = _cpu_times()
        time.sleep(self.sample)
        b1, t1 = _cpu_times()
        return (b1 - b0) / max(t1 - t0, 1e-9)

    def wait_quiet(self) -> dict:
        busy = self.busy_now()
        waited = 0.0
        while (busy is not None and busy > self.threshold and waited < self.max_wait
               and self.waited_total < self.budget):
            time.sleep(1.0)
            waited += 1.0 + self.sample
            self.waited_total += 1.0 + self.sample
            busy = self.busy_now()
        return {"others_busy_before": busy, "waited_seconds": waited}

    def measure(self, worker: "Worker", op: dict) -> dict:
        gate = self.wait_quiet()
        b0 = _cpu_times()[0] if self.available else 0.0
        t0 = time.perf_counter()
        res = worker.call(op)
        wall = time.perf_counter() - t0
        res.update(gate)
        res["call_wall_seconds"] = wall
        if self.available and "cpu_seconds" in res:
            others = (_cpu_times()[0] - b0) - res["cpu_seconds"]
            res["others_cpu_share"] = max(0.0, others) / (wall * self.ncpu)
            self.others_shares.append(res["others_cpu_share"])
        return res


def interleave(configs: list[Config], rounds: int, warm_round: dict | None = None,
               log: Callable[[str], None] = print, machine: Machine | None = None) -> None:
    """Run ``rounds`` rounds; in each, every config runs its timed block once, in order.

    ``warm_round`` (merged into each op) is an untimed first round that absorbs
    tracing, compiling and first-touch allocation; its answer is kept in ``config.warm``.
    """
    machine = machine or Machine()
    for c in configs:
        c.worker.wait_ready()
    if warm_round is not None:
        for c in configs:
            t0 = time.perf_counter()
            c.warm = c.worker.call({**c.op, **warm_round})
            c.warm["wall_seconds"] = time.perf_counter() - t0
            log(f"  warm-up  {c.label:<34s} {time.perf_counter() - t0:6.1f}s")
    for r in range(rounds):
        for c in configs:
            res = machine.measure(c.worker, c.op)
            c.results.append(res)
            extra = f"{res['ips']:8.1f} img/s" if "ips" in res else ""
            if "flops" in res:
                extra = f"{res['flops'] / 1e9:8.0f} GFLOP/s"
            others = res.get("others_cpu_share")
            note = f"  (others {100 * others:3.0f}% CPU" if others is not None else "  ("
            note += f", waited {res['waited_seconds']:.0f}s)" if res.get("waited_seconds") else ")"
            log(f"  round {r + 1}  {c.label:<34s} {extra}{note}")


def median(values: Sequence[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else float("nan")


def spread(values: Sequence[float | None]) -> tuple[float, float]:
    vals = [v for v in values if v is not None]
    return (float(min(vals)), float(max(vals))) if vals else (float("nan"), float("nan"))


def paired_ratio(a: Config, b: Config, key: str = "ips") -> dict[str, Any]:
    """Median over rounds of a's figure / b's figure from the same round."""
    ratios = [x[key] / y[key] for x, y in zip(a.results, b.results) if y.get(key)]
    return {"median": median(ratios), "rounds": ratios, "min": spread(ratios)[0], "max": spread(ratios)[1]}


def summary(c: Config, key: str = "ips") -> dict[str, Any]:
    """Median, range and per-round values of one figure, with the median CPU share others took meanwhile."""
    vals = [r[key] for r in c.results]
    lo, hi = spread(vals)
    others = [r.get("others_cpu_share") for r in c.results]
    return {"median": median(vals), "min": lo, "max": hi, "rounds": vals, "others_cpu_share_median": median(others)}
