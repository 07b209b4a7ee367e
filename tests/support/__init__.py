"""Test equipment: toy data, fake run folders, the kill harness. Never imported by alexbench."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent


def support_command(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that run ``python -m support.<module> ARGS`` in a fresh interpreter, with tests/ and
    the source tree importable ahead of whatever PYTHONPATH already holds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_TESTS), str(_TESTS.parent), env.get("PYTHONPATH")) if p)
    return [sys.executable, "-m", f"support.{module}", *args], env
