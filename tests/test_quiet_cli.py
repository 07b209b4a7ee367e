"""The CLI shows none of TensorFlow's native start-up lines unless --debug asks for them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import write_image_folder

NOISE = re.compile(r"absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|^[IWE]\d{4} ", re.M)
ROOT = Path(__file__).resolve().parents[1]
DEBUG = ("--debug", "parity", "--model", "alexnet_cifar", "--batch", "2")


def _alexbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "ALEXBENCH_NATIVE_LOGS", "ALEXBENCH_QUIET")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "alexbench", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Each command below in a fresh interpreter, two at a time (each one mostly imports its frameworks),
    and the --debug one: command -> its finished process."""
    tmp = tmp_path_factory.mktemp("quiet")
    data = write_image_folder(tmp / "imgs", per_class=4)
    tiny = ["--set", "epochs=1", "--set", "batch_size=4", "--set", "model_options.width=0.125",
            "--set", "precision=fp32", "--set", "threads=1", "--set", "val_fraction=0.25"]
    cmds = [
        ("models",),
        ("parity", "--model", "alexnet_cifar", "--batch", "2"),
        ("data", str(data)),
        *[("train", "--model", "alexnet_cifar", "--framework", fw, "--data", str(data), *tiny,
           "--out", str(tmp / f"run-{fw}")) for fw in ("torch", "keras")],
        DEBUG,
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(cmds, pool.map(lambda cmd: _alexbench(*cmd, cwd=tmp), cmds)))


def test_commands_print_no_tensorflow_startup_lines(commands) -> None:
    quiet = {cmd: proc for cmd, proc in commands.items() if cmd != DEBUG}
    assert len(quiet) == 5
    for cmd, proc in quiet.items():
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
        assert not NOISE.search(proc.stderr), (cmd, proc.stderr[:2000])
        assert not NOISE.search(proc.stdout), (cmd, proc.stdout[:2000])


def test_debug_shows_tensorflow_native_logs(commands) -> None:
    # the filter is what hides them: with --debug the same import prints them
    proc = commands[DEBUG]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert NOISE.search(proc.stderr), proc.stderr[:2000]
