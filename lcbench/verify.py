"""Check a copy of a named dataset (a folder) against its manifest.

Two depths:
- quick (every ``--dataset NAME`` run): every listed image is present and its pixel hash is right,
  where the hash comes from the verification records while the file's size+mtime are unchanged,
  else from the file SHA-256 when the file is byte-identical to the reference, else by decoding;
- full (``lcbench datasets verify``): every image is decoded and hashed again, records ignored,
  and every mismatch is reported.

Pixel hash = ``sha256(numpy.asarray(PIL.Image.open(path)).tobytes())`` (the definition used by the
manifests), so one flipped pixel changes it whatever encoder wrote the file.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .cache import VerificationRecords
from .dataset import Dataset, ImageRef
from .download import sha256_file
from .images import IMAGE_EXTENSIONS
from .manifest import DatasetManifest, ImageEntry


@dataclass(frozen=True)
class Decoded:
    pixels_sha256: str
    width: int
    height: int
    mode: str


def decode_and_hash(path: Path) -> Decoded:
    """Decode ``path`` with Pillow and hash the raw pixel array (the manifests' definition)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        arr = np.ascontiguousarray(np.asarray(im))
        return Decoded(hashlib.sha256(arr.tobytes()).hexdigest(), im.width, im.height, im.mode)


def image_files(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, hidden entries and macOS __MACOSX shadows skipped), sorted."""
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(root).parts)
    )


def find_image(root: Path, entry: ImageEntry) -> Path | None:
    """The file for ``entry``: its exact path, else the same name with another image extension
    (a mirror may store kodim01.tif for kodim01.png; the pixel hash still decides)."""
    exact = root / entry.path
    if exact.is_file():
        return exact
    folder = exact.parent
    if folder.is_dir():
        for ext in IMAGE_EXTENSIONS:
            for cand in (exact.with_suffix(ext), exact.with_suffix(ext.upper())):
                if cand.is_file():
                    return cand
    return None


@dataclass
class VerifyReport:
    name: str
    root: Path
    full: bool
    pixels_checked: bool
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def dataset(self) -> Dataset:
        return Dataset(self.name, self.root, list(self.images))

    def summary(self) -> str:
        what = "pixel checksums" if self.pixels_checked else "image count" + (" and readability" if self.full else "")
        head = f"{self.name} at {self.root}: {self.checked} images checked ({what})"
        if self.ok:
            return f"{head}: OK"
        return f"{head}: {len(self.problems)} problem(s)"


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def check_copy(manifest: DatasetManifest, root: Path, *, full: bool,
               records: VerificationRecords | None = None) -> VerifyReport:
    """Compare the folder ``root`` with ``manifest``; never raises for a bad copy, it reports."""
    root = Path(root)
    report = VerifyReport(manifest.name, root, full, pixels_checked=manifest.has_pixel_checksums)
    if not root.is_dir():
        report.problems.append(f"{root} is not a folder")
        return report
    if manifest.has_pixel_checksums:
        _check_pixels(manifest, root, full, records, report)
    else:
        _check_count(manifest, root, full, report)
    if records is not None:
        records.save()
    return report


def _check_pixels(manifest: DatasetManifest, root: Path, full: bool,
                  records: VerificationRecords | None, report: VerifyReport) -> None:
    for entry in manifest.images:
        path = find_image(root, entry)
        if path is None:
            report.problems.append(f"{entry.path}: missing")
            continue
        report.checked += 1
        shape = (entry.height, entry.width) if entry.width and entry.height else None
        report.images.append(ImageRef(entry.id, path, entry.loaded_sha256, shape))
        st = path.stat()
        got: str | None = None
        decoded: Decoded | None = None
        if not full and records is not None:
            got = records.lookup(path, st)
        if got is None and not full and entry.file_sha256 and entry.bytes in (None, st.st_size):
            # A byte-identical file decodes to the reference pixels: hashing bytes is ~10x
            # cheaper than decoding, which keeps the first run on a mirror fast.
            if sha256_file(path) == entry.file_sha256:
                got = entry.pixels_sha256
        if got is None:
            try:
                decoded = decode_and_hash(path)
            except Exception as exc:  # any decoder failure is a bad copy, reported per file
                report.problems.append(f"{_rel(path, root)}: unreadable ({type(exc).__name__}: {exc})")
                continue
            got = decoded.pixels_sha256
        # the pixel hash covers the bytes, not the shape: the same bytes as 512x768 are another image
        other_shape = decoded is not None and bool(entry.width and entry.height) and (
            (decoded.width, decoded.height) != (entry.width, entry.height)
            or bool(entry.mode and decoded.mode != entry.mode))
        if records is not None:
            # a wrongly shaped file is remembered as not matching, so the quick check does not trust it
            records.remember(path, st, got if not other_shape else f"{got}:{decoded.width}x{decoded.height}")
        if got != entry.pixels_sha256 or other_shape:
            detail = (f"pixels differ from the manifest (sha256 {got}, expected {entry.pixels_sha256})"
                      if got != entry.pixels_sha256 else "the pixel bytes match but the image shape does not")
            if other_shape:
                detail += (f"; decoded {decoded.width}x{decoded.height} {decoded.mode}, "
                           f"expected {entry.width}x{entry.height} {entry.mode or ''}".rstrip())
            report.problems.append(f"{_rel(path, root)}: {detail}")
        elif full and entry.file_sha256 and sha256_file(path) != entry.file_sha256:
            report.notes.append(f"{_rel(path, root)}: file differs from the reference file but its pixels match "
                                f"(re-encoded copy; fine)")
    if full:
        listed = {(root / e.path).with_suffix("").as_posix() for e in manifest.images}
        extra = [p for p in image_files(root) if p.with_suffix("").as_posix() not in listed]
        if extra:
            shown = ", ".join(_rel(p, root) for p in extra[:5]) + (" ..." if len(extra) > 5 else "")
            report.notes.append(f"{len(extra)} image file(s) not in the manifest are ignored: {shown}")


def _check_count(manifest: DatasetManifest, root: Path, full: bool, report: VerifyReport) -> None:
    files = image_files(root)
    if manifest.images:
        for entry in manifest.images:
            path = find_image(root, entry)
            if path is None:
                report.problems.append(f"{entry.path}: missing")
            else:
                report.images.append(ImageRef(entry.id, path, None))
    else:
        report.images = [ImageRef(p.relative_to(root).with_suffix("").as_posix(), p, None) for p in files]
        if len(files) != manifest.image_count:
            report.problems.append(f"found {len(files)} images under {root}, the manifest expects "
                                   f"{manifest.image_count}")
    report.checked = len(report.images)
    if full:
        for ref in report.images:
            try:
                decode_and_hash(ref.path)
            except Exception as exc:
                report.problems.append(f"{_rel(ref.path, root)}: unreadable ({type(exc).__name__}: {exc})")
    report.notes.append(
        f"per-image checksums are not recorded for {manifest.name!r}: checked the image count"
        + (" and that every image decodes" if full else "") + "; could not check pixels")


def record_entries(root: Path) -> list[dict]:
    """Manifest ``images`` entries (sizes, file and pixel SHA-256) for every image under ``root``:
    how to add checksums to a manifest from a copy you trust."""
    from .images import load_image, pixel_hash

    out = []
    for p in image_files(root):
        try:
            d = decode_and_hash(p)
        except Exception as exc:  # a truncated or corrupt file: name it
            raise ValueError(f"{p}: cannot be read ({type(exc).__name__}: {exc}); a copy to record "
                             "checksums from must be complete") from exc
        entry = {"path": p.relative_to(root).as_posix(), "width": d.width, "height": d.height, "mode": d.mode,
                 "bytes": os.path.getsize(p), "file_sha256": sha256_file(p), "pixels_sha256": d.pixels_sha256}
        rgb = pixel_hash(load_image(p).pixels)
        if rgb != d.pixels_sha256:
            entry["rgb_sha256"] = rgb
        out.append(entry)
    return out
