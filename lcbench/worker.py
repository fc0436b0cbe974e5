"""What runs a job: encode -> bitstream -> decode -> metrics -> one record.

Each process keeps its codec objects (one model load per worker) and its last few source
images with their metric statistics, so an image is decoded and analysed once for all
rate points and codecs that the process runs on it.
"""
from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import store
from .codec import Codec, CodecError, result_version
from .dataset import ImageRef
from .images import ImageReadError, SourceImage, load_image, pixel_hash
from .jobs import OFF_TARGET, Job, file_identity
from .metrics import METRIC_NAMES, Reference, compute_metrics
from .registry import create_codec, ensure_plugins

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


_decoder_cache: dict[tuple[str, str], Codec] = {}


def get_decoder(spec: str, device: str) -> Codec:
    """A second instance of the codec that only ever decodes: what a decoder needs must come from
    the bitstream, not from attributes its encoder set (the image size kept on ``self`` by
    encode, say), or the bytes counted are not all the decoder used."""
    decoder = _decoder_cache.get((spec, device))
    if decoder is None:
        decoder = _decoder_cache[(spec, device)] = create_codec(spec, device=device)
        try:  # its version's weights hashes, against which the weights it loads are checked
            decoder.version()
        except Exception:  # noqa: BLE001 - the encoding instance's version check reports it
            pass
    return decoder


_version_cache: dict[tuple[str, str], str] = {}


def _version_here(spec: str, device: str, codec: Codec, planned: str) -> str:
    """The codec's version in this process: asked once while it matches the plan (a tool's
    version is a subprocess), asked again when it does not (the process outlived a change)."""
    key = (spec, device)
    if _version_cache.get(key) != planned:
        try:
            _version_cache[key] = result_version(codec)
        except Exception as exc:  # noqa: BLE001 - reported as the job's error by the mismatch
            _version_cache[key] = f"unknown ({type(exc).__name__}: {exc})"
    return _version_cache[key]


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


def output_stem(image_id: str, quality: float, rate_param: str = "") -> str:
    """File stem of a job's saved outputs: ``<image id, / as __>@<rate>`` (``@bpp<target>`` for
    rate-matched jobs, so they never overwrite a grid job's files with the same number)."""
    at = "bpp" if rate_param == "target_bpp" else ""
    return f"{image_id.replace('/', '__')}@{at}{rate_text(quality)}"


def rate_text(quality: float) -> str:
    """A rate as short as ``:g`` writes it, but never one that reads back as another number
    (``:g`` wrote 0.3000001 and 0.3000004 as 0.3, so their saved files overwrote each other)."""
    short = f"{quality:g}"
    return short if float(short) == float(quality) else repr(float(quality))


def _save_outputs(run_dir: Path, job: Job, bitstream: bytes, decoded: np.ndarray, save_bitstreams: bool,
                  save_decoded: bool) -> None:
    if save_bitstreams:
        d = run_dir / "bitstreams" / output_folder(job.label)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{output_stem(job.image.id, job.quality, job.rate_param)}.bin").write_bytes(bitstream)
    if save_decoded:
        from PIL import Image

        d = run_dir / "decoded" / output_folder(job.label)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(decoded).save(d / f"{output_stem(job.image.id, job.quality, job.rate_param)}.png")


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
                  decoded: np.ndarray, enc_s: float, dec_s: float, notes: Sequence[str] = (),
                  measured: tuple[dict[str, float], list[str]] | None = None) -> None:
    """Rate from the real bitstream, metrics against the original pixels, the codec's extra metrics.

    ``measured``: metrics already computed elsewhere (the device path's torch backend) for these pixels.
    """
    h, w = src.height, src.width
    rec.update(width=w, height=h, bytes=len(bitstream), bpp=8.0 * len(bitstream) / (h * w),
               enc_time_s=enc_s, dec_time_s=dec_s)
    if not isinstance(decoded, np.ndarray) or decoded.shape != src.pixels.shape or decoded.dtype != np.uint8:
        got = f"{getattr(decoded, 'dtype', type(decoded))} {getattr(decoded, 'shape', '')}"
        raise ValueError(f"decoder returned {got}, expected uint8 {src.pixels.shape}")
    values, metric_notes = measured if measured is not None else compute_metrics(ref, decoded)
    rec.update(values)
    extra = dict(codec.extra_metrics(src.pixels, decoded))
    extra_notes = extra.pop("notes", None) or []  # why an extra metric is NaN, say
    rec.update(extra)
    off_target = [extra_notes] if isinstance(extra_notes, str) else list(extra_notes)
    if rec.get("rate_param") == "target_bpp" and rec["bpp"] > 0:
        target = float(rec["quality"])
        if abs(rec["bpp"] - target) > OFF_TARGET * target:  # e.g. png at 0.5 bpp, jpeg at 100 bpp
            off_target.append(f"target {target:g} bpp not reached: {rec['bpp']:.4g} bpp is the closest "
                              f"({100 * (rec['bpp'] / target - 1):+.1f}%)")  # .0f showed a 10.4% miss as "+10%"
    rec["notes"] = "; ".join(dict.fromkeys([*src.notes, *notes, *metric_notes, *off_target]))


