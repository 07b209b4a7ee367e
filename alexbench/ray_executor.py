"""``alexbench run --executor ray``: every entry of the matrix is one Ray task.

- Resources come from the entry: ``threads`` CPUs (1 when unset; the entry then trains
  with 1 thread), and one GPU when ``device`` asks for one (torch ``cuda``, Keras ``gpu``).
  ``device: auto`` asks for none.
- Each task is an ordinary :func:`alexbench.train.train` into ``--out/<entry>``, in a
  fresh worker process (``max_calls=1``: no framework state carries over between entries).
  ``--out`` must be a folder every worker can reach (a shared filesystem on a cluster);
  a worker that cannot see it fails the entry naming the node. The dataset travels
  through Ray's object store, so workers need no access to ``--data``.
- The driver rebuilds the report each time an entry finishes, and every
  :data:`REPORT_EVERY` seconds while a history file changed (epochs of running entries).
- A worker that dies mid-entry (killed, out of memory, node lost) is retried by Ray (up to
  :data:`MAX_RETRIES` times); the retry finds the entry's ``config.yaml`` and resumes from
  its last checkpoint. An error raised by the training itself is not retried: the entry is
  recorded as failed (or skipped, for unavailable weights) and the others go on, as with
  the local executor.
- Without ``--address`` a local Ray instance is started on this machine and stopped at
  the end. It listens on 127.0.0.1 only (:data:`LOOPBACK_ENV` set to 0 before Ray is
  imported: Ray's single-machine mode), and leaves running out of memory to the operating
  system: Ray's memory monitor, which kills tasks whenever the whole machine (other
  programs included) nears 95% of its memory, is off (:data:`LOCAL_ENV`). With
  ``--address`` the driver joins that cluster (``auto`` finds one started with ``ray start``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from alexbench import rundir
from alexbench.config import TrainConfig, validate
from alexbench.errors import UserError

__all__ = ["entry_resources", "run_on_ray", "LOCAL_ENV", "LOOPBACK_ENV", "MAX_RETRIES", "REPORT_EVERY"]

MAX_RETRIES = 3
REPORT_EVERY = 30.0
# "0": Ray runs as one machine and binds to 127.0.0.1 (it otherwise resolves even 127.0.0.1 to
# the address other hosts reach it at); read once, when ray is imported
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOCAL_ENV = {LOOPBACK_ENV: "0", "RAY_memory_monitor_refresh_ms": "0"}  # for a local instance


def entry_resources(cfg: TrainConfig) -> dict[str, float]:
    """Ray resources of one entry: CPUs = threads (1 when unset), ``devices`` GPUs when ``device`` names one."""
    dev = cfg.device
    gpu = dev.startswith("cuda") if cfg.framework == "torch" else dev.startswith("gpu")
    if gpu and ":" in dev and dev.split(":", 1)[1] not in ("", "0"):
        raise UserError(f"device: {dev!r}: under Ray each entry gets the GPU Ray assigns it; use "
                        f"'{dev.split(':')[0]}'")
    return {"num_cpus": float(cfg.threads or 1), "num_gpus": float(cfg.devices) if gpu else 0.0}


def _import_ray(local: bool) -> Any:
    if local and "ray" not in sys.modules:
        for key, value in LOCAL_ENV.items():
            os.environ.setdefault(key, value)
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray: Ray is not installed; pip install 'alexbench[ray]'") from None
    return ray


def _train_entry(cfg_data: dict, run_dir: str, data: Any, resume: bool, force: bool) -> str:
    """The body of one Ray task (runs in a worker process); its exceptions reach the driver."""
    from alexbench.train import train

    out = Path(run_dir)
    if not out.parent.is_dir():
        import socket

        raise UserError(f"--out: {out.parent} is not reachable from the Ray worker on {socket.gethostname()}; "
                        "use a folder every node shares")
    cfg = validate(cfg_data, f"{out.name}: config")
    # a retry after a killed attempt finds the entry's config.yaml: continue from its checkpoint
    train(cfg, out, data=data, resume=resume or (out / rundir.CONFIG).exists(), force=force, quiet=True,
          keep_failed=True)
    return "finished"


def _start(ray: Any, address: str | None) -> bool:
    """Connect to ``address`` or start a local instance; True if this call started one."""
    if ray.is_initialized():
        return False
    opts: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": True}
    if address:
        try:
            ray.init(address=address, **opts)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"--address {address}: cannot join a Ray cluster there ({exc})") from None
    else:
        ray.init(**opts)
    return True


def run_on_ray(todo: list[tuple[int, str, TrainConfig, Path, bool]], *, data: Any, address: str | None,
               force: bool, started: Callable[[int, str], None],
               ended: Callable[[int, str, TrainConfig, BaseException | None], None],
               report: Callable[[], None]) -> None:
    """Submit every entry of ``todo`` (``(index, slug, config, run folder, resume)``) as a Ray task
    and wait for all of them.

    ``started(index, slug)`` runs as an entry is submitted; ``ended(index, slug, config, error)``
    as its task returns (``error`` None) or raises (the training's own exception); ``report()``
    rebuilds the report. As with the local executor, a failed entry does not stop the others.
    """
    for _, _, cfg, run_dir, resume in todo:
        entry_resources(cfg)  # refuse a bad device before starting anything
        if not resume and (run_dir / rundir.CONFIG).exists():
            # a task resumes whenever config.yaml exists (that is how a retry continues), so a fresh
            # entry must not find one from elsewhere
            raise UserError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
    if not todo:
        return
    ray = _import_ray(local=not address)
    own = _start(ray, address)
    try:
        task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, max_calls=1)(_train_entry)
        data_ref = ray.put(data)
        pending: dict[Any, tuple[int, str, TrainConfig]] = {}
        for k, slug, cfg, run_dir, resume in todo:
            ref = task.options(**entry_resources(cfg)).remote(cfg.model_dump(mode="json"), str(run_dir), data_ref,
                                                              resume, force)
            pending[ref] = (k, slug, cfg)
            started(k, slug)
        seen, stale = _history_times(todo), False
        last_report = time.monotonic()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=REPORT_EVERY)
            for ref in done:
                k, slug, cfg = pending.pop(ref)
                try:
                    ray.get(ref)
                    error: BaseException | None = None
                except ray.exceptions.RayTaskError as exc:  # the training raised: its own exception
                    error = exc.cause if isinstance(exc.cause, BaseException) else exc
                except ray.exceptions.RayError as exc:  # the worker kept dying: retries used up
                    error = RuntimeError(f"the Ray task failed after {MAX_RETRIES} retries: {type(exc).__name__}")
                ended(k, slug, cfg, error)  # also rebuilds the report
                last_report, stale = time.monotonic(), False
            now = _history_times(todo)
            stale, seen = stale or now != seen, now
            if stale and time.monotonic() - last_report >= REPORT_EVERY:
                report()  # epochs of entries still running
                last_report, stale = time.monotonic(), False
    finally:
        if own:
            ray.shutdown()


def _history_times(todo: list) -> dict[str, float]:
    times = {}
    for _, slug, _, run_dir, _ in todo:
        try:
            times[slug] = os.stat(run_dir / rundir.HISTORY).st_mtime
        except OSError:
            pass
    return times
