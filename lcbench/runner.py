"""A run: resolve the dataset and codecs, plan jobs, skip what is done, execute the rest, store.

CPU codecs run through ``backends`` (loky workers or Dask), one task per (image, codec), so
each worker decodes a source image and computes its metric statistics once for all rate
points. Learned codecs (``uses_device``) run in this process on the chosen torch device,
batched over images of equal size, with one model load (``worker.run_device_jobs``). A job
that fails is recorded with its error and the others go on.
"""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__, store
from .cache import file_lock, write_json_atomic
from .codec import Codec, CodecUnavailable, result_version
from .dataset import Dataset, resolve_dataset, select_images
from .jobs import METRICS_VERSION, Job, job_key, key_tag, plan_jobs
from .metrics import METRIC_NAMES
from .registry import codecs as codecs_registry
from .registry import create_codec, parse_codec_spec

@dataclass
class RunOptions:
    codecs: Sequence[str]
    dataset: str | Dataset
    out: Path | None = None
    rates: tuple[float, ...] | None = None            # one grid for every codec
    codec_rates: dict[str, tuple[float, ...]] = field(default_factory=dict)  # per codec spec/name
    jobs: int | None = None                            # None: all cores
    device: str | None = None                          # None: cuda when available, else cpu
    max_images: int | None = None
    image_glob: str | None = None
    target_bpp: tuple[float, ...] | None = None         # rate matching instead of the rate grid
    save_bitstreams: bool = False
    save_decoded: bool = False
    progress: bool | None = None                       # None: when stderr is a terminal
    use_cache: bool = True                             # reuse results from the machine-wide cache
    backend: str = "loky"                              # "loky" (processes on this machine) or "dask"
    scheduler: str | None = None                       # dask scheduler address; None: a local cluster
    metrics_backend: str | None = None                 # learned codecs' metrics: "torch", "cpu" or None/"auto"
    command_line: str | None = None


@dataclass
class RunOutcome:
    run_dir: Path
    frame: Any                      # pandas DataFrame: this run's rows (one per planned job)
    planned: int
    skipped: int                    # already done in the run directory before this invocation
    failures: list[dict[str, Any]]
    from_cache: int = 0             # served from the machine-wide result cache
    ignored: list[str] = field(default_factory=list)  # files under the dataset folder not benchmarked
    old_version_rows: dict[str, int] = field(default_factory=dict)  # codec -> rows left out of results.csv
    ignored_reasons: dict[str, str] = field(default_factory=dict)  # each of ``ignored`` -> why

    @property
    def ok(self) -> bool:
        return not self.failures


def default_device() -> str:
    """cuda when torch sees a GPU, else cpu. Imports torch: call only when a learned codec runs."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _check_output_names(dataset: Dataset) -> None:
    """Saved files are named after image ids with / as __: two ids must not share a name."""
    from .worker import output_stem

    seen: dict[str, str] = {}
    for im in dataset.images:
        stem = output_stem(im.id, 0)
        if stem in seen:
            raise ValueError(f"images {seen[stem]!r} and {im.id!r} would save their bitstreams/decoded images "
                             f"under the same file name ({stem.split('@')[0]}@...): rename one, or run without "
                             "--save-bitstreams/--save-decoded")
        seen[stem] = im.id


def check_device(device: str) -> None:
    """Reject a --device torch cannot use here before anything runs (and before cached results,
    which carry no device, could make a run on a missing GPU look like it worked)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--device {device!r}: not a torch device (use cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"--device {device}: no CUDA GPU is available here (torch {torch.__version__}, "
                             f"torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"--device {device}: this machine has {n} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):
        raise ValueError(f"--device {device!r}: lcbench runs learned codecs on cpu or cuda")


def default_out(dataset: Dataset) -> Path:
    return Path("reports") / dataset.name


