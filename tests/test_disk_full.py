"""Full disk: a checkpoint, the decoded-data cache and the report, written when no space is left.

Each write fails with one clear line naming the file and "no space left on device"
(exit 2 through the CLI; for the decoded cache a warning, because the data itself loaded
fine and only the cache is lost), the previous file stays byte-identical, and no temp
file is left. ENOSPC is injected at the file write, at fsync and at the rename; then the
same on a real, tiny tmpfs (needs root to mount: skipped otherwise), where a training
run that fills the disk is resumed after space is freed and ends bitwise equal to an
uninterrupted run. (test_data_sources.py already covers np.savez failing in the cache.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config
from support.toydata import write_binary_source

from alexbench.atomic import file_hook
from alexbench.cli import main
from alexbench.data import cache

TIMING = {"seconds", "elapsed_seconds", "images_per_second"}


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail(exc: BaseException):  # for use inside a lambda
    raise exc


def fd_name(fd: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return ""


def temps(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".tmp"))


def one_error(rc: int, err: str, command: str, *needles: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line and not line.startswith("warning:")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"alexbench {command}: error: "), errors[0]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def learned(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"test": m["test"], "best_epoch": m["best_epoch"],
            "epochs": [{k: v for k, v in e.items() if k not in TIMING} for e in m["epochs"]]}


def checkpoints_load(run_dir: Path) -> None:
    import torch

    for p in sorted((run_dir / "checkpoints").iterdir()):
        blob = torch.load(p, map_location="cpu", weights_only=True)
        assert blob["format"] == "alexbench-torch-checkpoint-v1", p


# ----------------------------------------------------------------------------- a training run from the CLI


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    """A config file (tiny torch, checkpoint after every step), a data source, and the uninterrupted result."""
    base = tmp_path_factory.mktemp("diskfull")
    cfg = base / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config("torch", checkpoint_minutes=1e-6).model_dump(mode="json")))
    src = write_binary_source(base / "src")
    home = base / "home"
    old = os.environ.get("ALEXBENCH_DATA")
    os.environ["ALEXBENCH_DATA"] = str(home)
    try:
        assert main(train_args(cfg, src, base / "ref")) == 0
    finally:
        if old is None:
            os.environ.pop("ALEXBENCH_DATA")
        else:
            os.environ["ALEXBENCH_DATA"] = old
    return {"cfg": cfg, "src": src, "home": home, "ref": learned(base / "ref")}


def train_args(cfg: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "alexnet_cifar", "--framework", "torch", "--config", str(cfg), "--data", str(src),
            "--out", str(out), *extra]


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_full_disk_at_a_checkpoint(where, cli_setup, tmp_path, monkeypatch, capsys):
    from alexbench.engines.torch_engine import TorchEngine

    monkeypatch.setenv("ALEXBENCH_DATA", str(cli_setup["home"]))
    out = tmp_path / "run"
    ck = out / "checkpoints"
    calls, before = [], {}

    def full_now() -> bool:
        """The 4th attempt at writing last.pt finds the disk full; remember what was there."""
        calls.append(1)
        if len(calls) != 4:
            return False
        before.update({p.name: p.read_bytes() for p in ck.iterdir() if not p.name.endswith(".tmp")})
        return True

    with monkeypatch.context() as m, contextlib.ExitStack() as hooks:
        if where == "write":
            real_save = TorchEngine.save

            def save(self, path, meta):
                if Path(path).name.startswith(".last.pt.") and full_now():
                    real_save(self, path, meta)
                    os.truncate(path, os.path.getsize(path) // 2)  # what got out before the disk filled
                    raise enospc()
                return real_save(self, path, meta)

            m.setattr(TorchEngine, "save", save)
        elif where == "fsync":
            real_fsync = os.fsync
            m.setattr(os, "fsync", lambda fd: fail(enospc())
                      if fd_name(fd).startswith(".last.pt.") and full_now() else real_fsync(fd))
        else:  # the rename that publishes last.pt (a file hook of alexbench.atomic)
            hooks.enter_context(file_hook(lambda tmp, target, when: fail(enospc())
                                if when == "renaming" and target.name == "last.pt" and full_now() else None))
        rc = main(train_args(cli_setup["cfg"], cli_setup["src"], out))
    err = capsys.readouterr().err
    one_error(rc, err, "train", f"{ck / 'last.pt'}: no space left on device; the previous file was kept")
    assert set(before) >= {"last.pt", "last.prev.pt"}
    for name, data in before.items():
        assert (ck / name).read_bytes() == data, name
    assert temps(out) == []
    checkpoints_load(out)
    assert not (out / ".alexbench.lock").exists()
    # space freed: the run resumes and ends as if nothing had happened
    assert main(train_args(cli_setup["cfg"], cli_setup["src"], out, "--resume")) == 0
    assert learned(out) == cli_setup["ref"]


# ----------------------------------------------------------------------------- the decoded-data cache


class _FullAfter:
    """A file object whose writes fail with ENOSPC once ``limit`` bytes went through."""

    def __init__(self, fh, limit: int) -> None:
        self.fh, self.limit, self.written = fh, limit, 0

    def write(self, data) -> int:
        if self.written + len(data) > self.limit:
            self.fh.write(bytes(data)[: max(0, self.limit - self.written)])
            raise enospc()
        self.written += len(data)
        return self.fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_full_disk_at_the_decoded_cache(where, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("ALEXBENCH_DATA", str(home))
    src = write_binary_source(tmp_path / "src")
    assert main(["data", str(src)]) == 0
    (cached,) = (home / "decoded").glob("*.npz")
    before = cached.read_bytes()
    capsys.readouterr()
    with monkeypatch.context() as m, contextlib.ExitStack() as hooks:
        m.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)  # a new alexbench rebuilds the cache
        if where == "write":
            m.setattr(cache, "open", lambda p, mode="r", *a, **k: _FullAfter(open(p, mode, *a, **k), 4096),
                      raising=False)
        elif where == "fsync":
            real_fsync = os.fsync
            m.setattr(os, "fsync", lambda fd: fail(enospc())
                      if fd_name(fd).startswith(f".{cached.name}.") else real_fsync(fd))
        else:
            hooks.enter_context(file_hook(lambda tmp, target, when: fail(enospc())
                                if when == "renaming" and target == cached else None))
        rc = main(["data", str(src)])
    out, err = capsys.readouterr()
    assert rc == 0, err  # the data loaded; only the cache could not be rewritten
    assert f"warning: decoded cache not written: {cached}: no space left on device; the previous file was kept" \
        in err
    assert "Traceback" not in err
    assert cached.read_bytes() == before
    assert temps(home) == []


# ----------------------------------------------------------------------------- the report


@pytest.fixture
def fake_runs(tmp_path):
    from support.fakeruns import make_fake_run

    return [make_fake_run(tmp_path / "runs" / "torch", framework="torch", accuracy=0.7, n_test=200, epochs=3),
            make_fake_run(tmp_path / "runs" / "keras", framework="keras", accuracy=0.6, n_test=200, epochs=3)]


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_full_disk_at_the_report(where, fake_runs, tmp_path, monkeypatch, capsys):
    html = tmp_path / "out" / "report.html"
    args = ["report", *map(str, fake_runs), "-o", str(html)]
    assert main(args) == 0
    md = html.with_suffix(".md")
    before = {p: p.read_bytes() for p in (html, md)}
    capsys.readouterr()
    with monkeypatch.context() as m:
        if where == "write":
            real = Path.write_bytes

            def write_bytes(self, data):
                if self.name.startswith(".report.md."):
                    real(self, data[: len(data) // 3])
                    raise enospc()
                return real(self, data)

            m.setattr(Path, "write_bytes", write_bytes)
        else:
            real_fsync = os.fsync
            m.setattr(os, "fsync", lambda fd: fail(enospc())
                      if fd_name(fd).startswith(".report.md.") else real_fsync(fd))
        rc = main(args)
    err = capsys.readouterr().err
    one_error(rc, err, "report", f"{md}: no space left on device; the previous file was kept")
    for p, data in before.items():
        assert p.read_bytes() == data, p
    assert temps(tmp_path / "out") == []


# ----------------------------------------------------------------------------- a real, tiny filesystem


@pytest.fixture
def tiny_fs(tmp_path):
    """Mount a tmpfs of the given size (MiB) under tmp_path; unmounted afterwards. Needs root."""
    mounted: list[Path] = []

    def mount(size_mib: int) -> Path:
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        try:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(d)], check=True,
                           capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {exc}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


def resize(fs: Path, size_mib: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_mib}m", str(fs)], check=True, capture_output=True, timeout=30)


def fill(fs: Path, leave: int) -> None:
    st = os.statvfs(fs)
    with open(fs / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def test_real_full_disk_during_training_then_resume(tiny_fs, cli_setup, monkeypatch, capsys):
    """Checkpoints are ~13 MB: 40 MB holds last, last.prev and one temp, not best as well."""
    monkeypatch.setenv("ALEXBENCH_DATA", str(cli_setup["home"]))
    fs = tiny_fs(40)
    out = fs / "run"
    rc = main(train_args(cli_setup["cfg"], cli_setup["src"], out))
    err = capsys.readouterr().err
    line = one_error(rc, err, "train", "no space left on device; the previous file was kept")
    assert str(out) in line
    assert temps(fs) == []
    checkpoints_load(out)
    yaml.safe_load((out / "config.yaml").read_text())
    assert json.loads((out / "state.json").read_text())["status"] == "running"
    resize(fs, 400)  # space freed
    assert main(train_args(cli_setup["cfg"], cli_setup["src"], out, "--resume")) == 0
    assert learned(out) == cli_setup["ref"]
    assert temps(fs) == []


def test_real_full_disk_at_the_decoded_cache(tiny_fs, tmp_path, monkeypatch, capsys):
    home = tiny_fs(2)
    monkeypatch.setenv("ALEXBENCH_DATA", str(home))
    src = write_binary_source(tmp_path / "src")
    assert main(["data", str(src)]) == 0
    (cached,) = (home / "decoded").glob("*.npz")
    before = cached.read_bytes()
    fill(home, 65536)  # the toy set's cache is ~0.5 MB
    capsys.readouterr()
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    assert main(["data", str(src)]) == 0
    err = capsys.readouterr().err
    assert f"warning: decoded cache not written: {cached}: no space left on device" in err
    assert cached.read_bytes() == before
    assert temps(home) == []


def test_real_full_disk_at_the_report(tiny_fs, fake_runs, capsys):
    fs = tiny_fs(8)
    html = fs / "report.html"
    args = ["report", *map(str, fake_runs), "-o", str(html)]
    assert main(args) == 0
    before = {p: p.read_bytes() for p in fs.rglob("*") if p.is_file()}
    fill(fs, 8192)
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err
    one_error(rc, err, "report", "no space left on device; the previous file was kept")
    for p, data in before.items():
        assert p.read_bytes() == data, p
    assert temps(fs) == []
