"""Safe reading of tar archives and image files.

Nothing here ever extracts to disk: members are read into memory, in archive order,
from a streamed ``tarfile`` (``r|*``: plain, gzip, bzip2 or xz). Before a member is
read, it is checked, and the whole archive is refused with a :class:`UserError`
naming the archive and the member if the member

- has an absolute path or a ``..`` component, even one that stays inside (stricter
  than the standard filter, which strips a leading ``/`` and allows ``a/../b``),
- is a symbolic or hard link, wherever it points (the standard filter allows links
  that stay inside),
- is refused by the standard library's :func:`tarfile.data_filter` (PEP 706): devices,
  FIFOs, members of unknown type, paths or links leaving the destination,
- is larger than :data:`MAX_MEMBER_BYTES`.

Images are decoded with Pillow, restricted to common formats, with a pixel limit
(:data:`MAX_IMAGE_PIXELS`, checked from the header before any pixel is decoded) so a
"decompression bomb" (a tiny file that claims a huge canvas) is refused by name.
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from alexbench.errors import UserError

__all__ = ["MAX_IMAGE_PIXELS", "MAX_MEMBER_BYTES", "MAX_ARCHIVE_MEMBERS", "MAX_ARCHIVE_BYTES", "MAX_IMAGE_FILE_BYTES",
           "IMAGE_EXTENSIONS", "TarEntry", "iter_tar", "is_tar",
           "check_member", "is_image_name", "decode_image"]

MAX_IMAGE_PIXELS = 4096 * 4096  # far above any CIFAR-like image; PIL's own default is ~89 Mpx
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # an official CIFAR-10 batch file is ~31 MB
MAX_ARCHIVE_MEMBERS = 2_000_000  # CIFAR-10 as images is 60,000 files
MAX_ARCHIVE_BYTES = 16 << 30  # uncompressed; CIFAR-10 is under 200 MB in every form
MAX_IMAGE_FILE_BYTES = 64 << 20  # one image file; a CIFAR-10 image is about 2 KB
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                              ".pbm"})
_PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# The folder tarfile.data_filter measures escapes against. Nothing is ever extracted,
# so it is a fixed path that is never created.
_FILTER_DEST = os.path.join(os.sep, "alexbench-never-extracted")


@dataclass
class TarEntry:
    """One member of an archive: a normalised relative POSIX name, and its bytes if read."""

    name: str
    is_dir: bool
    data: bytes | None = None
    size: int = 0


def is_tar(path: Path) -> bool:
    """True if ``path`` is a file with a tar suffix, or any file that ``tarfile`` recognises."""
    if not path.is_file():
        return False
    if path.name.lower().endswith(_TAR_SUFFIXES):
        return True
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, tarfile.TarError, zlib.error):
        return False


def check_member(archive: str | Path, member: tarfile.TarInfo) -> str:
    """Return the member's normalised name, or raise :class:`UserError` if it is unsafe."""
    raw = member.name
    where = f"{archive}: member {raw!r}"
    if raw.startswith(("/", "\\")) or (len(raw) > 1 and raw[1] == ":"):
        raise UserError(f"{where}: absolute path refused")
    parts = [p for p in PurePosixPath(raw.replace("\\", "/")).parts if p not in ("", ".")]
    if ".." in parts:
        raise UserError(f"{where}: path with '..' refused (it would escape the target folder)")
    if member.issym() or member.islnk():
        kind = "symbolic" if member.issym() else "hard"
        raise UserError(f"{where}: {kind} link refused (to {member.linkname!r})")
    _standard_filter(where, member)
    if member.isfile() and member.size > MAX_MEMBER_BYTES:
        raise UserError(f"{where}: {member.size:,} bytes is over the {MAX_MEMBER_BYTES:,}-byte limit per member")
    return "/".join(parts)


def _standard_filter(where: str, member: tarfile.TarInfo) -> None:
    """:func:`tarfile.data_filter` (Python 3.10.12+, 3.11.4+, 3.12+) as a check: raise if it refuses."""
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is None:  # pragma: no cover - pyproject's requires-python excludes these
        raise UserError(f"{where}: cannot check archive members: this Python's tarfile has no data_filter "
                        f"(needs Python 3.10.12+, 3.11.4+ or 3.12+)")
    try:
        data_filter(member, _FILTER_DEST)
    except tarfile.SpecialFileError:
        kind = "device or FIFO member" if member.ischr() or member.isblk() or member.isfifo() \
            else f"member of type {member.type!r}"
        raise UserError(f"{where}: {kind} refused (by tarfile.data_filter)") from None
    except tarfile.FilterError as exc:
        raise UserError(f"{where}: refused by tarfile.data_filter ({exc})") from None


