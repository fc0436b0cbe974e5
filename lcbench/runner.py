"""Plan and execute codec x rate point x image jobs; every finished job is stored at once.

CPU codecs run in joblib workers, one task per (image, codec) so each worker decodes a
source image and computes its reference statistics once for all rate points (and keeps
the last images for the next codec). Learned codecs (``uses_device``) run in this
process on the chosen torch device, batched over images of equal size, with one model
load. A job that fails is recorded with its error and the others go on.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import __version__, store
from .cache import write_json_atomic
from .codec import Codec, CodecUnavailable
from .dataset import Dataset, ImageRef, resolve_dataset, select_images
from .images import ImageReadError, SourceImage, load_image, pixel_hash
from .metrics import METRIC_NAMES, Reference, compute_metrics
from .registry import codecs as codecs_registry
from .registry import create_codec, parse_codec_spec

METRICS_VERSION = 1  # bump when a metric's definition changes: cached results become stale


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
    command_line: str | None = None


@dataclass
class RunOutcome:
    run_dir: Path
    frame: Any                      # pandas DataFrame: this run's rows (one per planned job)
    planned: int
    skipped: int                    # already done in the run directory before this invocation
    failures: list[dict[str, Any]]
    from_cache: int = 0             # served from the machine-wide result cache

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class Job:
    spec: str
    label: str
    version: str
    rate_param: str
    quality: float
    image: ImageRef
    key: str
    target_bpp: float | None = None  # set for rate-matched jobs: quality then holds the target


def default_device() -> str:
    """cuda when torch sees a GPU, else cpu. Imports torch: call only when a learned codec runs."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def default_out(dataset: Dataset) -> Path:
    return Path("reports") / dataset.name


