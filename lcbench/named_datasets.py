"""Named test sets (kodak, tecnick, clic..., div2k-valid, set5, set14, bsd100, urban100).

Resolution for a name, after ``resolve_dataset`` has ruled out folder paths and ``sample``:
1. the cache, ``$LCBENCH_CACHE/datasets/<name>``;
2. each mirror in ``$LCBENCH_DATA`` (``<dir>/<name>``), in order;
3. a download (when allowed) into a staging folder, verified in full, then renamed into the cache.
The first copy found is verified against the manifest (quick check, see ``lcbench.verify``) and
used; a copy that fails is an error, never silently skipped, so a damaged mirror gets noticed.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import cache
from .archive import safe_extract
from .dataset import Dataset, DatasetError
from .download import DownloadError, download
from .manifest import DatasetManifest, Source, get_manifest, load_manifest, manifest_names
from .verify import VerifyReport, check_copy, image_files

MARKER = ".lcbench-dataset.json"  # written into a cached copy once it is complete and verified


@dataclass(frozen=True)
class Location:
    """A copy of a dataset on this machine: ``where`` is 'cache' or 'LCBENCH_DATA'."""

    root: Path
    where: str


def dataset_names() -> list[str]:
    """Every registered dataset name (built-in manifests plus registered ones)."""
    return manifest_names()


def _manifest_for(name: str) -> DatasetManifest:
    """A registered name, or a path to a manifest file (``--dataset my-set.json``)."""
    if name.endswith(".json") and Path(name).expanduser().is_file():
        m = load_manifest(Path(name).expanduser())
        from .manifest import ManifestError, manifest_names, manifest_to_dict

        if m.name in manifest_names():
            # its copy would live at the known set's cache path and its results carry that set's
            # name: only a file that says exactly what the known manifest says may use the name
            known = get_manifest(m.name)
            if manifest_to_dict(m) != manifest_to_dict(known):
                raise ManifestError(f"manifest file {name} defines dataset {m.name!r}, which is already defined by "
                                    f"{known.origin} with other content; give your set another \"name\"")
        return m
    return get_manifest(name)


def cache_path(name: str) -> Path:
    return cache.datasets_dir() / name


def candidates(name: str) -> list[Location]:
    """Where a copy of ``name`` may be, in the order they are tried."""
    return [Location(cache_path(name), "cache")] + [Location(d / name, "LCBENCH_DATA") for d in cache.data_dirs()]


def locate(name: str) -> Location | None:
    """The first existing copy of ``name`` (not verified), or None."""
    for loc in candidates(name):
        if loc.root.is_dir():
            return loc
    return None


def _searched(name: str) -> str:
    dirs = cache.data_dirs()
    mirrors = ", ".join(str(d / name) for d in dirs) if dirs else f"none (${cache.DATA_ENV} is not set)"
    return f"cache {cache_path(name)}; {cache.DATA_ENV} mirrors: {mirrors}"


def _local_copy_help(m: DatasetManifest) -> str:
    example = m.images[0].path if m.images else "<images>"
    return (f"To use a local copy, either set {cache.DATA_ENV} to a folder that contains {m.name}/ "
            f"(e.g. {cache.DATA_ENV}=/data/mirrors with /data/mirrors/{m.name}/{example}; separate several "
            f"folders with {os.pathsep!r}), or pass the folder itself: --dataset /path/to/{m.name}")


def resolve_named(name: str, *, download: bool = True) -> Dataset:
    """The verified images of the named set ``name``; DatasetError says what is wrong and how to fix it."""
    m = _manifest_for(name)
    loc = locate(m.name)
    if loc is not None:
        report = check_copy(m, loc.root, full=False, records=cache.VerificationRecords(m.name))
        if not report.ok:
            raise DatasetError(_bad_copy_message(m, loc, report))
        if not report.pixels_checked:  # count-only sets: say which copy and what was (not) checked
            others = [str(c.root) for c in candidates(m.name) if c.root.is_dir() and c.root != loc.root]
            _log(f"dataset {m.name!r}: using the copy at {loc.root} ({loc.where}); its manifest records no pixel "
                 f"checksums, so only the image count and readability were checked"
                 + (f" (other copies, not used: {', '.join(others)})" if others else ""))
        return report.dataset()
    if not download:
        raise DatasetError(f"dataset {m.name!r} is not on this machine (searched {_searched(m.name)}) and "
                           f"downloading is off. Run `lcbench datasets fetch {m.name}`. {_local_copy_help(m)}")
    return fetch(m.name, manifest=m).dataset()


def _bad_copy_message(m: DatasetManifest, loc: Location, report: VerifyReport) -> str:
    shown = "; ".join(report.problems[:5]) + (f"; ... ({len(report.problems)} in all)" if len(report.problems) > 5 else "")
    if loc.where == "cache":
        fix = f"`lcbench datasets fetch {m.name} --force` downloads it again"
        others = [str(c.root) for c in candidates(m.name)[1:] if c.root.is_dir()]
        if others:  # offline, removing the broken cache copy lets the mirror serve
            fix += f", or remove {loc.root} to use the copy at {others[0]} ({cache.DATA_ENV})"
    else:
        fix = f"fix or remove that copy, or take it out of {cache.DATA_ENV}"
    return (f"dataset {m.name!r}: the copy at {loc.root} ({loc.where}) does not match its manifest "
            f"({m.origin}): {shown}. `lcbench datasets verify {m.name}` lists every problem; {fix}.")


def _log(msg: str) -> None:
    print(f"lcbench: {msg}", file=sys.stderr, flush=True)


def _download_source(m: DatasetManifest, src: Source, *, progress: bool | None, retries: int) -> Path:
    """Download one source into the downloads folder, trying each of its URLs in turn."""
    key = uuid.uuid5(uuid.NAMESPACE_URL, src.url).hex[:12]  # same URL -> same file: resumable, shareable
    dest = cache.downloads_dir() / f"{key}-{Path(src.filename).name}"
    errors: list[DownloadError] = []
    for url in src.urls:
        _log(f"downloading {url}")
        try:
            return download(url, dest, sha256=src.sha256, size=src.size, progress=progress, retries=retries)
        except DownloadError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    raise DownloadError(errors[0].url, "; ".join(str(e) for e in errors))


def _shared_elsewhere(url: str, name: str) -> bool:
    """Is this download also a source of another dataset (e.g. one SR benchmark archive)?"""
    from .manifest import all_manifests

    return any(s.url == url for other in all_manifests() if other.name != name for s in other.sources)


def _place_archive(m: DatasetManifest, src: Source, archive: Path, staging: Path) -> None:
    unpack = staging / f".unpack-{uuid.uuid4().hex[:8]}"
    try:
        safe_extract(archive, unpack)
    except DatasetError as exc:
        # the message names the downloads file, which is deleted after a failure: name the URL
        raise type(exc)(f"dataset {m.name!r}: the archive downloaded from {src.url}: {exc}") from exc
    top = unpack
    if src.subdir:
        want = src.subdir.strip("/")
        found = []
        for d in unpack.rglob("*"):
            rel = d.relative_to(unpack).as_posix()
            # Zips made on macOS carry a resource-fork shadow tree (__MACOSX/valid/...): not images.
            if d.is_dir() and not d.is_symlink() and "__MACOSX" not in d.relative_to(unpack).parts \
                    and (rel == want or rel.endswith("/" + want)):
                found.append(d)
        if len(found) != 1:
            listing = ", ".join(sorted(p.name for p in unpack.iterdir())[:10])
            raise DatasetError(f"dataset {m.name!r}: archive {src.url} has {len(found)} folders named {want!r} "
                               f"(expected exactly one; its top level holds: {listing})")
        top = found[0]
    for child in top.iterdir():
        dest = staging / child.name
        if dest.exists():
            raise DatasetError(f"dataset {m.name!r}: {child.name} comes from two sources")
        shutil.move(str(child), str(dest))
    shutil.rmtree(unpack, ignore_errors=True)


def fetch(name: str, *, force: bool = False, progress: bool | None = None, retries: int = 3,
          manifest: DatasetManifest | None = None) -> VerifyReport:
    """Download ``name`` into the cache, verify it in full, and only then make it visible.

    Returns the verification report of the cached copy. With ``force`` an existing cached copy is
    replaced (after the new one has verified). A failure leaves no folder at the cache path.
    """
    m = manifest or _manifest_for(name)
    with cache.fetch_lock(m.name):
        return _fetch_locked(m, force=force, progress=progress, retries=retries)


def _fetch_locked(m: DatasetManifest, *, force: bool, progress: bool | None, retries: int) -> VerifyReport:
    final = cache_path(m.name)
    if final.is_dir() and not force:  # perhaps another process fetched it while we waited
        report = check_copy(m, final, full=False, records=cache.VerificationRecords(m.name))
        if report.ok:
            return report
        raise DatasetError(_bad_copy_message(m, Location(final, "cache"), report))
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".partial-{m.name}-*"):  # left by a killed fetch; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    # Staging lives beside the final folder (same filesystem) so the last step is one rename.
    staging = final.parent / f".partial-{m.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    downloaded: list[tuple[Source, Path]] = []
    try:
        for src in m.sources:
            try:
                got = _download_source(m, src, progress=progress, retries=retries)
            except DownloadError as exc:
                raise DownloadError(exc.url, f"{exc.reason}. Could not download dataset {m.name!r}; no local copy "
                                    f"was found (searched {_searched(m.name)}). {_local_copy_help(m)}") from exc
            downloaded.append((src, got))
            if src.kind == "file":
                dest = staging / (src.path or Path(src.filename).name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                # Copy, not move: until the whole set is installed, a failed fetch can be retried
                # without downloading the files it already has.
                _link_or_copy(got, dest)
            else:
                _place_archive(m, src, got, staging)
        report = check_copy(m, staging, full=True)
        if not report.ok:
            shown = "; ".join(report.problems[:10])
            raise DatasetError(f"dataset {m.name!r}: the download does not match its manifest ({m.origin}): {shown}. "
                               f"Nothing was kept; the source may have changed: check {m.homepage or m.sources[0].url}")
        cache.write_json_atomic(staging / MARKER, {"name": m.name, "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                  "sources": [s.url for s in m.sources], "manifest": m.origin})
        _install(staging, final, replace=force)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, DatasetError) and not isinstance(exc, DownloadError):
            # The content was bad (pixels, count, unsafe archive): a download that has no recorded
            # checksum of its own must not be reused by the next attempt, or it would fail forever.
            for src, got in downloaded:
                if src.sha256 is None:
                    got.unlink(missing_ok=True)
        raise
    for src, got in downloaded:  # installed: the downloads are no longer needed
        if not _shared_elsewhere(src.url, m.name):
            got.unlink(missing_ok=True)
    _log(f"dataset {m.name!r} ready at {final}")
    # Re-check in place: the paths (and the verification records) are those of the final folder.
    return check_copy(m, final, full=False, records=cache.VerificationRecords(m.name))


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _install(staging: Path, final: Path, *, replace: bool) -> None:
    """Rename the verified staging folder to its final name (atomic on one filesystem)."""
    old = None
    if final.exists():
        if not replace:  # another process finished first; its copy is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
            return
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    try:
        os.rename(staging, final)
    except OSError:
        if old is not None and not final.exists():
            os.rename(old, final)  # put the previous copy back
        if final.is_dir() and not replace:
            shutil.rmtree(staging, ignore_errors=True)
            return
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class NoLocalCopyError(DatasetError):
    """``verify`` found no copy of the named set on this machine: nothing to check."""


def verify(name: str, *, root: Path | None = None, full: bool = True) -> VerifyReport:
    """Check a copy of ``name`` (``root``, else the one resolution would use) against its manifest.

    No copy found raises NoLocalCopyError (where it looked, how to get or point at one)."""
    m = _manifest_for(name)
    if root is None:
        loc = locate(m.name)
        if loc is None:
            raise NoLocalCopyError(
                f"no local copy of dataset {m.name!r} to verify (looked in {_searched(m.name)}). "
                f"`lcbench datasets fetch {m.name}` downloads one; a copy elsewhere is checked with "
                f"`lcbench datasets verify {m.name} --path DIR` (or found through {cache.DATA_ENV}=PARENT "
                f"with PARENT/{m.name}/).")
        root = loc.root
    return check_copy(m, Path(root), full=full, records=cache.VerificationRecords(m.name))


def disk_bytes(root: Path) -> int:
    """Bytes of the image files under ``root``."""
    return sum(p.stat().st_size for p in image_files(root))
