"""``lcbench datasets``: list, fetch, verify and describe the named test sets."""
from __future__ import annotations

import argparse
import json
import sys

COMMAND = "datasets"
HELP = "list, fetch, verify and describe named test sets (kodak, tecnick, clic, div2k, set5 ...)"

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="every named set: images, size on disk, where it is (cached or not)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    f = sub.add_parser("fetch", help="download a set into the cache and verify it")
    f.add_argument("name", metavar="NAME")
    f.add_argument("--force", action="store_true", help="download again even if a cached copy exists")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    v = sub.add_parser("verify", help="re-check every checksum of a copy and report each mismatch",
                       description="Re-check every checksum of a local copy of a named set. Exit 0: the copy "
                                   "matches; 1: a mismatch; 2: bad input (unknown name, no local copy, "
                                   "--path not a folder).")
    v.add_argument("name", metavar="NAME", help="a dataset name (kodak, set5 ...), a manifest file NAME.json, "
                   "or the folder of a local copy named after its set (e.g. /data/set5)")
    v.add_argument("--path", metavar="DIR", help="check this folder instead of the copy lcbench would use")
    i = sub.add_parser("info", help="sources, licence, image count and sizes, checksums, local copy")
    i.add_argument("name", metavar="NAME")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.add_argument("--record", metavar="DIR",
                   help="print manifest 'images' entries (sizes, file and pixel SHA-256) for the images in DIR")


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return "?"


def _known(name: str) -> bool:
    from pathlib import Path

    from lcbench.named_datasets import dataset_names

    return name in dataset_names() or (name.endswith(".json") and Path(name).expanduser().is_file())


