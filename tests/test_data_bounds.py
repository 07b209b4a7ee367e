"""Bounded data parsing and right pixels: archive caps checked while streaming, duplicate members,
per-file and decoded-size caps, bounded memory while decoding, every Pillow mode as 8-bit RGB."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexbench.data import archive, cache, image_folder, load_dataset
from alexbench.data.archive import decode_image, iter_tar
from alexbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _encode(im: Image.Image, fmt: str = "TIFF") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _rgb(data: bytes) -> np.ndarray:
    return decode_image(data, "x")[0]


def test_sixteen_bit_and_float_images_are_scaled_not_clipped():
    g16 = np.array([[0, 257, 1000, 32768, 65535]], np.uint16)
    for fmt in ("PNG", "TIFF"):
        out = _rgb(_encode(Image.fromarray(g16), fmt))
        np.testing.assert_array_equal(out[..., 0], [[0, 1, 4, 128, 255]])
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    pgm16 = b"P5\n5 1\n65535\n" + g16.astype(">u2").tobytes()  # opens in Pillow's "I" mode
    np.testing.assert_array_equal(_rgb(pgm16)[..., 0], [[0, 1, 4, 128, 255]])
    f = Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0, 1.0]], np.float32))  # "F" in [0, 1]
    assert f.mode == "F"
    np.testing.assert_array_equal(_rgb(_encode(f))[..., 0], [[0, 64, 128, 255, 255]])


@pytest.mark.parametrize("mode, value, expected", [
    ("1", 1, (255, 255, 255)),
    ("L", 77, (77, 77, 77)),
    ("LA", (77, 0), (77, 77, 77)),  # alpha is dropped, colour kept
    ("RGBA", (10, 20, 30, 0), (10, 20, 30)),
    ("RGBX", (10, 20, 30, 0), (10, 20, 30)),
    ("CMYK", (255, 0, 0, 0), (0, 255, 255)),
    ("CMYK", (0, 0, 0, 128), (127, 127, 127)),
    ("YCbCr", (128, 128, 128), (128, 128, 128)),
    ("HSV", (0, 255, 255), (255, 0, 0)),
    ("RGBa", (50, 100, 150, 128), (99, 199, 255)),  # premultiplied: un-premultiplied
    ("La", (50, 128), (99, 99, 99)),
    ("I;16", 65535, (255, 255, 255)),
    ("I;16B", 32768, (128, 128, 128)),
    ("I", 1000, (4, 4, 4)),
    ("F", 0.5, (128, 128, 128)),
])
def test_every_mode_becomes_the_rgb_it_means(mode, value, expected):
    im = Image.new(mode, (2, 2), value)
    out = np.asarray(archive._to_rgb(im))  # the one conversion decode_image applies
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert tuple(int(v) for v in out[0, 0]) == expected


def test_palette_with_transparency_and_lab():
    p = Image.new("P", (2, 2), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.info["transparency"] = 1
    assert tuple(np.asarray(archive._to_rgb(p))[0, 0]) == (10, 200, 30)
    lab = Image.new("LAB", (1, 1), (255, 128, 128))  # white
    assert min(np.asarray(archive._to_rgb(lab))[0, 0]) >= 250


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_member_count_and_expansion_caps_stop_the_stream(tmp_path, monkeypatch):
    src = _tar(tmp_path / "a.tar", [(f"f{i}.bin", b"x" * 1000) for i in range(50)])
    seen = []
    monkeypatch.setattr(archive, "MAX_ARCHIVE_MEMBERS", 10)
    with pytest.raises(UserError, match=r"a.tar: more than 10 members; refused"):
        for e in iter_tar(src):
            seen.append(e.name)
    assert len(seen) == 10  # refused while streaming, not after reading everything
    monkeypatch.setattr(archive, "MAX_ARCHIVE_MEMBERS", 1000)
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", 20 * 1512)
    with pytest.raises(UserError, match=r"a.tar: expands to more than"):
        list(iter_tar(src))


def test_duplicate_members_are_refused(tmp_path):
    src = _tar(tmp_path / "d.tar", [("a/x.png", b"1"), ("a/y.png", b"2"), ("./a/x.png", b"3")])
    with pytest.raises(UserError, match=r"member 'a/x.png' appears twice"):
        list(iter_tar(src))


def _folder(root: Path, n: int, size: int = 8) -> Path:
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size, size), (i, 0, 0)).save(root / split / cls / f"{i}.png")
    return root


def test_decoded_size_cap_refuses_before_allocating(tmp_path, monkeypatch):
    src = _folder(tmp_path / "f", 3, size=16)
    monkeypatch.setattr(image_folder, "MAX_DECODED_BYTES", 10 * 16 * 16 * 3)
    with pytest.raises(UserError, match=r"12 images of 16x16 decode to .* over the 0 GiB limit"):
        image_folder.read_image_folder(src, None)


def test_tar_and_folder_decode_the_same_and_cache_is_memory_mapped(tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXBENCH_DATA", str(tmp_path / "home"))
    src = _folder(tmp_path / "f", 5)
    with tarfile.open(tmp_path / "f.tar.gz", "w:gz") as tf:
        for p in sorted(src.rglob("*.png"), reverse=True):  # archive order differs from the sorted order
            tf.add(p, arcname=str(p.relative_to(src)))
    a, b = load_dataset(str(src)), load_dataset(str(tmp_path / "f.tar.gz"))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert isinstance(a.x_train, np.memmap) and a.x_train[3, 0, 0, 0] == 3
    again = load_dataset(str(src))
    assert isinstance(again.x_train, np.memmap)
    np.testing.assert_array_equal(again.x_train, a.x_train)
    assert not list((tmp_path / "home" / "decoded").glob(".scratch-*"))  # scratch files removed


def test_a_killed_loaders_scratch_folder_is_removed(tmp_path):
    base = tmp_path / "decoded"
    dead = base / ".scratch-999999-abc"
    dead.mkdir(parents=True)
    (dead / "x_train.npy").write_bytes(b"left by a killed process")
    with cache.scratch(tmp_path) as alloc:
        assert alloc is not None
    assert not dead.exists()


def _peak_mib(args: list[str], home: Path) -> int:
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run(sys.argv[1:], capture_output=True); "
             "assert p.returncode == 0, p.stderr; "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALEXBENCH_DATA": str(home)}
    out = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "alexbench", *args], env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    return int(out.stdout.split()[-1]) // 1024


def test_peak_memory_of_a_load_does_not_grow_with_the_data(tmp_path):
    """120 images of 256x256 decode to 23 MiB, 1200 to 225 MiB: the load's peak differs by far less."""
    small, large = _folder(tmp_path / "small", 30, size=256), _folder(tmp_path / "large", 300, size=256)
    peak_small = _peak_mib(["data", str(small)], tmp_path / "home-s")
    peak_large = _peak_mib(["data", str(large)], tmp_path / "home-l")
    print(f"peak RSS of `alexbench data`: {peak_small} MiB (23 MiB decoded), {peak_large} MiB (225 MiB decoded)")
    assert peak_large - peak_small < 40, (peak_small, peak_large)