def run_job(codec: Codec, job: Job, dataset: str, run_dir: Path, save_bitstreams: bool = False,
            save_decoded: bool = False, decoder: Codec | None = None) -> dict[str, Any]:
    """One job, start to end; any failure becomes the record's error. ``decoder``: the instance
    that decodes (``get_decoder``; default ``codec`` itself)."""
    rec = base_record(job, dataset)
    try:
        src, ref, read_error = get_image(job.image)
        if read_error:
            raise ImageReadError(read_error)
        assert src is not None and ref is not None
        bitstream, enc_s, extra = encode_job(codec, src.pixels, job)
        t1 = time.perf_counter()
        decoded = (decoder or codec).decode(bitstream)
        dec_s = time.perf_counter() - t1
        rec.update(extra)
        finish_record(rec, codec, src, ref, bitstream, decoded, enc_s, dec_s)
        if save_bitstreams or save_decoded:
            _save_outputs(run_dir, job, bitstream, decoded, save_bitstreams, save_decoded)
    except (Exception, SystemExit) as exc:  # a codec calling sys.exit() fails its job, not the run
        _reraise_interrupt(exc)
        rec["error"] = error_text(job, exc)
    return rec


def _reraise_interrupt(exc: BaseException) -> None:
    """Ctrl-C inside compiled code (numba, a C extension) surfaces as SystemError "returned a
    result with an exception set" chained to the KeyboardInterrupt: that is the user stopping
    the run, not the job failing, so it must not be recorded as the job's error."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, KeyboardInterrupt):  # the instance itself: SIGTERM's subclass says "terminated"
            raise exc.with_traceback(None) from None
        exc = exc.__cause__ or exc.__context__
        seen += 1


def run_cpu_task(run_dir: str, dataset: str, device: str, jobs: list[Job], save_bitstreams: bool = False,
                 save_decoded: bool = False, write_records: bool = True,
                 plugins: tuple[tuple[str, str], ...] = ()) -> list[dict[str, Any]]:
    """All rate points of one codec on one image; each finished job is stored at once.

    With ``write_records=False`` (remote workers without the run directory) the caller stores them.
    ``plugins``: the main process's plugin files (``registry.loaded_plugins``), loaded here first.
    """
    _worker_setup()
    ensure_plugins(plugins)
    writer = store.writer_for(Path(run_dir)) if write_records else None
    records = []
    for job in jobs:
        codec = get_codec(job.spec, device)
        here = _version_here(job.spec, device, codec, job.version)
        if here != job.version:
            # a Dask worker with another library or tool build would be recorded under the
            # client's version (and cached under it): the job fails, saying both
            rec = {**base_record(job, dataset), "error": error_text(job, CodecError(
                f"this worker ({socket.gethostname()}) has {job.label} version {here!r}, the run planned "
                f"{job.version!r}: install the same version on every worker"))}
        else:
            rec = run_job(codec, job, dataset, Path(run_dir), save_bitstreams, save_decoded,
                          decoder=get_decoder(job.spec, device))
        if writer is not None:
            writer.append(rec)
        records.append(rec)
    return records


METRICS_BACKEND_ENV = "LCBENCH_METRICS_BACKEND"


def metrics_backend_for(device: str, requested: str | None = None) -> str:
    """Where the device path computes metrics: "torch" (lcbench.torch_metrics on the codec's
    device) or "cpu" (lcbench.metrics). Default: torch on CUDA devices, cpu otherwise;
    ``requested`` or the environment variable LCBENCH_METRICS_BACKEND=torch|cpu forces one
    (tests force the torch path on a CPU-only machine)."""
    choice = requested or os.environ.get(METRICS_BACKEND_ENV) or ""
    if not choice or choice == "auto":
        return "torch" if str(device).startswith("cuda") else "cpu"
    if choice not in ("torch", "cpu"):
        raise ValueError(f"metrics backend {choice!r} (--metrics-backend or {METRICS_BACKEND_ENV}): "
                         "use torch, cpu or auto")
    return choice


def _staged(codec: Codec) -> bool:
    """Codecs that split their work into device stages and host (range coding) stages, e.g. importance_map."""
    stages = ("encode_device", "encode_host", "decode_host", "decode_device")
    return all(callable(getattr(codec, m, None)) for m in stages)


def run_device_jobs(run_dir: Path, dataset: str, device: str, jobs: list[Job], save_bitstreams: bool,
                    save_decoded: bool, batch_size: int = 4, metrics_backend: str | None = None,
                    overlap: bool = False) -> Iterator[list[dict[str, Any]]]:
    """Learned-codec jobs in this process: one model load, batches of equal-size images.

    Images are taken a batch at a time and every (codec, rate point) runs on that batch
    before the next one is read, so each source image is loaded and its metric statistics
    computed once per run (on the device with the torch metrics backend), not once per rate
    point. With ``overlap`` and a staged codec, a batch's range coding runs in a background
    thread while the device analyses the next batch and synthesises the previous one; the
    bitstreams are the same either way, but not the times: each stage's clock then also runs
    while the other stage competes for the cores and the GIL, so recorded encode/decode times
    came out 12-31 % higher than measured one stage at a time (on the CPU; the whole run was
    17 % faster). Runs therefore do not overlap (the default); benchmarks may, for throughput.
    """
    writer = store.writer_for(run_dir)
    backend = metrics_backend_for(device, metrics_backend)
    # rate matching goes one by one (it searches per image)
    for job in jobs:
        if job.target_bpp is not None:
            rec = run_job(get_codec(job.spec, device), job, dataset, run_dir, save_bitstreams, save_decoded,
                          decoder=get_decoder(job.spec, device))
            writer.append(rec)
            yield [rec]
    by_image: dict[ImageRef, list[Job]] = {}
    for job in jobs:
        if job.target_bpp is None:
            by_image.setdefault(job.image, []).append(job)
    pipeline = _DevicePipeline(dataset, run_dir, device, backend, save_bitstreams, save_decoded, overlap)

    def run_chunk(chunk: list[tuple[ImageRef, tuple]]) -> Iterator[list[dict[str, Any]]]:
        batches: dict[tuple[str, float], list] = {}
        for image, source in chunk:
            for job in by_image[image]:
                batches.setdefault((job.spec, job.quality), []).append((job, *source))
        for (spec, quality), batch in batches.items():
            yield from pipeline.submit(get_codec(spec, device), batch, quality, get_decoder(spec, device))

    def stream() -> Iterator[list[dict[str, Any]]]:
        # Open batches per image size; a full one runs at once. Few images are held at a time
        # (a dataset of all-different sizes does not pile up its references).
        open_chunks: dict[tuple[int, ...], list[tuple[ImageRef, tuple]]] = {}
        for image, image_jobs in by_image.items():
            src, ref, err = get_image(image)
            if err:  # each job records the read error
                yield [run_job(get_codec(j.spec, device), j, dataset, run_dir) for j in image_jobs]
                continue
            assert src is not None and ref is not None
            chunk = open_chunks.setdefault(src.pixels.shape, [])
            chunk.append((image, _device_source(src, ref, device, backend)))
            if len(chunk) == batch_size:
                yield from run_chunk(open_chunks.pop(src.pixels.shape))
            elif sum(map(len, open_chunks.values())) > 2 * batch_size:
                yield from run_chunk(open_chunks.pop(next(iter(open_chunks))))  # the oldest
        for chunk in open_chunks.values():
            yield from run_chunk(chunk)
        yield from pipeline.drain()

    try:
        for records in stream():
            for rec in records:
                writer.append(rec)
            yield records
    finally:
        pipeline.close()


def _device_source(src: SourceImage, ref: Reference, device: str, backend: str) -> tuple[SourceImage, Reference, Any]:
    """(source, CPU metric reference, torch reference on the device with the torch backend, else None)."""
    if backend != "torch":
        return src, ref, None
    from .torch_metrics import TorchReference

    return src, ref, TorchReference.of(src.pixels, device)


class _DevicePipeline:
    """Runs batches through a codec; for staged codecs the range coding of batch k overlaps the
    device work of batches k+1 (analysis) and k-1 (synthesis, metrics).

    All torch calls stay in the calling thread (thread settings and CUDA streams are per
    process); the background thread runs only the codec's host stages (numpy, range coder).
    """

    def __init__(self, dataset: str, run_dir: Path, device: str, backend: str, save_bitstreams: bool,
                 save_decoded: bool, overlap: bool) -> None:
        self.dataset, self.run_dir, self.device, self.backend = dataset, run_dir, device, backend
        self.save = (save_bitstreams, save_decoded)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lcbench-range-coding") if overlap else None
        self.pending: tuple | None = None

    def submit(self, codec: Codec, batch: list, quality: float,
               decoder: Codec | None = None) -> Iterator[list[dict[str, Any]]]:
        """Start a batch; yields the records of the batch before it when they are done.
        ``decoder``: the instance that decodes (``get_decoder``; default ``codec``)."""
        decoder = decoder or codec
        if not _staged(codec):
            yield from self.drain()
            yield self._run_plain(codec, decoder, batch, quality)
            return
        started = self._start(codec, decoder, batch, quality)
        yield from self.drain()  # the previous batch finishes while this one's coding runs
        self.pending = started
        if self.pool is None:
            yield from self.drain()

    def drain(self) -> Iterator[list[dict[str, Any]]]:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            yield self._finish(*pending)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def _start(self, codec: Any, decoder: Any, batch: list, quality: float) -> tuple:
        try:
            _preload(codec, decoder, quality)
        except (Exception, SystemExit) as exc:
            _reraise_interrupt(exc)
            return codec, decoder, batch, exc, 0.0
        t0 = time.perf_counter()
        try:
            analysed = codec.encode_device([src.pixels for _, src, _, _ in batch], quality)
        except (Exception, SystemExit) as exc:
            _reraise_interrupt(exc)
            return codec, decoder, batch, exc, 0.0
        enc_device_s = time.perf_counter() - t0
        host = (self.pool.submit(_host_stages, codec, decoder, analysed) if self.pool
                else _host_stages(codec, decoder, analysed))
        return codec, decoder, batch, host, enc_device_s

    def _finish(self, codec: Any, decoder: Any, batch: list, host: Any, enc_device_s: float) -> list[dict[str, Any]]:
        try:
            if isinstance(host, BaseException):
                raise host
            if isinstance(host, Future):
                host = host.result()
            bitstreams, extras, parsed, enc_host_s, dec_host_s = host
            t0 = time.perf_counter()
            decoded, on_device = decoder.decode_device(parsed, keep_on_device=self.backend == "torch")
            dec_device_s = time.perf_counter() - t0
        except (Exception, SystemExit) as exc:  # the whole batch failed: each job says why
            _reraise_interrupt(exc)
            return self._failed(batch, exc, codec, decoder)
        return self._records(codec, decoder, batch, bitstreams, decoded, on_device, extras,
                             enc_device_s + enc_host_s, dec_host_s + dec_device_s)

    def _run_plain(self, codec: Codec, decoder: Codec, batch: list, quality: float) -> list[dict[str, Any]]:
        n = len(batch)
        try:
            _preload(codec, decoder, quality)
            t0 = time.perf_counter()
            if hasattr(codec, "last_batch_extras"):
                codec.last_batch_extras = None  # never a previous batch's values
            bitstreams = codec.encode_batch([src.pixels for _, src, _, _ in batch], quality)
            t1 = time.perf_counter()
            decoded = decoder.decode_batch(bitstreams)
            t2 = time.perf_counter()
            # after both clocks: a codec may compute its extras when they are read (autoencoder's est_bpp)
            extras = getattr(codec, "last_batch_extras", None)
            if extras is None or len(extras) != n:
                # extra_columns() describes the last image encoded: right for one image; for a
                # batch it would give every image the last one's values, so none are recorded
                extras = [codec.extra_columns()] if n == 1 else [{} for _ in batch]
        except (Exception, SystemExit) as exc:
            _reraise_interrupt(exc)
            return self._failed(batch, exc, codec, decoder)
        return self._records(codec, decoder, batch, bitstreams, decoded, None, extras, t1 - t0, t2 - t1)

    def _failed(self, batch: list, exc: BaseException, codec: Codec | None = None,
                decoder: Codec | None = None) -> list[dict[str, Any]]:
        """Records of a batch that failed. A batch of several images runs again one job at a
        time: one image (or a batch too big for the device's memory) failed every job of the
        batch, and each job's error named its own image. Jobs that then succeed say so."""
        if codec is not None and len(batch) > 1:
            why = f"{type(exc).__name__}: {exc}"
            why = why if len(why) <= 200 else why[:197] + "..."
            records = []
            for job, _, _, _ in batch:
                rec = run_job(codec, job, self.dataset, self.run_dir, *self.save, decoder=decoder)
                if not rec["error"]:
                    rec["notes"] = "; ".join(n for n in (f"its batch of {len(batch)} images failed ({why}); "
                                                         "measured alone", rec["notes"]) if n)
                records.append(rec)
            return records
        return [{**base_record(job, self.dataset), "error": error_text(job, exc)} for job, _, _, _ in batch]

    def _records(self, codec: Codec, decoder: Codec, batch: list, bitstreams: Sequence[bytes], decoded: Sequence[np.ndarray],
                 on_device: Sequence[Any] | None, extras: Sequence[dict[str, Any]], enc_s: float,
                 dec_s: float) -> list[dict[str, Any]]:
        n = len(batch)
        counts = {"bitstreams": len(bitstreams), "decoded images": len(decoded), "extras": len(extras)}
        wrong = {k: v for k, v in counts.items() if v != n}
        if wrong:  # zip() would drop the jobs without outputs, and the run would say "all ok"
            what = ", ".join(f"{v} {k}" for k, v in wrong.items())
            return self._failed(batch, CodecError(f"{codec.label()} returned {what} for a batch of {n} images"),
                                codec, decoder)
        measured = _batch_metrics(batch, decoded, on_device) if self.backend == "torch" else {}
        records = []
        # per-image time: the batch's time shared equally (noted when batched)
        note = [f"time is the mean over a batch of {n}"] if n > 1 else []
        for k, ((job, src, ref, _), bits, dec, extra) in enumerate(zip(batch, bitstreams, decoded, extras)):
            rec = base_record(job, self.dataset)
            try:
                rec.update(extra)
                m = measured.get(k)
                if isinstance(m, Exception):
                    raise m
                finish_record(rec, codec, src, ref, bits, dec, enc_s / n, dec_s / n, note, measured=m)
                if any(self.save):
                    _save_outputs(self.run_dir, job, bits, dec, *self.save)
            except (Exception, SystemExit) as exc:
                _reraise_interrupt(exc)
                rec["error"] = error_text(job, exc)
            records.append(rec)
        return records


def _preload(codec: Any, decoder: Any, rate: float) -> None:
    """Load what a rate point needs (a model file, compiled kernels) before the clock starts: the
    first batch's encode time included loading the model (and compiling numba's kernels on a
    fresh cache, seconds), so one rate point looked many times slower than the others."""
    for c in (codec, decoder):
        preload = getattr(c, "preload", None)
        if callable(preload):
            preload(rate)


def _host_stages(codec: Any, decoder: Any, analysed: Any) -> tuple:
    """Range coding then decoding of one batch (no torch work): runs in the background thread."""
    t0 = time.perf_counter()
    bitstreams, extras = codec.encode_host(analysed)
    t1 = time.perf_counter()
    parsed = decoder.decode_host(bitstreams)
    return bitstreams, extras, parsed, t1 - t0, time.perf_counter() - t1


def _batch_metrics(batch: list, decoded: Sequence[Any], on_device: Sequence[Any] | None
                   ) -> dict[int, tuple[dict[str, float], list[str]] | Exception]:
    """Torch metrics of a batch's well-formed decoded images (index -> (values, notes) or the error);
    malformed ones are left to finish_record, which says what is wrong."""
    from .torch_metrics import compute_metrics_batch

    ok = [k for k, ((_, src, _, _), dec) in enumerate(zip(batch, decoded))
          if isinstance(dec, np.ndarray) and dec.dtype == np.uint8 and dec.shape == src.pixels.shape]
    if not ok:
        return {}
    images = [on_device[k] if on_device is not None and on_device[k] is not None else decoded[k] for k in ok]
    try:
        values = compute_metrics_batch([batch[k][3] for k in ok], images)
    except Exception as exc:
        _reraise_interrupt(exc)
        return {k: exc for k in ok}
    return dict(zip(ok, values))