def _unknown(name: str) -> int:
    from lcbench.manifest import unknown_name_message
    from lcbench.named_datasets import dataset_names

    if name.endswith(".json"):
        msg = f"no manifest file {name} (NAME.json must be an existing dataset manifest)"
    else:
        msg = unknown_name_message(name, dataset_names(), option=None)
    print(f"lcbench datasets: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _error(action: str, exc: BaseException) -> str:
    """The message of an error, never empty."""
    return f"lcbench datasets {action}: error: {str(exc).strip() or type(exc).__name__}"


def _list(args: argparse.Namespace) -> int:
    from lcbench.manifest import all_manifests
    from lcbench.named_datasets import disk_bytes, locate

    rows = []
    for m in all_manifests():
        loc = locate(m.name)
        rows.append({
            "name": m.name, "images": m.image_count, "image_sizes": m.image_sizes,
            "checksums": "pixels" if m.has_pixel_checksums else "count only",
            "where": loc.where if loc else None, "path": str(loc.root) if loc else None,
            "bytes_on_disk": disk_bytes(loc.root) if loc else None, "download_bytes": m.download_bytes,
            "title": m.title,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'NAME':<28} {'IMAGES':>6} {'SIZE':>10}  {'CHECKSUMS':<10}  STATUS")
    for r in rows:
        if r["where"]:
            size, status = _size(r["bytes_on_disk"]), f"{r['where']}: {r['path']}"
        else:
            size, status = (f"~{_size(r['download_bytes'])}" if r["download_bytes"] else "?"), "not present (fetched on first use)"
        print(f"{r['name']:<28} {r['images']:>6} {size:>10}  {r['checksums']:<10}  {status}")
    print("\nsample (4 images shipped with scikit-image) is always available offline; "
          "any folder of images works as --dataset PATH.")
    return EXIT_OK


def _fetch(args: argparse.Namespace) -> int:
    from lcbench.cache import DATA_ENV
    from lcbench.dataset import DatasetError
    from lcbench.named_datasets import fetch, locate, verify

    if not _known(args.name):
        return _unknown(args.name)
    try:
        loc = locate(args.name) if not args.name.endswith(".json") else None
        if loc is not None and loc.where != "cache" and not args.force:
            # A verified mirror is as good as a download; --force downloads into the cache anyway.
            report = verify(args.name, root=loc.root, full=False)
            print(f"{args.name} is available from {DATA_ENV} ({loc.root}); not downloading (use --force to)")
            if not report.ok:
                for problem in report.problems:
                    print(f"  FAIL {problem}")
                print(report.summary())
                return EXIT_FAILED
        else:
            report = fetch(args.name, force=args.force, progress=False if args.no_progress else None)
    except DatasetError as exc:
        print(_error("fetch", exc), file=sys.stderr)
        return EXIT_FAILED
    print(report.summary())
    for note in report.notes:
        print(f"  note: {note}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lcbench.dataset import DatasetError
    from lcbench.manifest import ManifestError
    from lcbench.named_datasets import NoLocalCopyError, dataset_names, verify

    name, root = args.name, Path(args.path).expanduser() if args.path else None
    if not _known(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            return _unknown(name)
        # a local copy given as NAME: its folder name says which set it is
        if root is not None or folder.resolve().name not in dataset_names():
            print(f"lcbench datasets verify: error: {name} is a folder; verify takes the NAME of a set "
                  f"({', '.join(dataset_names())}) and checks a folder given with --path: "
                  f"`lcbench datasets verify NAME --path {name}`", file=sys.stderr)
            return EXIT_BAD_INPUT
        name, root = folder.resolve().name, folder
    if root is not None and not root.is_dir():
        print(f"lcbench datasets verify: error: --path {root}: not a folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        report = verify(name, root=root, full=True)
    except (NoLocalCopyError, ManifestError) as exc:
        print(_error("verify", exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except DatasetError as exc:
        print(_error("verify", exc), file=sys.stderr)
        return EXIT_FAILED
    for problem in report.problems:
        print(f"  FAIL {problem}")
    for note in report.notes:
        print(f"  note: {note}")
    print(report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED


def _info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lcbench.manifest import manifest_to_dict
    from lcbench.named_datasets import _manifest_for, locate
    from lcbench.verify import record_entries

    if not _known(args.name):
        return _unknown(args.name)
    m = _manifest_for(args.name)
    if args.record:
        root = Path(args.record)
        if not root.is_dir():
            print(f"lcbench datasets info: error: --record {root}: not a folder", file=sys.stderr)
            return EXIT_BAD_INPUT
        entries = record_entries(root)
        print(json.dumps({"images": entries}, indent=2))
        # entries for another set's copy would go into this set's manifest without a word
        listed = {im.path for im in m.images}
        found = {e["path"] for e in entries}
        if (m.image_count and len(entries) != m.image_count) or (listed and listed != found):
            print(f"lcbench datasets info: warning: {root} has {len(entries)} image(s); {m.name}'s manifest "
                  f"lists {m.image_count or len(listed)}" + (f" ({len(listed - found)} of them not in {root}, "
                  f"{len(found - listed)} there not listed)" if listed else "") +
                  f": is this a copy of {m.name}?", file=sys.stderr)
        return EXIT_OK
    if args.json:
        print(json.dumps(manifest_to_dict(m), indent=2))
        return EXIT_OK
    loc = locate(m.name)
    print(f"{m.name}: {m.title}")
    if m.description:
        print(f"  {m.description}")
    print(f"  images:    {m.image_count} ({m.image_sizes or 'sizes not recorded'})")
    print(f"  homepage:  {m.homepage or '-'}")
    print(f"  licence:   {m.licence or '-'}")
    if m.citation:
        print(f"  cite:      {m.citation}")
    print(f"  checksums: {'per-image pixel SHA-256' if m.has_pixel_checksums else 'none recorded (count and readability only)'}")
    if m.checksums_note:
        print(f"             {m.checksums_note}")
    print(f"  sources ({len(m.sources)}):")
    for s in m.sources[:5]:
        extra = f" [{s.kind}" + (f", folder {s.subdir}" if s.subdir else "") + "]"
        print(f"    {s.url}{extra}")
    if len(m.sources) > 5:
        print(f"    ... and {len(m.sources) - 5} more")
    print(f"  local copy: {f'{loc.root} ({loc.where})' if loc else 'none (fetched on first use, or `lcbench datasets fetch ' + m.name + '`)'}")
    print(f"  manifest:  {m.origin}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "fetch": _fetch, "verify": _verify, "info": _info}[args.action](args)
