"""Bitstream compatibility and determinism checks for a codec release.

Compatibility: the candidate decoder must decode the bitstreams a baseline run stored
(``lcbench run --save-bitstreams``: ``RUN_DIR/bitstreams/<codec>/<image>@<rate>.bin``) to the
same pixels the baseline decoder produced. The reference is, in order of preference:

- ``pixels``: the baseline's decoded images (``--save-decoded``: ``RUN_DIR/decoded/<codec>/<image>@<rate>.png``),
  compared pixel for pixel;
- ``metrics``: the baseline's recorded metrics of that job (``results.csv``), recomputed from the
  candidate's decode against the original image. ``mse_rgb``/``mse_y`` decide: each is an exact
  integer sum of squared errors divided by the pixel count, so it must match to the last digits
  (relative 1e-12, for the text round trip) and any pixel change shows unless changes cancel
  exactly; save decoded images for a proof. SSIM is computed in floating point and its kernel may
  change between releases within its documented accuracy (docs/design.md; METRICS_VERSION 3 -> 4
  moved values by ~1e-9), so it is compared at an absolute 1e-6.

Determinism: ``decode(encode(x))`` run twice, each time in a fresh Python process, on CPU and
(where present) CUDA. Both runs on one device must give the same bitstream and the same pixels,
and a bitstream encoded on one device must decode to the same pixels on the other. Different
bitstreams across devices are reported but allowed (encoders may use device-specific kernels).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .compare import Check

from .worker import output_folder, output_stem, rate_text

MAX_LISTED = 10


class CompatInputError(ValueError):
    """The baseline has nothing to check against (no stored bitstreams, no reference)."""


# Where `lcbench run --save-bitstreams/--save-decoded` put a job's files (one definition, in the worker).
label_folder = output_folder
job_stem = output_stem


# ---------------------------------------------------------------- bitstream compatibility

@dataclass
class BitstreamOutcome:
    image: str
    quality: float
    status: str          # same | differs | error | missing
    method: str = ""     # pixels | metrics
    detail: str = ""


@dataclass
class CompatReport:
    baseline_codec: str
    candidate_spec: str
    folder: Path
    outcomes: list[BitstreamOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    def passed_with(self, required: bool) -> bool:
        """No bitstream differs or fails to decode, at least one was checked, and, when the check is
        required (``[compat] bitstreams = true``), none of the baseline's jobs lacks its bitstream."""
        return (self.count("differs") == 0 and self.count("error") == 0 and self.count("same") > 0
                and not (required and self.count("missing")))

    @property
    def passed(self) -> bool:
        """Passed as ``bitstreams = true`` requires it: a missing bitstream fails."""
        return self.passed_with(required=True)

    def missing_jobs(self) -> list[str]:
        return [f"{o.image}@{o.quality:g}" for o in self.outcomes if o.status == "missing"]

    def to_check(self, group: str, required: bool = True) -> Check:
        """The check line. ``required`` (``[compat] bitstreams = true``): every successful baseline job's
        bitstream must be stored, a missing one fails naming how many and which; otherwise (``"auto"``)
        the stored ones are checked and the summary says how many were not."""
        same, bad, err, miss = (self.count(s) for s in ("same", "differs", "error", "missing"))
        total = len(self.outcomes)
        methods = sorted({o.method for o in self.outcomes if o.method})
        summary = (f"{same}/{total} baseline bitstreams of {self.baseline_codec} decode to the same "
                   f"pixels with {self.candidate_spec} (checked by {', '.join(methods) or 'nothing'})")
        if bad or err:
            summary += f"; {bad} differ, {err} cannot be decoded"
        missing = self.missing_jobs()
        if miss:
            listed = ", ".join(missing[:5]) + (f" ... ({miss} in all)" if miss > 5 else "")
            summary += (f"; {miss} of {total} not stored in the baseline ({listed})"
                        + ("" if required else ", so NOT checked (bitstreams = \"auto\" allows it)"))
        lines = [f"{o.image}@{o.quality:g}: {o.status}: {o.detail}" for o in self.outcomes
                 if o.status in ("differs", "error")][:MAX_LISTED]
        if required and miss:
            lines += [f"{o.image}@{o.quality:g}: missing: {o.detail}" for o in self.outcomes
                      if o.status == "missing"][:MAX_LISTED]
        if self.passed_with(required):
            status = "pass"
        elif same == 0 and not (bad or err or (required and miss)):
            status = "error"
        else:
            status = "fail"
        if status == "pass":
            outcome = "compatible" if not miss else f"compatible ({miss}/{total} not stored, not checked)"
        elif status == "error":
            outcome = "not checked"
        else:
            outcome = "incompatible" if (bad or err) else f"{miss}/{total} bitstreams not stored"
        return Check(name=f"{group}: bitstream compatibility", group=group, kind="bitstream_compat", status=status,
                     outcome=outcome, summary=summary, details="\n".join(lines),
                     value=float(bad + err + (miss if required else 0)),
                     data={"folder": str(self.folder), "same": same, "differs": bad, "errors": err, "missing": miss,
                           "missing_jobs": missing, "required": required, "methods": methods})


