"""What runs a job: encode -> bitstream -> decode -> metrics -> one record.

Each process keeps its codec objects (one model load per worker) and its last few source
images with their metric statistics, so an image is decoded and analysed once for all
rate points and codecs that the process runs on it.
"""
from __future__ import annotations

import math
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import store
from .codec import Codec
from .dataset import ImageRef
from .images import ImageReadError, SourceImage, load_image, pixel_hash
from .jobs import Job, file_identity
from .metrics import METRIC_NAMES, Reference, compute_metrics
from .registry import create_codec

_codec_cache: dict[tuple[str, str], Codec] = {}
_image_cache: "OrderedDict[str, tuple[SourceImage | None, Reference | None, str | None]]" = OrderedDict()
_IMAGE_CACHE_SIZE = 3


def _worker_setup() -> None:
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the workers; avoid oversubscription
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def get_codec(spec: str, device: str) -> Codec:
    codec = _codec_cache.get((spec, device))
    if codec is None:
        codec = _codec_cache[(spec, device)] = create_codec(spec, device=device)
    return codec


def get_image(ref: ImageRef) -> tuple[SourceImage | None, Reference | None, str | None]:
    """Source pixels and their metric statistics (or the read error), cached for the next tasks."""
    try:
        key = f"{ref.path}|{file_identity(ref.path)}"  # a rewritten file is a new image
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
    except Exception as exc:  # anything else reading the file is still this image's error
        entry = (None, None, f"cannot read image {ref.path}: {type(exc).__name__}: {exc}")
    _image_cache[key] = entry
    while len(_image_cache) > _IMAGE_CACHE_SIZE:
        _image_cache.popitem(last=False)
    return entry


def base_record(job: Job, dataset: str) -> dict[str, Any]:
    return {"codec": job.label, "codec_version": job.version, "rate_param": job.rate_param, "quality": job.quality,
            "image": job.image.id, "width": None, "height": None, "bytes": None, "bpp": math.nan,
            **{m: math.nan for m in METRIC_NAMES}, "enc_time_s": math.nan, "dec_time_s": math.nan,
            "error": "", "notes": "", "dataset": dataset, "key": job.key}


def error_text(job: Job, exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, ImageReadError):
        return msg
    return f"{job.label} at {job.rate_param}={job.quality:g} on {job.image.path}: {type(exc).__name__}: {msg}"


def output_folder(label: str) -> str:
    """Folder name for a codec's saved bitstreams/decoded images (``--save-bitstreams``)."""
    return label.replace("/", "_").replace(":", "_")


def output_stem(image_id: str, quality: float) -> str:
    """File stem of a job's saved outputs: ``<image id, / as __>@<rate>``."""
    return f"{image_id.replace('/', '__')}@{quality:g}"


def _save_outputs(run_dir: Path, job: Job, bitstream: bytes, decoded: np.ndarray, save_bitstreams: bool,
                  save_decoded: bool) -> None:
    if save_bitstreams:
        d = run_dir / "bitstreams" / output_folder(job.label)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{output_stem(job.image.id, job.quality)}.bin").write_bytes(bitstream)
    if save_decoded:
        from PIL import Image

        d = run_dir / "decoded" / output_folder(job.label)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(decoded).save(d / f"{output_stem(job.image.id, job.quality)}.png")


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

        if codec.rate_range is None or codec.discrete_rates:  # a finite set of models: the nearest one
            rate, _ = match_nearest_rate(codec, pixels, job.target_bpp)
        else:
            rate = match_rate_detailed(codec, pixels, job.target_bpp).rate
        extra = {"matched_rate_param": codec.rate_param, "matched_rate": rate}
    t0 = time.perf_counter()
    bitstream = codec.encode(pixels, rate)
    enc_s = time.perf_counter() - t0
    return bitstream, enc_s, {**codec.extra_columns(), **extra}


def finish_record(rec: dict[str, Any], codec: Codec, src: SourceImage, ref: Reference, bitstream: bytes,
                  decoded: np.ndarray, enc_s: float, dec_s: float, notes: Sequence[str] = ()) -> None:
    """Rate from the real bitstream, metrics against the original pixels, the codec's extra metrics."""
    h, w = src.height, src.width
    rec.update(width=w, height=h, bytes=len(bitstream), bpp=8.0 * len(bitstream) / (h * w),
               enc_time_s=enc_s, dec_time_s=dec_s)
    if not isinstance(decoded, np.ndarray) or decoded.shape != src.pixels.shape or decoded.dtype != np.uint8:
        got = f"{getattr(decoded, 'dtype', type(decoded))} {getattr(decoded, 'shape', '')}"
        raise ValueError(f"decoder returned {got}, expected uint8 {src.pixels.shape}")
    values, metric_notes = compute_metrics(ref, decoded)
    rec.update(values)
    rec.update(codec.extra_metrics(src.pixels, decoded))
    rec["notes"] = "; ".join(dict.fromkeys([*src.notes, *notes, *metric_notes]))


