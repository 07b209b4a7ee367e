"""The CLI shows none of TensorFlow's native start-up lines unless --debug asks for them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import write_image_folder

NOISE = re.compile(r"absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|^[IWE]\d{4} ", re.M)
ROOT = Path(__file__).resolve().parents[1]


def _alexbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "ALEXBENCH_NATIVE_LOGS", "ALEXBENCH_QUIET")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "alexbench", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_commands_print_no_tensorflow_startup_lines(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "imgs", per_class=4)
    tiny = ["--set", "epochs=1", "--set", "batch_size=4", "--set", "model_options.width=0.125",
            "--set", "precision=fp32", "--set", "threads=1", "--set", "val_fraction=0.25"]
    commands = [
        ["models"],
        ["parity", "--model", "alexnet_cifar", "--batch", "2"],
        ["data", str(data)],
        *[["train", "--model", "alexnet_cifar", "--framework", fw, "--data", str(data), *tiny,
           "--out", str(tmp_path / f"run-{fw}")] for fw in ("torch", "keras")],
    ]
    for cmd in commands:
        proc = _alexbench(*cmd, cwd=tmp_path)
        assert proc.returncode == 0, (cmd, proc.stderr[-2000:])
        assert not NOISE.search(proc.stderr), (cmd, proc.stderr[:2000])
        assert not NOISE.search(proc.stdout), (cmd, proc.stdout[:2000])


def test_debug_shows_tensorflow_native_logs(tmp_path: Path) -> None:
    # the filter is what hides them: with --debug the same import prints them
    proc = _alexbench("--debug", "parity", "--model", "alexnet_cifar", "--batch", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert NOISE.search(proc.stderr), proc.stderr[:2000]