EXACT_REL_TOL = 1e-12  # mse_*: exact sums / pixel count; only the decimal round trip may differ
SSIM_ABS_TOL = 1e-6   # ssim: the documented accuracy of the metric kernels (docs/design.md)
# metric -> (relative tolerance, absolute tolerance) for the metric reference
METRIC_TOLERANCES = {"mse_rgb": (EXACT_REL_TOL, 0.0), "mse_y": (EXACT_REL_TOL, 0.0), "ssim": (0.0, SSIM_ABS_TOL)}


def _close(a: float, b: float, rel: float = EXACT_REL_TOL, abs_tol: float = 0.0) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return abs(a - b) <= max(rel * max(abs(a), abs(b), 1e-12), abs_tol)


def check_bitstreams(run_dir: str | Path, baseline_frame, baseline_codec: str, candidate_spec: str,
                     images: dict[str, Path] | None = None, device: str = "cpu") -> CompatReport:
    """Decode every stored bitstream of ``baseline_codec`` in ``run_dir`` with the candidate codec.

    ``baseline_frame``: the baseline's results (``lcbench.results``), which lists the jobs and their
    metrics; ``images``: image id -> original file, for the metric reference when no decoded PNGs
    were stored.
    """
    from PIL import Image

    from .images import load_image
    from .metrics import Reference, compute_metrics
    from .registry import create_codec

    from .results import CODEC_LABEL

    run_dir = Path(run_dir)
    rows = baseline_frame.loc[(baseline_frame["codec"] == baseline_codec) & baseline_frame["ok"]]
    # a rate-matched curve (jpeg@target_bpp, lcbench.results.split_rate_curves) is stored under its codec's label
    ran_as = str(rows[CODEC_LABEL].iloc[0]) if CODEC_LABEL in rows.columns and len(rows) else baseline_codec
    folder = run_dir / "bitstreams" / label_folder(ran_as)
    if not folder.is_dir():
        raise CompatInputError(f"baseline {run_dir} has no stored bitstreams for {baseline_codec!r} (no {folder}); "
                               "run the baseline with `lcbench run --save-bitstreams` (or save_bitstreams = true)")
    decoded_dir = run_dir / "decoded" / label_folder(ran_as)
    codec = create_codec(candidate_spec, device=device)
    report = CompatReport(baseline_codec, candidate_spec, folder)
    refs: dict[str, Any] = {}
    for row in rows.sort_values(["image", "quality"]).itertuples(index=False):
        image, quality = str(row.image), float(row.quality)
        stem = job_stem(image, quality, str(getattr(row, "rate_param", "") or ""))  # @bpp for rate-matched jobs
        path = folder / f"{stem}.bin"
        if not path.is_file():
            report.outcomes.append(BitstreamOutcome(image, quality, "missing", detail=f"no {path}"))
            continue
        data = path.read_bytes()
        expected = getattr(row, "bytes", math.nan)
        if expected == expected and len(data) != int(expected):
            report.outcomes.append(BitstreamOutcome(image, quality, "error", detail=(
                f"{path} has {len(data)} bytes but the baseline results say {int(expected)}")))
            continue
        try:
            decoded = codec.decode(data)
        except Exception as exc:
            report.outcomes.append(BitstreamOutcome(image, quality, "error",
                                                    detail=f"cannot decode {path}: {type(exc).__name__}: {exc}"))
            continue
        png = decoded_dir / f"{stem}.png"
        if png.is_file():
            ref = np.asarray(Image.open(png).convert("RGB"))
            if ref.shape != getattr(decoded, "shape", None):
                outcome = BitstreamOutcome(image, quality, "differs", "pixels",
                                           f"decoded shape {getattr(decoded, 'shape', '?')}, baseline {ref.shape}")
            else:
                diff = np.abs(ref.astype(np.int16) - decoded.astype(np.int16))
                n = int(np.count_nonzero(diff.max(axis=2)))
                outcome = BitstreamOutcome(image, quality, "same" if n == 0 else "differs", "pixels",
                                           "" if n == 0 else f"pixels differing: {n} (max |diff| {int(diff.max())})")
            report.outcomes.append(outcome)
            continue
        src = (images or {}).get(image)
        if src is None:
            report.outcomes.append(BitstreamOutcome(image, quality, "error", detail=(
                f"no decoded image {png} and no original for {image!r} to check against")))
            continue
        if image not in refs:
            refs[image] = Reference.of(load_image(src).pixels)
        try:
            values, _ = compute_metrics(refs[image], decoded)
        except ValueError as exc:
            report.outcomes.append(BitstreamOutcome(image, quality, "differs", "metrics", str(exc)))
            continue
        present = [m for m in METRIC_TOLERANCES if hasattr(row, m) and np.isfinite(float(getattr(row, m)))]
        if not present:  # nothing to compare with: that is not "same pixels"
            report.outcomes.append(BitstreamOutcome(image, quality, "error", "metrics", (
                f"no reference: the baseline has no decoded image {png.name} and no "
                f"{'/'.join(METRIC_TOLERANCES)} value for this job (store decoded images: --save-decoded)")))
            continue
        wrong = [f"{m} {values[m]:.12g} vs baseline {float(getattr(row, m)):.12g}"
                 + (f" (differs by more than {tol[1]:g})" if tol[1] else "")
                 for m, tol in METRIC_TOLERANCES.items()
                 if hasattr(row, m) and not _close(values[m], float(getattr(row, m)), *tol)]
        report.outcomes.append(BitstreamOutcome(image, quality, "differs" if wrong else "same", "metrics",
                                                "; ".join(wrong)))
    if not report.outcomes:
        raise CompatInputError(f"baseline has no successful jobs of {baseline_codec!r} to check bitstreams of")
    return report