def build_codecs(specs: Sequence[str], device: str) -> list[Codec]:
    """Codec objects for the run; an unavailable codec stops the run before any job starts."""
    codecs = []
    for spec in specs:
        codec = create_codec(spec, device=device)
        try:
            avail = codec.availability_here()
            codec.version()
        except CodecUnavailable:
            raise
        except Exception as exc:  # a plugin's availability() or version() is still that codec's error
            raise CodecUnavailable(f"codec {spec!r}: {type(exc).__name__}: {exc}") from exc
        if not avail:
            raise CodecUnavailable(f"codec {spec!r} is unavailable: {avail.reason}. {avail.fix}".strip())
        codecs.append(codec)
    labels = [c.label() for c in codecs]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ValueError(f"codec listed twice: {', '.join(sorted(dup))}")
    return codecs


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _metadata(options: RunOptions, dataset: Dataset, codecs: Sequence[tuple[str, Codec]], device: str,
              previous: dict[str, Any] | None) -> dict[str, Any]:
    from .environment import library_versions, machine
    from .worker import metrics_backend_for

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = {
        "format_version": store.FORMAT_VERSION,
        "lcbench_version": __version__,
        "created": (previous or {}).get("created", now),
        "updated": now,
        "command_line": options.command_line or " ".join(shlex.quote(a) for a in sys.argv),
        "dataset": {"name": dataset.name, "root": str(Path(dataset.root).absolute()), "images": len(dataset.images),
                    "ignored_files": [_relative(p, dataset.root) for p in dataset.ignored],
                    "ignored_reasons": {_relative(p, dataset.root): dataset.ignored_reasons.get(p, "")
                                        for p in dataset.ignored}},
        "device": device,
        "metrics": {"names": list(METRIC_NAMES), "version": METRICS_VERSION,
                    "learned_codecs_backend": metrics_backend_for(device, options.metrics_backend),
                    "definitions": "see lcbench.metrics: psnr over RGB jointly; psnr_y BT.601 studio-range; "
                                   "ssim Gaussian 11/1.5 valid; ms_ssim as pytorch-msssim 1.0"},
        "codecs": dict((previous or {}).get("codecs", {})),
        "libraries": library_versions(),
        "machine": machine(),
        "invocations": list((previous or {}).get("invocations", [])),
    }
    for spec, codec in codecs:
        meta["codecs"][codec.label()] = {"spec": spec, "name": codec.name, "version": result_version(codec),
                                         "rate_param": codec.rate_param, "options": codec.options,
                                         "description": getattr(codec, "description", "")}
    meta["invocations"].append({"at": now, "command_line": meta["command_line"]})
    return meta


def _codec_versions(meta_path: Path) -> dict[str, str]:
    """label -> version of every codec in run.json now (a run into the same --out at the same
    time may have added some); {} when it cannot be read."""
    try:
        meta = _previous_metadata(meta_path) or {}
    except ValueError:
        return {}
    codecs = meta.get("codecs")
    return {k: c.get("version") for k, c in codecs.items() if isinstance(c, dict)} if isinstance(codecs, dict) else {}


def _previous_metadata(meta_path: Path) -> dict[str, Any] | None:
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path} is not valid JSON ({exc}): fix or remove it, or use another --out") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path} is not an lcbench run.json (not a JSON object): use another --out")
    # the fields a run carries over; a wrong type was a traceback when the run extended them
    for key, kind, what in (("codecs", dict, "an object"), ("invocations", list, "a list"),
                            ("dataset", dict, "an object")):
        if key in meta and not isinstance(meta[key], kind):
            raise ValueError(f"{meta_path}: \"{key}\" must be {what}, got {type(meta[key]).__name__}: fix or remove "
                             f"the file (results in records/ are kept), or use another --out")
    if isinstance(meta.get("codecs"), dict):
        odd = [k for k, v in meta["codecs"].items() if not isinstance(v, dict)]
        if odd:
            raise ValueError(f"{meta_path}: \"codecs\" entries must be objects; {odd[0]!r} is not: fix or remove the "
                             "file (results in records/ are kept), or use another --out")
    return meta


def _check_same_dataset(previous: dict[str, Any] | None, dataset: Dataset, run_dir: Path) -> None:
    """One run directory holds one dataset: another one's images would replace rows of the same
    id in results.csv and mix two test sets in one table. A named set (checksummed images) may
    move between folders; a folder dataset is identified by its folder."""
    if not previous or not isinstance(previous.get("dataset"), dict):
        return
    name, root = previous["dataset"].get("name"), previous["dataset"].get("root")
    # the built-in 'sample' set lives inside scikit-image's install, which may move between runs
    sample = dataset.name == "sample" and root is not None and Path(root).parts[-2:] == ("skimage", "data")
    named = any(im.pixels_sha256 for im in dataset.images) or sample
    # a relative root (run.json from before roots were stored absolute) says nothing reliable
    # once the working directory changed: then the name alone decides
    same_root = (root is None or named or not Path(root).is_absolute()
                 or Path(root).resolve() == Path(dataset.root).resolve())
    # run.json of an early version: `--dataset .` stored the name "" with a relative root; then
    # the images it measured must all be in this folder, or it is another dataset
    old_unnamed = (root is not None and not Path(root).is_absolute() and name in ("", ".", "..") and not named
                   and {r.get("image") for r in store.read_records(run_dir)} <= {im.id for im in dataset.images})
    if (name != dataset.name and not old_unnamed) or not same_root:
        raise ValueError(f"--out {run_dir} holds a run on dataset {name!r} ({root}); this run is on "
                         f"{dataset.name!r} ({dataset.root}): use another --out for another dataset")