def run_job(codec: Codec, job: Job, dataset: str, run_dir: Path, save_bitstreams: bool = False,
            save_decoded: bool = False) -> dict[str, Any]:
    """One job, start to end; any failure becomes the record's error."""
    rec = base_record(job, dataset)
    try:
        src, ref, read_error = get_image(job.image)
        if read_error:
            raise ImageReadError(read_error)
        assert src is not None and ref is not None
        bitstream, enc_s, extra = encode_job(codec, src.pixels, job)
        t1 = time.perf_counter()
        decoded = codec.decode(bitstream)
        dec_s = time.perf_counter() - t1
        rec.update(extra)
        finish_record(rec, codec, src, ref, bitstream, decoded, enc_s, dec_s)
        if save_bitstreams or save_decoded:
            _save_outputs(run_dir, job, bitstream, decoded, save_bitstreams, save_decoded)
    except Exception as exc:
        rec["error"] = error_text(job, exc)
    return rec


def run_cpu_task(run_dir: str, dataset: str, device: str, jobs: list[Job], save_bitstreams: bool = False,
                 save_decoded: bool = False, write_records: bool = True) -> list[dict[str, Any]]:
    """All rate points of one codec on one image; each finished job is stored at once.

    With ``write_records=False`` (remote workers without the run directory) the caller stores them.
    """
    _worker_setup()
    writer = store.writer_for(Path(run_dir)) if write_records else None
    records = []
    for job in jobs:
        rec = run_job(get_codec(job.spec, device), job, dataset, Path(run_dir), save_bitstreams, save_decoded)
        if writer is not None:
            writer.append(rec)
        records.append(rec)
    return records


def run_device_jobs(run_dir: Path, dataset: str, device: str, jobs: list[Job], save_bitstreams: bool,
                    save_decoded: bool, batch_size: int = 4) -> Iterator[list[dict[str, Any]]]:
    """Learned-codec jobs in this process: one model load, batches of equal-size images."""
    writer = store.writer_for(run_dir)
    groups: dict[tuple[str, float], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.spec, job.quality), []).append(job)
    for (spec, quality), group in groups.items():
        codec = get_codec(spec, device)
        singles, batchable = [], []
        for job in group:
            src, ref, err = get_image(job.image)
            # rate matching and unreadable images go one by one; the rest is batched
            (singles if err or job.target_bpp is not None else batchable).append((job, src, ref))
        for job, _, _ in singles:
            rec = run_job(codec, job, dataset, run_dir, save_bitstreams, save_decoded)
            writer.append(rec)
            yield [rec]
        batchable.sort(key=lambda t: t[1].pixels.shape)  # equal sizes stack into one tensor
        for start in range(0, len(batchable), batch_size):
            chunk = batchable[start:start + batch_size]
            batches = [chunk] if len({c[1].pixels.shape for c in chunk}) == 1 else [[c] for c in chunk]
            for batch in batches:
                records = _run_device_batch(codec, batch, quality, dataset, run_dir, save_bitstreams, save_decoded)
                for rec in records:
                    writer.append(rec)
                yield records


def _run_device_batch(codec, batch, quality, dataset, run_dir, save_bitstreams, save_decoded) -> list[dict]:
    n = len(batch)
    try:
        t0 = time.perf_counter()
        bitstreams = codec.encode_batch([src.pixels for _, src, _ in batch], quality)
        t1 = time.perf_counter()
        extras = getattr(codec, "last_batch_extras", None) or [codec.extra_columns()] * n
        decoded = codec.decode_batch(bitstreams)
        t2 = time.perf_counter()
    except Exception as exc:  # the whole batch failed: each job says why
        return [{**base_record(job, dataset), "error": error_text(job, exc)} for job, _, _ in batch]
    records = []
    # per-image time: the batch's time shared equally (noted when batched)
    note = [f"time is the mean over a batch of {n}"] if n > 1 else []
    for (job, src, ref), bits, dec, extra in zip(batch, bitstreams, decoded, extras):
        rec = base_record(job, dataset)
        try:
            rec.update(extra)
            finish_record(rec, codec, src, ref, bits, dec, (t1 - t0) / n, (t2 - t1) / n, note)
            if save_bitstreams or save_decoded:
                _save_outputs(run_dir, job, bits, dec, save_bitstreams, save_decoded)
        except Exception as exc:
            rec["error"] = error_text(job, exc)
        records.append(rec)
    return records
