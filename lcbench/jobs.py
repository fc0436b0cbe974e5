"""Jobs: one codec x rate point x image, and the key that identifies its result."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .codec import MATCHED_RATE_PARAM, Codec, result_version
from .dataset import Dataset, ImageRef
from .images import READER_REVISION

METRICS_VERSION = 5  # bump when a metric's values change: cached results become stale
# 2: SSIM/MS-SSIM filtered from the difference image (float32 lost up to 4e-5 on flat areas)
# 3: streaming kernel (different float32 summation order: values move by ~1e-9)
# 4: SSIM = MS-SSIM = 1 exact for identical images (no fastmath reciprocal)
# 5: near-lossless images (1 - SSIM or 1 - MS-SSIM < 1e-5) measured again in float64: ms_ssim_db
#    was inf for images that differ, and ~0.1 dB off above 50 dB


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


def file_identity(path: Path) -> str:
    """Size, mtime and ctime: a file rewritten in place with its old size and mtime restored
    (`cp -p`, `rsync -t`, coarse timestamps) still gets a new ctime, so it is a new image."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def job_key(label: str, version: str, quality: float, image: ImageRef, rate_param: str = "") -> str:
    """Identity of a job's result: codec + version + rate + image file + metric definitions."""
    try:
        # a file known only by its stat is known as the current image reader reads it: a reader fix
        # (lcbench.images.READER_REVISION) gives its jobs new keys. Named sets' recorded pixel
        # hashes say what the pixels are, whoever reads them.
        ident = image.pixels_sha256 or f"reader-r{READER_REVISION}:{file_identity(image.path)}"
    except OSError:
        ident = "missing"
    payload = json.dumps([label, version, rate_param, float(quality), image.id, ident, METRICS_VERSION])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


# A rate-matched job further than this from its target (relative) missed it: its notes say so,
# and summary tables leave it out of the best-at-this-rate comparison.
OFF_TARGET = 0.10

# Bump when rate matching picks other rates for the same codec and image (2: JPEG 2000's search
# stops relative to the target; 3: steps inside the range's ends are tried, JPEG 2000 is searched
# up to 24 bpp), so results matched the old way are not reused.
RATE_MATCH_REVISION = 3


def key_tag(rate_param: str) -> str:
    """The rate part of a job key (run directory and result cache): rate-matched jobs get their
    own tag, so a result cached before the tag existed, a grid result with the same number, or
    one matched by an older search is never taken for one."""
    if rate_param == MATCHED_RATE_PARAM:
        return f"match-r{RATE_MATCH_REVISION}:{MATCHED_RATE_PARAM}"
    return rate_param


def plan_jobs(codecs: Sequence[tuple[str, Codec]], dataset: Dataset, *, rates: Sequence[float] | None = None,
              codec_rates: Mapping[str, Sequence[float]] | None = None,
              target_bpp: Sequence[float] | None = None) -> list[Job]:
    """Every job of a run: each codec's grid (per-codec override, then one for all, then the
    codec's default), or the rate-matching targets, over every image. A rate point or target
    given twice (``quality=[10, 10]``, ``default_rates = (10, 10)``) is one job, as with ``-q 10,10``
    (it ran twice and counted twice: "2/2 jobs ok" for one row of results.csv)."""
    codec_rates = codec_rates or {}
    known = {spec for spec, _ in codecs} | {codec.name for _, codec in codecs} | {codec.label() for _, codec in codecs}
    unknown = [k for k in codec_rates if k not in known]
    if unknown:  # a typo (-q jpg=50) would otherwise run the default grid without a word
        raise ValueError(f"rate grid for {', '.join(map(repr, unknown))}: no such codec in this run "
                         f"(codecs: {', '.join(spec for spec, _ in codecs)})")
    jobs = []
    for spec, codec in codecs:
        version = result_version(codec)
        if target_bpp:
            target_bpp = _distinct(target_bpp)
            for target in target_bpp:
                if not (math.isfinite(target) and target > 0):
                    raise ValueError(f"--target-bpp {target:g}: a target rate must be a positive number of bits per pixel")
            for target in target_bpp:
                for image in dataset.images:
                    jobs.append(Job(spec, codec.label(), version, MATCHED_RATE_PARAM, float(target), image,
                                    job_key(codec.label(), version, target, image, key_tag(MATCHED_RATE_PARAM)),
                                    float(target)))
            continue
        grid = codec_rates.get(spec) or codec_rates.get(codec.name) or rates or codec.default_rates
        if not grid:
            raise ValueError(f"codec {codec.label()!r} has no default rate grid: give one with -q/--quality "
                             "(quality= in lcbench.run)")
        grid = _distinct(grid)
        for quality in grid:
            codec.check_rate(float(quality))
        for quality in grid:
            for image in dataset.images:
                jobs.append(Job(spec, codec.label(), version, codec.rate_param, float(quality), image,
                                job_key(codec.label(), version, quality, image, key_tag(codec.rate_param))))
    return jobs


def _distinct(values: Sequence[float]) -> tuple[float, ...]:
    """The values as floats, in order, each once (10 and 10.0 are one rate point)."""
    return tuple(dict.fromkeys(float(v) for v in values))