def _file_identity(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def job_key(label: str, version: str, quality: float, image: ImageRef, rate_param: str = "") -> str:
    """Identity of a job's result: codec + version + rate + image file + metric definitions."""
    try:
        ident = image.pixels_sha256 or _file_identity(image.path)
    except OSError:
        ident = "missing"
    payload = json.dumps([label, version, rate_param, float(quality), image.id, ident, METRICS_VERSION])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def build_codecs(specs: Sequence[str], device: str) -> list[Codec]:
    """Codec objects for the run; an unavailable codec stops the run before any job starts."""
    codecs = []
    for spec in specs:
        codec = create_codec(spec, device=device)
        avail = type(codec).availability()
        if not avail:
            raise CodecUnavailable(f"codec {spec!r} is unavailable: {avail.reason}. {avail.fix}".strip())
        codecs.append(codec)
    labels = [c.label() for c in codecs]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ValueError(f"codec listed twice: {', '.join(sorted(dup))}")
    return codecs


def plan_jobs(codecs: Sequence[tuple[str, Codec]], dataset: Dataset, options: RunOptions) -> list[Job]:
    jobs = []
    for spec, codec in codecs:
        version = codec.version()
        if options.target_bpp:
            for target in options.target_bpp:
                for image in dataset.images:
                    jobs.append(Job(spec, codec.label(), version, "target_bpp", float(target), image,
                                    job_key(codec.label(), version, target, image, "target_bpp"), float(target)))
            continue
        grid = options.codec_rates.get(spec) or options.codec_rates.get(codec.name) or options.rates or codec.default_rates
        for quality in grid:
            for image in dataset.images:
                jobs.append(Job(spec, codec.label(), version, codec.rate_param, float(quality), image,
                                job_key(codec.label(), version, quality, image, codec.rate_param)))
    return jobs


# ---------------------------------------------------------------- worker side
_codec_cache: dict[tuple[str, str], Codec] = {}
_image_cache: "OrderedDict[str, tuple[SourceImage | None, Reference | None, str | None]]" = OrderedDict()
_IMAGE_CACHE_SIZE = 3


def _worker_setup() -> None:
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the workers; avoid oversubscription
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _get_codec(spec: str, device: str) -> Codec:
    codec = _codec_cache.get((spec, device))
    if codec is None:
        codec = _codec_cache[(spec, device)] = create_codec(spec, device=device)
    return codec


def _get_image(ref: ImageRef) -> tuple[SourceImage | None, Reference | None, str | None]:
    """Source pixels and their metric statistics, cached for the next tasks of this worker."""
    try:
        key = f"{ref.path}|{_file_identity(ref.path)}"  # a rewritten file is a new image
    except OSError:
        key = str(ref.path)
    hit = _image_cache.get(key)
    if hit is not None:
        _image_cache.move_to_end(key)
        return hit
    try:
        src = load_image(ref.path)
        if ref.pixels_sha256 and pixel_hash(src.pixels) != ref.pixels_sha256:
            raise ImageReadError(f"image {ref.path}: pixels do not match the dataset manifest's checksum")
        entry = (src, Reference.of(src.pixels), None)
    except ImageReadError as exc:
        entry = (None, None, str(exc))
    except Exception as exc:  # pragma: no cover - anything else reading the file is still per-image
        entry = (None, None, f"cannot read image {ref.path}: {type(exc).__name__}: {exc}")
    _image_cache[key] = entry
    while len(_image_cache) > _IMAGE_CACHE_SIZE:
        _image_cache.popitem(last=False)
    return entry


def _base_record(job: Job, dataset: str) -> dict[str, Any]:
    return {"codec": job.label, "codec_version": job.version, "rate_param": job.rate_param, "quality": job.quality,
            "image": job.image.id, "width": None, "height": None, "bytes": None, "bpp": math.nan,
            **{m: math.nan for m in METRIC_NAMES}, "enc_time_s": math.nan, "dec_time_s": math.nan,
            "error": "", "notes": "", "dataset": dataset, "key": job.key}


def _finish_record(rec: dict[str, Any], src: SourceImage, ref: Reference, bitstream: bytes, decoded: np.ndarray,
                   enc_s: float, dec_s: float, notes: list[str], codec: Codec | None = None) -> None:
    h, w = src.height, src.width
    rec.update(width=w, height=h, bytes=len(bitstream), bpp=8.0 * len(bitstream) / (h * w),
               enc_time_s=enc_s, dec_time_s=dec_s)
    if not isinstance(decoded, np.ndarray) or decoded.shape != src.pixels.shape or decoded.dtype != np.uint8:
        got = f"{getattr(decoded, 'dtype', type(decoded))} {getattr(decoded, 'shape', '')}"
        raise ValueError(f"decoder returned {got}, expected uint8 {src.pixels.shape}")
    values, metric_notes = compute_metrics(ref, decoded)
    rec.update(values)
    if codec is not None:
        rec.update(codec.extra_metrics(src.pixels, decoded))
    rec["notes"] = "; ".join(dict.fromkeys(src.notes + notes + metric_notes))


def _save_outputs(run_dir: Path, job: Job, bitstream: bytes, decoded: np.ndarray | None,
                  save_bitstreams: bool, save_decoded: bool) -> None:
    stem = f"{job.image.id.replace('/', '__')}@{job.quality:g}"
    folder_name = job.label.replace("/", "_").replace(":", "_")
    if save_bitstreams:
        d = run_dir / "bitstreams" / folder_name
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{stem}.bin").write_bytes(bitstream)
    if save_decoded and decoded is not None:
        from PIL import Image

        d = run_dir / "decoded" / folder_name
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(decoded).save(d / f"{stem}.png")


def run_cpu_task(run_dir: str, dataset: str, device: str, jobs: list[Job], save_bitstreams: bool = False,
                 save_decoded: bool = False, write_records: bool = True) -> list[dict[str, Any]]:
    """All rate points of one codec on one image; each finished job is stored at once.

    With ``write_records=False`` (remote workers without the run directory) the caller stores them.
    """
    _worker_setup()
    writer = store.writer_for(Path(run_dir)) if write_records else None
    src, ref, read_error = _get_image(jobs[0].image)
    records = []
    for job in jobs:
        rec = _base_record(job, dataset)
        try:
            if read_error:
                raise ImageReadError(read_error)
            assert src is not None and ref is not None
            codec = _get_codec(job.spec, device)
            bitstream, enc_s, extra = encode_job(codec, src.pixels, job)
            t1 = time.perf_counter()
            decoded = codec.decode(bitstream)
            t2 = time.perf_counter()
            rec.update(extra)
            _finish_record(rec, src, ref, bitstream, decoded, enc_s, t2 - t1, [], codec)
            if save_bitstreams or save_decoded:
                _save_outputs(Path(run_dir), job, bitstream, decoded, save_bitstreams, save_decoded)
        except Exception as exc:
            rec["error"] = _error_text(job, exc)
        if writer is not None:
            writer.append(rec)
        records.append(rec)
    return records


def encode_job(codec: Codec, pixels: np.ndarray, job: Job) -> tuple[bytes, float, dict[str, Any]]:
    """Encode for one job -> (bitstream, encode seconds, extra columns).

    A rate-matched job first searches the rate parameter whose real bitstream is closest to
    the target (lcbench.rate_match), then times one plain encode at that rate, so the
    reported encode time is the codec's, not the search's.
    """
    extra: dict[str, Any] = {}
    rate = job.quality
    if job.target_bpp is not None:
        from .rate_match import match_nearest_rate, match_rate_detailed

        if codec.rate_range is None:  # a finite set of operating points (learned models): nearest one
            rate, _ = match_nearest_rate(codec, pixels, job.target_bpp)
        else:
            rate = match_rate_detailed(codec, pixels, job.target_bpp).rate
        extra = {"matched_rate_param": codec.rate_param, "matched_rate": rate}
    t0 = time.perf_counter()
    bitstream = codec.encode(pixels, rate)
    enc_s = time.perf_counter() - t0
    return bitstream, enc_s, {**codec.extra_columns(), **extra}


def _error_text(job: Job, exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, ImageReadError):
        return msg
    return f"{job.label} at {job.rate_param}={job.quality:g} on {job.image.path}: {type(exc).__name__}: {msg}"


def run_device_jobs(run_dir: Path, dataset: str, device: str, jobs: list[Job], save_bitstreams: bool,
                    save_decoded: bool, batch_size: int = 4) -> Iterator[list[dict[str, Any]]]:
    """Learned-codec jobs in this process: one model load, batches of equal-size images."""
    writer = store.writer_for(run_dir)
    by_group: dict[tuple[str, float], list[Job]] = {}
    for job in jobs:
        by_group.setdefault((job.spec, job.quality), []).append(job)
    for (spec, quality), group in by_group.items():
        codec = _get_codec(spec, device)
        if group[0].target_bpp is not None:  # rate matching: per image, not batched
            for job in group:
                yield [_run_single(codec, job, dataset, writer, run_dir, save_bitstreams, save_decoded)]
            continue
        pending = []
        for job in group:
            src, ref, err = _get_image(job.image)
            if err:
                rec = _base_record(job, dataset)
                rec["error"] = err
                writer.append(rec)
                yield [rec]
                continue
            pending.append((job, src, ref))
        # group equal sizes so the codec can stack them into one tensor
        pending.sort(key=lambda t: t[1].pixels.shape)
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            sizes = {c[1].pixels.shape for c in chunk}
            batches = [chunk] if len(sizes) == 1 else [[c] for c in chunk]
            for batch in batches:
                yield _run_device_batch(codec, batch, quality, dataset, writer, run_dir, save_bitstreams, save_decoded)


def _run_single(codec, job, dataset, writer, run_dir, save_bitstreams, save_decoded):
    rec = _base_record(job, dataset)
    src, ref, err = _get_image(job.image)
    try:
        if err:
            raise ImageReadError(err)
        bitstream, enc_s, extra = encode_job(codec, src.pixels, job)
        t1 = time.perf_counter()
        decoded = codec.decode(bitstream)
        dec_s = time.perf_counter() - t1
        rec.update(extra)
        _finish_record(rec, src, ref, bitstream, decoded, enc_s, dec_s, [], codec)
        if save_bitstreams or save_decoded:
            _save_outputs(run_dir, job, bitstream, decoded, save_bitstreams, save_decoded)
    except Exception as exc:
        rec["error"] = _error_text(job, exc)
    writer.append(rec)
    return rec


def _run_device_batch(codec, batch, quality, dataset, writer, run_dir, save_bitstreams, save_decoded):
    records = []
    try:
        t0 = time.perf_counter()
        bitstreams = codec.encode_batch([src.pixels for _, src, _ in batch], quality)
        t1 = time.perf_counter()
        extras = getattr(codec, "last_batch_extras", None) or [codec.extra_columns()] * len(batch)
        decoded = codec.decode_batch(bitstreams)
        t2 = time.perf_counter()
        n = len(batch)
        for (job, src, ref), bits, dec, extra in zip(batch, bitstreams, decoded, extras):
            rec = _base_record(job, dataset)
            try:
                rec.update(extra)
                # per-image time: the batch's time shared equally (noted when batched)
                note = [f"time is the mean over a batch of {n}"] if n > 1 else []
                _finish_record(rec, src, ref, bits, dec, (t1 - t0) / n, (t2 - t1) / n, note, codec)
                if save_bitstreams or save_decoded:
                    _save_outputs(run_dir, job, bits, dec, save_bitstreams, save_decoded)
            except Exception as exc:
                rec["error"] = _error_text(job, exc)
            records.append(rec)
    except Exception as exc:
        for job, _, _ in batch:
            rec = _base_record(job, dataset)
            rec["error"] = _error_text(job, exc)
            records.append(rec)
    for rec in records:
        writer.append(rec)
    return records


# ---------------------------------------------------------------- orchestration
def _n_workers(jobs: int | None) -> int:
    n = os.cpu_count() or 1
    if jobs is None or jobs == 0:
        return n
    return max(1, n + 1 + jobs) if jobs < 0 else jobs


def _metadata(options: RunOptions, dataset: Dataset, codecs: Sequence[tuple[str, Codec]], device: str,
              previous: dict[str, Any] | None) -> dict[str, Any]:
    from .environment import library_versions, machine

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = {
        "format_version": store.FORMAT_VERSION,
        "lcbench_version": __version__,
        "created": (previous or {}).get("created", now),
        "updated": now,
        "command_line": options.command_line or " ".join(shlex.quote(a) for a in sys.argv),
        "dataset": {"name": dataset.name, "root": str(dataset.root), "images": len(dataset.images)},
        "device": device,
        "metrics": {"names": list(METRIC_NAMES), "version": METRICS_VERSION,
                    "definitions": "see lcbench.metrics: psnr over RGB jointly; psnr_y BT.601 studio-range; "
                                   "ssim Gaussian 11/1.5 valid; ms_ssim as pytorch-msssim 1.0"},
        "codecs": dict((previous or {}).get("codecs", {})),
        "libraries": library_versions(),
        "machine": machine(),
        "invocations": list((previous or {}).get("invocations", [])),
    }
    for spec, codec in codecs:
        meta["codecs"][codec.label()] = {"spec": spec, "name": codec.name, "version": codec.version(),
                                         "rate_param": codec.rate_param, "options": codec.options,
                                         "description": getattr(codec, "description", "")}
    meta["invocations"].append({"at": now, "command_line": meta["command_line"]})
    return meta


def execute(options: RunOptions) -> RunOutcome:
    """Resolve, plan, run what is not done yet, and write results.csv and run.json."""
    dataset = options.dataset if isinstance(options.dataset, Dataset) else resolve_dataset(options.dataset)
    dataset = select_images(dataset, max_images=options.max_images, pattern=options.image_glob)
    needs_device = any(getattr(codecs_registry.get(parse_codec_spec(s)[0]), "uses_device", False)
                       for s in options.codecs)
    device = options.device or (default_device() if needs_device else "cpu")
    codec_objs = build_codecs(options.codecs, device)
    codecs = list(zip(options.codecs, codec_objs))
    run_dir = Path(options.out) if options.out else default_out(dataset)
    run_dir.mkdir(parents=True, exist_ok=True)

    meta_path = run_dir / store.METADATA_JSON
    previous = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    write_json_atomic(meta_path, _metadata(options, dataset, codecs, device, previous))

    jobs = plan_jobs(codecs, dataset, options)
    existing = store.read_records(run_dir)
    done = {r["key"] for r in existing if not r.get("error") and r.get("key")}
    todo = [j for j in jobs if j.key not in done]
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

    bar = tqdm(total=len(todo), disable=not show, unit="job", desc="lcbench", dynamic_ncols=True)
    new_records: list[dict[str, Any]] = []
    try:
        for records in _run_cpu(run_dir, dataset.name, device, cpu_jobs, options):
            new_records.extend(records)
            bar.update(len(records))
        if dev_jobs:
            for records in run_device_jobs(run_dir, dataset.name, device, dev_jobs, options.save_bitstreams,
                                           options.save_decoded):
                new_records.extend(records)
                bar.update(len(records))
    finally:
        bar.close()
        store.close_writers()
        if cache is not None:
            cache.put_many((cache_keys[r["key"]], r) for r in new_records if not r.get("error") and r["key"] in cache_keys)
            cache.close()
        all_records = store.latest_by_job(store.read_records(run_dir)).values()
        store.write_results_csv(run_dir, list(all_records))

    planned_keys = {j.key for j in jobs}
    mine = [r for r in store.latest_by_job(store.read_records(run_dir)).values() if r.get("key") in planned_keys]
    frame = store.records_to_frame(mine)
    failures = [r for r in mine if r.get("error")]
    return RunOutcome(run_dir, frame, len(jobs), len(jobs) - len(todo) - reused, failures, reused)


def _open_cache(jobs: list[Job]):
    """The result cache and each job's content key (jobs whose image cannot be hashed get none)."""
    from .result_cache import ResultCache, content_key

    cache = ResultCache()
    keys: dict[str, str] = {}
    hashes: dict[Path, str | None] = {}
    for job in jobs:
        sha = job.image.pixels_sha256
        if sha is None:
            if job.image.path not in hashes:
                try:
                    hashes[job.image.path] = cache.pixel_hash(job.image.path)
                except Exception:  # unreadable: the job itself will report it
                    hashes[job.image.path] = None
            sha = hashes[job.image.path]
        if sha:
            keys[job.key] = content_key(job.label, job.version, job.rate_param, job.quality, sha, METRICS_VERSION)
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


def _run_cpu(run_dir: Path, dataset: str, device: str, jobs: list[Job], options: RunOptions
             ) -> Iterator[list[dict[str, Any]]]:
    """Yield each task's records as it finishes; tasks are (image, codec) groups, image-major."""
    tasks: dict[tuple[str, str], list[Job]] = {}
    for job in sorted(jobs, key=lambda j: j.image.id):  # stable: codec order kept within an image
        tasks.setdefault((job.image.id, job.spec), []).append(job)
    args = [(str(run_dir), dataset, device, group, options.save_bitstreams, options.save_decoded)
            for group in tasks.values()]
    n = min(_n_workers(options.jobs), max(1, len(args)))
    if options.backend == "dask":
        yield from _run_dask(run_dir, args, options.scheduler, n)
        return
    if options.backend != "loky":
        raise ValueError(f"unknown --backend {options.backend!r}: use loky or dask")
    if n == 1:
        for a in args:
            yield run_cpu_task(*a)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=n, return_as="generator_unordered", backend="loky", batch_size=1)
    yield from parallel(delayed(run_cpu_task)(*a) for a in args)


def _run_dask(run_dir: Path, args: list[tuple], scheduler: str | None, n_workers: int
              ) -> Iterator[list[dict[str, Any]]]:
    """The same tasks on a Dask cluster; this process stores each task's records as it arrives,
    so workers need the images (shared filesystem or mirrors) but not the run directory."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ImportError("--backend dask needs dask.distributed: pip install 'lcbench[dask]'") from exc
    cluster = None
    if scheduler:
        client = Client(scheduler, timeout="30s")
    else:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        client = Client(cluster)
    writer = store.writer_for(run_dir)
    try:
        futures = {client.submit(run_cpu_task, *a[:6], write_records=False, pure=False): a for a in args}
        for fut in as_completed(futures):
            try:
                records = fut.result()
            except Exception as exc:  # the task itself died (worker lost, ...): its jobs fail, others go on
                a = futures[fut]
                records = []
                for job in a[3]:
                    rec = _base_record(job, a[1])
                    rec["error"] = _error_text(job, exc)
                    records.append(rec)
            for rec in records:
                writer.append(rec)
            yield records
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