def execute(options: RunOptions) -> RunOutcome:
    """Resolve, plan, run what is not done yet, and write results.csv and run.json."""
    whole = options.dataset if isinstance(options.dataset, Dataset) else resolve_dataset(options.dataset)
    dataset = select_images(whole, max_images=options.max_images, pattern=options.image_glob)
    needs_device = any(getattr(codecs_registry.get(parse_codec_spec(s)[0]), "uses_device", False)
                       for s in options.codecs)
    if options.device:
        check_device(options.device)
    device = options.device or (default_device() if needs_device else "cpu")
    codec_objs = build_codecs(options.codecs, device)
    codecs = list(zip(options.codecs, codec_objs))
    # planned before anything is written: a bad rate grid leaves an existing run directory as it was
    jobs = plan_jobs(codecs, dataset, rates=options.rates, codec_rates=options.codec_rates,
                     target_bpp=options.target_bpp)
    if options.save_bitstreams or options.save_decoded:
        _check_output_names(dataset)
    run_dir = Path(options.out) if options.out else default_out(dataset)
    run_dir.mkdir(parents=True, exist_ok=True)

    meta_path = run_dir / store.METADATA_JSON
    # two runs into one --out at once: each reads, checks and extends run.json in turn (unlocked,
    # the second run's write dropped the first one's codecs, or mixed two datasets silently)
    with file_lock(run_dir / RUN_LOCK):
        previous = _previous_metadata(meta_path)
        _check_same_dataset(previous, dataset, run_dir)
        meta = _metadata(options, dataset, codecs, device, previous)
        write_json_atomic(meta_path, meta)
    versions = {label: c.get("version") for label, c in meta["codecs"].items()}
    # the results.csv row each job fills: an older record there (another codec version, an
    # edited image) must not stand in for this job's result
    planned = {(j.label, j.rate_param, j.quality, j.image.id): j.key for j in jobs}
    existing = store.read_records(run_dir)
    # done: a successful record of the key that fills its own row (a record whose fields do not
    # match its key's job, a damaged or hand-edited one, counted as done but filled no row)
    slot_of_key = {key: slot for slot, key in planned.items()}
    done = {r["key"] for r in existing
            if not r.get("error") and r.get("key") and store.slot_of(r) == slot_of_key.get(r["key"], store.slot_of(r))}
    saving = options.save_bitstreams or options.save_decoded
    todo = [j for j in jobs if j.key not in done or (saving and _outputs_missing(j, run_dir, options))]
    cache, cache_keys, reused = None, {}, 0
    if options.use_cache and todo and not (options.save_bitstreams or options.save_decoded):
        cache, cache_keys = _open_cache(todo)
        reused_keys = _reuse_cached(cache, cache_keys, todo, run_dir, dataset.name)
        reused = len(reused_keys)
        todo = [j for j in todo if j.key not in reused_keys]
    on_device = {spec for spec, codec in codecs if codec.uses_device}
    cpu_jobs = [j for j in todo if j.spec not in on_device]
    dev_jobs = [j for j in todo if j.spec in on_device]

    show = options.progress if options.progress is not None else sys.stderr.isatty()
    from tqdm import tqdm

    from .backends import run_cpu_jobs
    from .worker import run_device_jobs

    bar = tqdm(total=len(todo), disable=not show, unit="job", desc="lcbench", dynamic_ncols=True)
    new_records: list[dict[str, Any]] = []
    try:
        for records in run_cpu_jobs(run_dir, dataset.name, device, cpu_jobs, n_jobs=options.jobs,
                                    backend=options.backend, scheduler=options.scheduler,
                                    save_bitstreams=options.save_bitstreams, save_decoded=options.save_decoded):
            new_records.extend(records)
            bar.update(len(records))
        if dev_jobs:
            for records in run_device_jobs(run_dir, dataset.name, device, dev_jobs, options.save_bitstreams,
                                           options.save_decoded, metrics_backend=options.metrics_backend):
                new_records.extend(records)
                bar.update(len(records))
    finally:
        bar.close()
        store.close_writers()
        if cache is not None:
            cache.put_many((cache_keys[r["key"]], r) for r in new_records if not r.get("error") and r["key"] in cache_keys)
            cache.close()
        with file_lock(run_dir / RUN_LOCK):
            stored = store.read_records(run_dir)
            versions.update({k: v for k, v in _codec_versions(meta_path).items() if k not in versions})
            rows = store.latest_by_job(stored, planned, versions, _current_key(versions, whole))
            store.write_results_csv(run_dir, list(rows.values()))
        labels = {j.label for j in jobs}
        old_rows: dict[str, int] = {}  # rows of this run's codecs that only an older version measured
        for slot in {store.slot_of(r) for r in stored} - set(rows):
            if slot[0] in labels:
                old_rows[slot[0]] = old_rows.get(slot[0], 0) + 1

    planned_keys = set(planned.values())
    mine = [r for r in rows.values() if r.get("key") in planned_keys]
    frame = store.records_to_frame(mine)
    failures = [r for r in mine if r.get("error")]
    return RunOutcome(run_dir, frame, len(jobs), len(jobs) - len(todo) - reused, failures, reused,
                      [_relative(p, dataset.root) for p in dataset.ignored], old_rows,
                      {_relative(p, dataset.root): dataset.ignored_reasons.get(p, "") for p in dataset.ignored})


