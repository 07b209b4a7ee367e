"""Every bad input of issue 2, item 5, through the CLI: exit 2, one line naming the
file and the problem, no traceback, no partial cache, nothing of the user's deleted.
Plus the hostile cases: pickles that try to run code, tar members that try to escape,
and decompression-bomb images. (Checksum mismatch is in test_data_sources.py, with
the download.)
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_data_sources import (  # noqa: F401
    assert_user_error,
    isolated,
    python_batch,
    run_cli,
    save_image,
    tar_dir,
    write_binary_dir,
    write_image_folder,
    write_python_dir,
)

from alexbench.cli import main
from alexbench.data.safe_pickle import UnsafePickleError, safe_loads
from alexbench.errors import UserError


@pytest.fixture
def home(isolated):  # noqa: F811 - the autouse fixture imported above: data home under tmp_path
    return isolated


def no_cache_left(home: Path) -> None:
    """No decoded cache (nor any temp file) was written for a source that failed."""
    decoded = home / "decoded"
    if decoded.exists():
        leftovers = [p.name for p in decoded.iterdir() if p.name != "hashes"]
        assert leftovers == [], leftovers


# ----------------------------------------------------------------------------- missing, not a source


def test_missing_path(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "data", str(tmp_path / "nope.tar.gz"))
    assert_user_error(rc, err, "nope.tar.gz: no such file or directory")


def test_debug_shows_the_traceback(capsys, tmp_path):
    # --debug adds the traceback; the exit code stays 2 (a bad input), before or after the command
    for argv in (["--debug", "data", str(tmp_path / "nope")], ["data", str(tmp_path / "nope"), "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "UserError" in err and "nope: no such file" in err


def test_not_an_archive(capsys, tmp_path):
    (tmp_path / "batch.bin").write_bytes(b"\0" * 100)
    rc, _, err = run_cli(capsys, "data", str(tmp_path / "batch.bin"))
    assert_user_error(rc, err, "batch.bin: not a directory or tar archive")


def test_folder_without_train_and_test(capsys, tmp_path):
    save_image(tmp_path / "f" / "a" / "0.png")
    rc, _, err = run_cli(capsys, "data", str(tmp_path / "f"))
    assert_user_error(rc, err, str(tmp_path / "f"), "no train/ and test/ folders")


def test_archive_without_a_dataset(capsys, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hello")
    t = tar_dir(tmp_path / "x", tmp_path / "x.tar")
    rc, _, err = run_cli(capsys, "data", str(t))
    assert_user_error(rc, err, "x.tar: archive holds neither")


# ----------------------------------------------------------------------------- truncated / corrupt


def test_truncated_binary_batch(capsys, tmp_path, home):
    d, _ = write_binary_dir(tmp_path / "src")
    p = d / "data_batch_3.bin"
    p.write_bytes(p.read_bytes()[:-100])
    rc, _, err = run_cli(capsys, "data", str(d))
    assert_user_error(rc, err, "data_batch_3.bin: truncated or corrupt batch")
    no_cache_left(home)


def test_binary_label_out_of_range(capsys, tmp_path):
    d, _ = write_binary_dir(tmp_path / "src")
    p = d / "test_batch.bin"
    raw = bytearray(p.read_bytes())
    raw[3073] = 42  # label byte of record 1
    p.write_bytes(bytes(raw))
    rc, _, err = run_cli(capsys, "data", str(d))
    assert_user_error(rc, err, "test_batch.bin: record 1 has label 42")


def test_missing_batch_file(capsys, tmp_path):
    d, _ = write_binary_dir(tmp_path / "src")
    (d / "data_batch_5.bin").unlink()
    rc, _, err = run_cli(capsys, "data", str(d))
    assert_user_error(rc, err, "missing data_batch_5.bin")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong-shape", "not-a-dict"])
def test_corrupt_python_batch(capsys, tmp_path, home, damage):
    d, _ = write_python_dir(tmp_path / "src")
    p = d / "data_batch_2"
    if damage == "truncate":
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
        needle = "data_batch_2: truncated or corrupt python batch"
    elif damage == "garbage":
        p.write_bytes(os.urandom(500))
        needle = "data_batch_2: "
    elif damage == "wrong-shape":
        p.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
        needle = "data_batch_2: 'data' is uint8 (2, 100), expected a uint8 array of shape (N, 3072)"
    else:
        p.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
        needle = "data_batch_2: expected a dict, got list"
    rc, _, err = run_cli(capsys, "data", str(d))
    assert_user_error(rc, err, needle)
    no_cache_left(home)


def test_truncated_archive(capsys, tmp_path, home):
    d, _ = write_binary_dir(tmp_path / "src")
    t = tar_dir(d, tmp_path / "cut.tar.gz")
    t.write_bytes(t.read_bytes()[:-2000])
    rc, _, err = run_cli(capsys, "data", str(t))
    assert_user_error(rc, err, "cut.tar.gz: corrupt or truncated archive")
    no_cache_left(home)


def test_corrupt_image(capsys, tmp_path):
    write_image_folder(tmp_path / "f")
    (tmp_path / "f" / "train" / "dogs" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rc, _, err = run_cli(capsys, "data", str(tmp_path / "f"))
    assert_user_error(rc, err, "train/dogs/1.png: cannot decode image")


# ----------------------------------------------------------------------------- hostile pickles


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def hostile_payloads(marker: Path) -> dict[str, bytes]:
    return {
        "os.system": pickle.dumps({b"data": _RunsCommand(marker), b"labels": []}, protocol=2),
        "builtins.eval": pickle.dumps({b"labels": [_Evals(marker)]}, protocol=2),
        "protocol-0 INST": b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n.",
        "object array": pickle.dumps({b"data": np.array([_RunsCommand(marker)], dtype=object)}, protocol=2),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "protocol-0 INST", "object array"])
@pytest.mark.parametrize("packed", [False, True], ids=["dir", "tar"])
def test_hostile_pickle_is_refused_without_running(capsys, tmp_path, home, kind, packed):
    marker = tmp_path / "PWNED"
    payload = hostile_payloads(marker)[kind]
    d, _ = write_python_dir(tmp_path / "src")
    (d / "data_batch_1").write_bytes(payload)
    src = tar_dir(d, tmp_path / "cifar-10-python.tar") if packed else d
    rc, _, err = run_cli(capsys, "data", str(src))
    assert_user_error(rc, err, "data_batch_1: refused python batch", "nothing in it was executed")
    assert not marker.exists()
    no_cache_left(home)


def test_safe_loads_refuses_directly(tmp_path):
    marker = tmp_path / "PWNED"
    for payload in hostile_payloads(marker).values():
        with pytest.raises(UnsafePickleError):
            safe_loads(payload)
    assert not marker.exists()
    # and reads the honest thing
    x = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    out = safe_loads(python_batch(x.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1), np.array([1, 2])))
    np.testing.assert_array_equal(out[b"data"], x)
    assert out[b"labels"] == [1, 2]


# ----------------------------------------------------------------------------- hostile tars


def tar_with(path: Path, evil: tarfile.TarInfo, data: bytes = b"") -> Path:
    """An image-folder tarball with one extra (hostile) member in the middle."""
    with tarfile.open(path, "w:gz") as tf:
        img = io.BytesIO()
        Image.new("RGB", (32, 32)).save(img, format="PNG")
        for name in ("f/train/a/0.png", "f/test/a/0.png"):
            info = tarfile.TarInfo(name)
            info.size = len(img.getvalue())
            tf.addfile(info, io.BytesIO(img.getvalue()))
            if name.startswith("f/train"):
                evil.size = len(data) if evil.isfile() else 0
                tf.addfile(evil, io.BytesIO(data) if evil.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("case,needle", [
    ("dotdot", "path with '..' refused"),
    ("dotdot-deep", "path with '..' refused"),
    ("absolute", "absolute path refused"),
    ("symlink", "symbolic link refused"),
    ("hardlink", "hard link refused"),
    ("device", "device or FIFO member refused"),
    ("fifo", "device or FIFO member refused"),
])
def test_hostile_tar_member_is_refused(capsys, tmp_path, home, case, needle):
    escaped = tmp_path / f"escaped-{case}.png"
    members = {
        "dotdot": _member(f"../escaped-{case}.png"),
        "dotdot-deep": _member(f"f/train/a/../../../../escaped-{case}.png"),
        "absolute": _member(str(escaped)),
        "symlink": _member("f/train/a/1.png", tarfile.SYMTYPE, "/etc/passwd"),
        "hardlink": _member("f/train/a/1.png", tarfile.LNKTYPE, "/etc/passwd"),
        "device": _member("f/train/a/1.png", tarfile.CHRTYPE),
        "fifo": _member("f/train/a/1.png", tarfile.FIFOTYPE),
    }
    archive = tar_with(tmp_path / "cwd" / "evil.tar.gz", members[case], b"payload")
    rc, _, err = run_cli(capsys, "data", str(archive))
    assert_user_error(rc, err, "evil.tar.gz: member", needle)
    assert not escaped.exists()
    assert sorted(p.name for p in (tmp_path / "cwd").iterdir()) == ["evil.tar.gz"]  # nothing extracted
    no_cache_left(home)


@pytest.mark.parametrize("kind", [b"V", b"Z"])
def test_member_refused_by_the_standard_data_filter(capsys, tmp_path, home, kind):
    """A GNU volume header ('V') or an unknown type ('Z') breaks none of our own rules
    (plain relative name, not a link, not a device); tarfile.data_filter refuses it."""
    member = _member("f/train/a/1.png", kind)
    with pytest.raises(tarfile.SpecialFileError):
        tarfile.data_filter(member, str(tmp_path))
    archive = tar_with(tmp_path / "cwd" / "odd.tar.gz", member)
    rc, _, err = run_cli(capsys, "data", str(archive))
    assert_user_error(rc, err, "odd.tar.gz: member 'f/train/a/1.png'", f"member of type {kind!r} refused",
                      "tarfile.data_filter")
    no_cache_left(home)


def test_hostile_member_in_official_archive(capsys, tmp_path):
    d, _ = write_binary_dir(tmp_path / "src")
    t = tmp_path / "cifar-10-binary.tar"
    with tarfile.open(t, "w") as tf:
        tf.add(d, arcname="cifar-10-batches-bin")
        tf.addfile(_member("cifar-10-batches-bin/data_batch_9.bin", tarfile.SYMTYPE, "../../x"))
    rc, _, err = run_cli(capsys, "data", str(t))
    assert_user_error(rc, err, "symbolic link refused")


# ----------------------------------------------------------------------------- decompression bomb


def test_decompression_bomb_image_is_refused(capsys, tmp_path, home):
    write_image_folder(tmp_path / "f")
    bomb = tmp_path / "f" / "train" / "cats" / "bomb.png"
    Image.new("1", (5000, 5000)).save(bomb)  # ~4 KB on disk, 25 Mpx once decoded
    assert bomb.stat().st_size < 100_000
    rc, _, err = run_cli(capsys, "data", str(tmp_path / "f"))
    assert_user_error(rc, err, "bomb.png: image is 5000x5000 pixels", "decompression bomb")
    no_cache_left(home)


def test_pil_bomb_guard_is_caught(monkeypatch):
    from alexbench.data import archive

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL warns over 100 px, errors over 200
    buf = io.BytesIO()
    Image.new("RGB", (12, 12)).save(buf, format="PNG")
    with pytest.raises(UserError, match="x.png: refused as a possible decompression bomb"):
        archive.decode_image(buf.getvalue(), "x.png")


# ----------------------------------------------------------------------------- class folders


def test_class_folder_missing_from_test(capsys, tmp_path):
    write_image_folder(tmp_path / "f", classes=("a", "b", "c"))
    for p in (tmp_path / "f" / "test" / "b").iterdir():
        p.unlink()
    (tmp_path / "f" / "test" / "b").rmdir()
    rc, _, err = run_cli(capsys, "data", str(tmp_path / "f"))
    assert_user_error(rc, err, str(tmp_path / "f"), "class folder missing from test/: b")


def test_empty_class_folder(capsys, tmp_path):
    write_image_folder(tmp_path / "f", classes=("a", "b"))
    (tmp_path / "f" / "train" / "c").mkdir()
    (tmp_path / "f" / "test" / "c").mkdir()
    save_image(tmp_path / "f" / "test" / "c" / "0.png")
    rc, _, err = run_cli(capsys, "data", str(tmp_path / "f"))
    assert_user_error(rc, err, "train/c/ is empty")


def test_empty_class_folder_in_tar(capsys, tmp_path):
    write_image_folder(tmp_path / "f", classes=("a", "b"))
    (tmp_path / "f" / "test" / "c").mkdir()
    (tmp_path / "f" / "train" / "c").mkdir()
    (tmp_path / "f" / "train" / "c" / "readme.txt").write_text("only text here")
    save_image(tmp_path / "f" / "train" / "c" / "0.png")
    t = tar_dir(tmp_path / "f", tmp_path / "f.tar.gz", arcname="top")
    rc, _, err = run_cli(capsys, "data", str(t))
    assert_user_error(rc, err, "f.tar.gz: top/test/c/ is empty")


def test_different_class_sets(capsys, tmp_path):
    write_image_folder(tmp_path / "f", classes=("a", "b"))
    save_image(tmp_path / "f" / "test" / "zebra" / "0.png")
    rc, _, err = run_cli(capsys, "data", str(tmp_path / "f"))
    assert_user_error(rc, err, "different class sets (only in test/: zebra)")


def test_no_test_folder(capsys, tmp_path):
    write_image_folder(tmp_path / "f", n_test=0)
    rc, _, err = run_cli(capsys, "data", str(tmp_path / "f"))
    assert_user_error(rc, err, "no test/ folder")


def test_mixed_sizes_through_cli(capsys, tmp_path):
    write_image_folder(tmp_path / "f")
    save_image(tmp_path / "f" / "test" / "dogs" / "big.png", size=64)
    rc, _, err = run_cli(capsys, "data", str(tmp_path / "f"))
    assert_user_error(rc, err, "big.png: image is 64x64", "mixed image sizes need an explicit resize")


def test_bad_resize_value():
    from alexbench.data import load_dataset

    with pytest.raises(UserError, match=r"resize: must be an integer in \[1, 4096\] \(got 0\)"):
        load_dataset("embedded", resize=0)


def test_failed_load_keeps_users_files(capsys, tmp_path):
    """A failure deletes nothing: the source is left exactly as it was."""
    d, _ = write_python_dir(tmp_path / "src")
    (d / "data_batch_4").write_bytes(b"\x80\x02junk")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    rc, _, err = run_cli(capsys, "data", str(d))
    assert rc == 2
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_absurd_memo_index_is_refused_before_allocating():
    # LONG_BINPUT 0xFFFFFFFF would make CPython's unpickler allocate a ~34 GB memo
    with pytest.raises(UnsafePickleError, match="memo index"):
        safe_loads(b"\x80\x02]r\xff\xff\xff\xff.")


_VALID = python_batch(np.zeros((2, 32, 32, 3), np.uint8), np.array([3, 4]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=300).map(lambda b: b"\x80\x02" + b),
    st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
        lambda edits: bytes(_mutate(_VALID, edits))),
))
def test_fuzzed_python_batch_never_escapes(data):
    """Random or mutated pickles end as data or as one UserError; never another exception."""
    from alexbench.data.cifar_batches import unpickle

    try:
        unpickle("fuzz", data)
    except UserError as exc:
        assert str(exc).startswith("fuzz: ")


def _mutate(data: bytes, edits) -> bytearray:
    out = bytearray(data)
    for pos, value in edits:
        out[pos] = value
    return out