def iter_tar(path: str | Path, want: Callable[[str], bool] | None = None,
             max_read: int = MAX_MEMBER_BYTES) -> Iterator[TarEntry]:
    """Stream the members of a tar archive, in archive order, after checking each one.

    Regular files for which ``want(name)`` is true (all files if ``want`` is None) come
    with their bytes, each at most ``max_read`` bytes (checked from the header, before
    reading); other files and directories come with ``data=None``. While streaming, the
    archive is refused once it has more than :data:`MAX_ARCHIVE_MEMBERS` members or
    expands past :data:`MAX_ARCHIVE_BYTES`, and when a name comes twice (extracting it
    would silently keep one of the two). Memory stays bounded: one member's bytes at a
    time, and ``tarfile``'s own member list is emptied as it goes. Corrupt or truncated
    archives raise :class:`UserError` naming the archive.
    """
    path = Path(path)
    seen: set[str] = set()
    count = expanded = 0
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for member in tf:
                # streaming: never looked up again, so do not keep them all (typeshed omits TarFile.members)
                tf.members.clear()  # type: ignore[attr-defined]
                count += 1
                expanded += member.size + 512  # the data and its header block
                if count > MAX_ARCHIVE_MEMBERS:
                    raise UserError(f"{path}: more than {MAX_ARCHIVE_MEMBERS:,} members; refused")
                if expanded > MAX_ARCHIVE_BYTES:
                    raise UserError(f"{path}: expands to more than {MAX_ARCHIVE_BYTES >> 30} GiB; refused "
                                    "(a compressed archive that large is not a dataset alexbench reads)")
                name = check_member(path, member)
                if not name:
                    continue
                if name in seen and not member.isdir():
                    raise UserError(f"{path}: member {name!r} appears twice; refused (which copy is meant?)")
                seen.add(name)
                if member.isdir():
                    yield TarEntry(name, True)
                elif member.isfile():
                    data = None
                    if want is None or want(name):
                        if member.size > max_read:
                            raise UserError(f"{path}: member {name!r}: {member.size:,} bytes is over the "
                                            f"{max_read:,}-byte limit for this kind of file; refused")
                        fh = tf.extractfile(member)
                        data = fh.read() if fh is not None else b""
                        if len(data) != member.size:
                            raise EOFError(f"member {name!r} is truncated")
                    yield TarEntry(name, False, data, member.size)
                # no other member type gets here: data_filter refuses what is not a file, dir or link
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise UserError(f"{path}: no such file") from exc
        raise UserError(f"{path}: corrupt or truncated archive ({exc or type(exc).__name__})") from exc


def is_image_name(name: str) -> bool:
    """By extension; hidden files (``.DS_Store``, macOS ``._x.jpg``) are never images."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and PurePosixPath(base).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(im):  # noqa: ANN001, ANN202 - PIL image in, PIL "RGB" image out
    """Any PIL mode to 8-bit RGB, as the image is meant to be seen.

    - EXIF orientation is applied (camera photos stored sideways).
    - 16-bit and 32-bit integer grayscale (``I;16*``, ``I``) is scaled to 0..255; PIL's own
      ``convert`` clips it, turning most 16-bit images white. Float images (``F``) in [0, 1]
      are scaled by 255, others clipped to 0..255.
    - An embedded ICC profile (CMYK print profiles, Adobe RGB, Display P3) is converted to
      sRGB; without one, CMYK goes through PIL's plain conversion.
    - Alpha is dropped, keeping the colour channels, as ``Image.convert("RGB")`` does.
    """
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16") or (im.mode == "I" and a.size and a.max() > 255):
            a = a / 257.0
        elif im.mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    icc = im.info.get("icc_profile")
    if icc and im.mode in ("RGB", "RGBA", "CMYK", "L", "LA"):
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            base = im.convert("RGB" if im.mode in ("RGBA", "LA") else im.mode)
            return ImageCms.profileToProfile(base, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # noqa: BLE001 - a broken or unsupported profile: plain conversion below
            pass
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "La":  # premultiplied: PIL converts it only to LA (which un-premultiplies)
        im = im.convert("LA")
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_image(data: bytes, name: str, resize: int | None = None, *, max_pixels: int = MAX_IMAGE_PIXELS,
                 formats: tuple[str, ...] | None = _PIL_FORMATS) -> tuple[np.ndarray, str]:
    """Decode one image to uint8 HWC RGB; returns ``(array, PIL format name)``.

    Every mode becomes 8-bit RGB (see :func:`_to_rgb`: grayscale, palette, RGBA with
    its alpha dropped, CMYK, 16-bit, EXIF orientation, ICC profiles). With ``resize``,
    an image of another size is resized to ``resize x resize`` with PIL's bilinear filter
    (antialiased when shrinking). This is a one-off step of the load, whose result is
    cached; it is not the training path. ``formats=None`` accepts every format PIL reads.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise UserError(f"{name}: image is {w}x{h} pixels, over the limit of {max_pixels:,} "
                                    f"(possible decompression bomb); refused")
                fmt = im.format or "?"
                im = _to_rgb(im)
                if resize is not None and im.size != (resize, resize):
                    im = im.resize((resize, resize), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"{name}: refused as a possible decompression bomb ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise UserError(f"{name}: cannot decode image (not a format PIL can read)") from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise UserError(f"{name}: cannot decode image ({exc})") from exc
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise UserError(f"{name}: decoded to shape {arr.shape}, expected height x width x 3")
    return arr, fmt