RUN_LOCK = ".lcbench.lock"  # in the run directory: run.json and results.csv are rewritten under it


def _outputs_missing(job: Job, run_dir: Path, options: RunOptions) -> bool:
    """A finished job whose bitstream/decoded image was asked for (--save-*) but not saved by the
    run that did it: it runs again, or a resumed run would say all ok with the files missing."""
    from .worker import output_folder, output_stem

    stem = output_stem(job.image.id, job.quality, job.rate_param)
    wanted = [("bitstreams", ".bin")] * bool(options.save_bitstreams) + [("decoded", ".png")] * bool(options.save_decoded)
    return any(not (run_dir / kind / output_folder(job.label) / f"{stem}{ext}").is_file() for kind, ext in wanted)


def _current_key(versions: dict[str, str], dataset: Dataset) -> Callable[[tuple], str | None]:
    """slot -> the key its job would have now (codec version from run.json, the image file as
    it is now, today's metric definitions); None when the codec or the image is unknown."""
    images = {im.id: im for im in dataset.images}
    memo: dict[tuple, str | None] = {}

    def key(slot: tuple) -> str | None:
        if slot not in memo:
            label, rate_param, quality, image = slot
            version, ref = versions.get(label), images.get(image)
            ok = version is not None and ref is not None and isinstance(quality, (int, float))
            memo[slot] = job_key(label, version, float(quality), ref, key_tag(str(rate_param))) if ok else None
        return memo[slot]

    return key


def _open_cache(jobs: list[Job]):
    """The result cache and each job's content key (jobs whose image cannot be hashed get none)."""
    from .result_cache import ResultCache, content_key

    cache = ResultCache()
    keys: dict[str, str] = {}
    if not cache.enabled:  # unusable (it warned): do not decode every image for keys nothing can serve
        return cache, keys
    hashes: dict[Path, str | None] = {}
    for job in jobs:
        # the same key as ResultCache.pixel_hash gives the file ("HxW:sha"), so a named set and
        # a folder copy of it share cached results
        ref = job.image
        sha = f"{ref.shape[0]}x{ref.shape[1]}:{ref.pixels_sha256}" if ref.pixels_sha256 and ref.shape else None
        if sha is None:
            if job.image.path not in hashes:
                try:
                    hashes[job.image.path] = cache.pixel_hash(job.image.path)
                except Exception:  # unreadable: the job itself will report it
                    hashes[job.image.path] = None
            sha = hashes[job.image.path]
        if sha:
            keys[job.key] = content_key(job.label, job.version, key_tag(job.rate_param), job.quality, sha, METRICS_VERSION)
    return cache, keys


def _reuse_cached(cache, cache_keys: dict[str, str], jobs: list[Job], run_dir: Path, dataset: str) -> set[str]:
    """Copy cached results of these jobs into the run directory; return the run keys served."""
    hits = cache.get_many(set(cache_keys.values()))
    writer = store.writer_for(run_dir)
    served = set()
    for job in jobs:
        rec = hits.get(cache_keys.get(job.key, ""))
        if rec is None or rec.get("error"):
            continue
        writer.append({**rec, "image": job.image.id, "dataset": dataset, "key": job.key})
        served.add(job.key)
    return served