# ---------------------------------------------------------------- determinism

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _worker(args: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: encode+decode each (image, rate), save bitstreams, decode given files."""
    from .images import load_image, pixel_hash
    from .registry import create_codec

    if args.get("plugins"):
        from .registry import load_plugin

        for p in args["plugins"]:
            load_plugin(p)
    codec = create_codec(args["spec"], device=args["device"])
    # Other processes' bitstreams are decoded first, by a codec that has encoded nothing: a decoder
    # that reads the image size (or the pixels) from state its encoder left behind, rather than from
    # the bitstream, fails here instead of passing a round trip in one process.
    decoded: dict[str, Any] = {}
    for f in args.get("decode_files", []):
        try:
            decoded[f] = pixel_hash(codec.decode(Path(f).read_bytes()))
        except Exception as exc:  # noqa: BLE001 - any failure is the finding, reported per file
            decoded[f] = {"error": f"{type(exc).__name__}: {exc}"}
    out_dir = Path(args["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    roundtrip = []
    for i, image in enumerate(args["images"]):
        pixels = load_image(image).pixels
        for rate in args["rates"]:
            bits = codec.encode(pixels, rate)
            dec = codec.decode(bits)
            name = f"{i}@{rate_text(rate)}.bin"
            (out_dir / name).write_bytes(bits)
            roundtrip.append({"image": image, "rate": rate, "file": name, "bitstream": _sha(bits),
                              "decoded": pixel_hash(dec)})
    return {"device": args["device"], "roundtrip": roundtrip, "decoded_files": decoded}


def _run_worker(args: dict[str, Any], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lcbench-det-") as tmp:
        inp, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        inp.write_text(json.dumps(args))
        env = dict(os.environ)
        proc = subprocess.run([sys.executable, "-m", "lcbench.compat", str(inp), str(out)], capture_output=True,
                              text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"determinism worker for {args['spec']} on {args['device']} failed "
                               f"(exit {proc.returncode}): {' | '.join(tail)}")
        return json.loads(out.read_text())


@dataclass
class DeterminismReport:
    spec: str
    devices: list[str]
    problems: list[str] = field(default_factory=list)   # failures
    notes: list[str] = field(default_factory=list)      # allowed differences
    n_roundtrips: int = 0

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_check(self, group: str) -> Check:
        summary = (f"{self.n_roundtrips} encode+decode round trips x2 fresh processes on {', '.join(self.devices)}: "
                   + ("deterministic" if self.passed else f"{len(self.problems)} difference(s)"))
        if self.notes:
            summary += f" ({len(self.notes)} note(s))"
        return Check(name=f"{group}: determinism", group=group, kind="determinism",
                     status="pass" if self.passed else "fail",
                     outcome="deterministic" if self.passed else "non-deterministic", summary=summary,
                     details="\n".join(self.problems[:MAX_LISTED] + self.notes[:MAX_LISTED]),
                     value=float(len(self.problems)), data={"devices": self.devices, "notes": self.notes})


def available_devices() -> list[str]:
    """cpu, plus cuda when torch sees a GPU."""
    from .runner import default_device

    return ["cpu"] + (["cuda"] if default_device() == "cuda" else [])


def determinism_check(spec: str, images: Sequence[str | Path], rates: Sequence[float],
                      devices: Sequence[str] | None = None, timeout: float = 600,
                      plugins: Sequence[str] = ()) -> DeterminismReport:
    """decode(encode(x)) twice per device in fresh processes; each bitstream also decoded (on every
    device) by a fresh process before it encodes anything, so a decoder that relies on what its
    encoder left in memory is caught."""
    devices = list(devices) if devices else available_devices()
    report = DeterminismReport(spec, devices)
    imgs = [str(Path(p).resolve()) for p in images]
    rates = [float(r) for r in rates]
    with tempfile.TemporaryDirectory(prefix="lcbench-det-") as tmp:
        first: dict[str, dict[str, Any]] = {}
        for dev in devices:
            first[dev] = _run_worker({"spec": spec, "device": dev, "images": imgs, "rates": rates,
                                      "out_dir": str(Path(tmp) / dev / "1"), "plugins": list(plugins)}, timeout)
        for dev in devices:
            # the second run also decodes what the first runs (every device) encoded
            files = [str(Path(tmp) / d / "1" / r["file"]) for d in devices for r in first[d]["roundtrip"]]
            second = _run_worker({"spec": spec, "device": dev, "images": imgs, "rates": rates,
                                  "out_dir": str(Path(tmp) / dev / "2"), "decode_files": files,
                                  "plugins": list(plugins)}, timeout)
            for a, b in zip(first[dev]["roundtrip"], second["roundtrip"]):
                where = f"{Path(a['image']).name}@{a['rate']:g} on {dev}"
                if a["bitstream"] != b["bitstream"]:
                    report.problems.append(f"{where}: two runs encode different bitstreams")
                if a["decoded"] != b["decoded"]:
                    report.problems.append(f"{where}: two runs decode different pixels")
            report.n_roundtrips += len(second["roundtrip"])
            for d in devices:
                for r in first[d]["roundtrip"]:
                    got = second["decoded_files"][str(Path(tmp) / d / "1" / r["file"])]
                    where = f"{Path(r['image']).name}@{r['rate']:g}"
                    if isinstance(got, dict):
                        report.problems.append(
                            f"{where}: the bitstream encoded on {d} does not decode on {dev} in a process that has "
                            f"encoded nothing ({got['error']}): the decoder needs state outside the bitstream")
                    elif got != r["decoded"]:
                        report.problems.append(
                            f"{where}: decoding the same bitstream again on {dev} gives different pixels" if d == dev
                            else f"{where}: the bitstream encoded on {d} decodes to different pixels on {dev} than on {d}")
        if len(devices) > 1:
            base = first[devices[0]]["roundtrip"]
            for dev in devices[1:]:
                n = sum(a["bitstream"] != b["bitstream"] for a, b in zip(base, first[dev]["roundtrip"]))
                if n:
                    report.notes.append(f"{n} bitstream(s) encoded on {dev} differ from {devices[0]} "
                                        "(allowed: each still decodes identically everywhere)")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Worker entry point: ``python -m lcbench.compat IN.json OUT.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: python -m lcbench.compat IN.json OUT.json (internal: determinism worker)", file=sys.stderr)
        return 2
    args = json.loads(Path(argv[0]).read_text())
    result = _worker(args)
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
