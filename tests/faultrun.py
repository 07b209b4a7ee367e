"""Run the alexbench CLI with training held before its first optimizer step (for the lock tests).

usage: python tests/faultrun.py HOLD_FILE ALEXBENCH_ARGS...

While HOLD_FILE exists, the first training step of either engine waits, so the process
sits inside a run with its locks held for as long as a test needs; then the test
kills it (SIGKILL) or removes HOLD_FILE to let it finish. On reaching the wait it
creates HOLD_FILE.held, so a test knows the run has written all it writes before its
first step. Adds nothing else.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

hold = Path(sys.argv[1])


def _held(real):  # noqa: ANN001, ANN202
    def step(self, *args, **kwargs):  # noqa: ANN001, ANN202
        if hold.exists():
            hold.with_suffix(".held").touch()
        while hold.exists():
            time.sleep(0.05)
        return real(self, *args, **kwargs)

    return step


from alexbench.engines.keras_engine import KerasEngine  # noqa: E402
from alexbench.engines.torch_engine import TorchEngine  # noqa: E402

TorchEngine.train_step = _held(TorchEngine.train_step)
KerasEngine.train_step = _held(KerasEngine.train_step)

from alexbench.cli import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
