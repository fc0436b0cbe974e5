"""``lcbench check``: the release gate in one command, driven by a TOML file in the model's repository.

It runs the benchmark (``lcbench.runner.execute``: jobs already in the run directory are reused),
compares the run against the baseline (``lcbench.compare``), optionally decodes the baseline's
stored bitstreams with the candidate and checks determinism (``lcbench.compat``), and writes the
CI reports (``lcbench.ci_outputs``). Relative paths in the file are relative to the file's folder.
See docs/ci.md for the format.
"""
from __future__ import annotations

import subprocess
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the backport
    import tomli as tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import Check, CompareInputError, Thresholds, Verdict, compare_sides, load_side, parse_pair, side_from_frame

DEFAULT_CONFIG = "lcbench-check.toml"


class CheckConfigError(CompareInputError):
    """The check configuration is invalid; the message names the file and the key."""


@dataclass
class CheckConfig:
    dataset: str
    codecs: list[str]
    baseline: str
    source: str = "<config>"
    rates: tuple[float, ...] | None = None
    codec_rates: dict[str, tuple[float, ...]] = field(default_factory=dict)
    metrics: list[str] | None = None  # None: psnr_rgb and ms_ssim_db where both sides have them
    max_images: int | None = None
    image_glob: str | None = None
    plugins: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)
    method: str = "pchip"
    bootstrap: int = 2000
    run_dir: Path = Path("lcbench-check/run")
    jobs: int | None = None
    device: str | None = None
    save_bitstreams: bool = True
    save_decoded: bool = False
    bitstreams: bool | str = "auto"          # True: required, "auto": when the baseline stored them, False
    determinism: bool | str | list[str] = "learned"  # "learned", True (all), False, or codec specs
    determinism_devices: list[str] | None = None
    determinism_images: int = 1
    determinism_rates: tuple[float, ...] | None = None
    markdown: Path | None = None
    junit: Path | None = None
    json: Path | None = None


_SECTIONS: dict[str, set[str]] = {
    "": {"dataset", "codecs", "metrics", "rate_points", "max_images", "images", "plugins",
         "baseline", "thresholds", "run", "compat", "outputs"},
    "baseline": {"path", "pairs"},
    "thresholds": {"max_bd_rate", "max_slowdown", "fail_on", "method", "bootstrap"},
    "run": {"dir", "jobs", "device", "save_bitstreams", "save_decoded"},
    "compat": {"bitstreams", "determinism", "devices", "images", "rate_points"},
    "outputs": {"markdown", "junit", "json"},
}


def _rates(value: Any, where: str) -> tuple[float, ...]:
    from .rates import parse_rate_list

    if isinstance(value, str):
        try:
            return parse_rate_list(value)
        except ValueError as exc:
            raise CheckConfigError(f"{where}: {exc}") from exc
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    raise CheckConfigError(f"{where}: expected a list of numbers or a string like '5:95:10', got {value!r}")


def parse_config(doc: dict[str, Any], base: Path, source: str = "<config>") -> CheckConfig:
    """A parsed TOML document -> CheckConfig; relative paths resolved against ``base``."""
    def fail(msg: str) -> CheckConfigError:
        return CheckConfigError(f"{source}: {msg}")

    for section, allowed in _SECTIONS.items():
        table = doc if not section else doc.get(section, {})
        if not isinstance(table, dict):
            if section == "baseline" and isinstance(table, str):
                continue
            raise fail(f"[{section}] must be a table")
        unknown = sorted(k for k in table if k not in allowed)
        if unknown:
            raise fail(f"unknown key(s) {unknown} in {'[' + section + ']' if section else 'the top level'}; "
                       f"known: {sorted(allowed)}")

    def path(p: Any, key: str) -> Path:
        if not isinstance(p, str) or not p:
            raise fail(f"{key} must be a path string, got {p!r}")
        q = Path(p).expanduser()
        return q if q.is_absolute() else base / q

    def typed(table: dict, key: str, kinds: tuple, default: Any, name: str) -> Any:
        v = table.get(key, default)
        if v is not default and (not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds)):
            raise fail(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got {v!r}")
        return v

    for key in ("dataset", "codecs", "baseline"):
        if key not in doc:
            raise fail(f"missing required key {key!r}")
    dataset = doc["dataset"]
    if not isinstance(dataset, str) or not dataset:
        raise fail(f"dataset must be a name or a folder, got {dataset!r}")
    if (base / dataset).is_dir():
        dataset = str(base / dataset)
    codecs = doc["codecs"]
    if isinstance(codecs, str):
        codecs = [c.strip() for c in codecs.split(",") if c.strip()]
    if not isinstance(codecs, list) or not codecs or not all(isinstance(c, str) for c in codecs):
        raise fail(f"codecs must be a non-empty list of codec specs, got {codecs!r}")
    metrics = doc.get("metrics")
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    if metrics is not None and (not isinstance(metrics, list) or not metrics):
        raise fail(f"metrics must be a list of metric columns, got {metrics!r}")
    rates, codec_rates = None, {}
    rp = doc.get("rate_points")
    if isinstance(rp, dict):
        codec_rates = {k: _rates(v, f"{source}: rate_points.{k}") for k, v in rp.items()}
    elif rp is not None:
        rates = _rates(rp, f"{source}: rate_points")

    bl = doc["baseline"]
    bl = {"path": bl} if isinstance(bl, str) else bl
    if "path" not in bl:
        raise fail("[baseline] needs path = run directory, results.csv or CompressAI JSON")
    pairs_raw = bl.get("pairs", [])
    if isinstance(pairs_raw, dict):
        pairs = [(str(k), str(v)) for k, v in pairs_raw.items()]
    elif isinstance(pairs_raw, list):
        pairs = [parse_pair(str(p)) for p in pairs_raw]
    else:
        raise fail(f"[baseline] pairs must be a list of 'old:new' or a table old = 'new', got {pairs_raw!r}")

    th = doc.get("thresholds", {})
    max_bd = typed(th, "max_bd_rate", (int, float), 0.0, "thresholds.max_bd_rate")
    slow = typed(th, "max_slowdown", (int, float), None, "thresholds.max_slowdown")
    try:
        thresholds = Thresholds(float(max_bd), None if slow is None else float(slow), th.get("fail_on", "significant"))
    except CompareInputError as exc:
        raise fail(f"[thresholds] {exc}") from exc
    method = th.get("method", "pchip")
    if method not in ("pchip", "cubic"):
        raise fail(f"thresholds.method must be pchip or cubic, got {method!r}")

    run = doc.get("run", {})
    compat = doc.get("compat", {})
    outputs = doc.get("outputs", {})
    bitstreams = compat.get("bitstreams", "auto")
    if bitstreams not in (True, False, "auto"):
        raise fail(f"compat.bitstreams must be true, false or \"auto\", got {bitstreams!r}")
    determinism = compat.get("determinism", "learned")
    if not (isinstance(determinism, bool) or determinism == "learned" or
            (isinstance(determinism, list) and all(isinstance(d, str) for d in determinism))):
        raise fail(f"compat.determinism must be true, false, \"learned\" or a list of codecs, got {determinism!r}")
    devices = compat.get("devices")
    if devices is not None and (not isinstance(devices, list) or not set(devices) <= {"cpu", "cuda"}):
        raise fail(f"compat.devices must be a list of cpu/cuda, got {devices!r}")
    device = run.get("device")
    if device not in (None, "cpu", "cuda"):
        raise fail(f"run.device must be cpu or cuda, got {device!r}")
    max_images = typed(doc, "max_images", (int,), None, "max_images")
    if max_images is not None and max_images < 1:
        raise fail(f"max_images must be >= 1, got {max_images}")
    return CheckConfig(
        dataset=dataset, codecs=list(codecs), baseline=str(path(bl["path"], "baseline.path")), source=source,
        rates=rates, codec_rates=codec_rates, metrics=metrics, max_images=max_images,
        image_glob=typed(doc, "images", (str,), None, "images"),
        plugins=[str(path(p, "plugins")) for p in doc.get("plugins", [])], pairs=pairs, thresholds=thresholds,
        method=method, bootstrap=typed(th, "bootstrap", (int,), 2000, "thresholds.bootstrap"),
        run_dir=path(run.get("dir", "lcbench-check/run"), "run.dir"),
        jobs=typed(run, "jobs", (int,), None, "run.jobs"), device=device,
        save_bitstreams=typed(run, "save_bitstreams", (bool,), True, "run.save_bitstreams"),
        save_decoded=typed(run, "save_decoded", (bool,), False, "run.save_decoded"),
        bitstreams=bitstreams, determinism=determinism, determinism_devices=devices,
        determinism_images=typed(compat, "images", (int,), 1, "compat.images"),
        determinism_rates=_rates(compat["rate_points"], f"{source}: compat.rate_points")
        if "rate_points" in compat else None,
        markdown=path(outputs["markdown"], "outputs.markdown") if "markdown" in outputs else None,
        junit=path(outputs["junit"], "outputs.junit") if "junit" in outputs else None,
        json=path(outputs["json"], "outputs.json") if "json" in outputs else None,
    )


def load_config(path: str | Path) -> CheckConfig:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckConfigError(f"no check configuration at {p} (see docs/ci.md for an example)") from None
    except tomllib.TOMLDecodeError as exc:
        raise CheckConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_config(doc, p.resolve().parent, str(p))


@dataclass
class CheckResult:
    verdict: Verdict
    run_dir: Path
    jobs_run: int
    jobs_reused: int
    written: list[Path] = field(default_factory=list)


def _rates_for(cfg: CheckConfig, spec: str, codec: Any) -> tuple[float, ...]:
    return cfg.codec_rates.get(spec) or cfg.codec_rates.get(codec.name) or cfg.rates or tuple(codec.default_rates)


def run_check(cfg: CheckConfig) -> CheckResult:
    """Run, compare, check compatibility/determinism; the verdict's exit_code is the gate.

    Bad input (config, baseline, dataset, missing images) raises ``CompareInputError``.
    """
    from .compat import CompatInputError, check_bitstreams, determinism_check
    from .dataset import resolve_dataset, select_images
    from .registry import create_codec, load_plugin
    from .runner import RunOptions, execute

    for plugin in cfg.plugins:
        load_plugin(plugin)
    baseline = load_side(cfg.baseline, "baseline")  # fail fast, before the benchmark runs
    dataset = select_images(resolve_dataset(cfg.dataset), max_images=cfg.max_images, pattern=cfg.image_glob)
    options = RunOptions(codecs=cfg.codecs, dataset=dataset, out=cfg.run_dir, rates=cfg.rates,
                         codec_rates=cfg.codec_rates, jobs=cfg.jobs, device=cfg.device,
                         save_bitstreams=cfg.save_bitstreams, save_decoded=cfg.save_decoded, progress=False,
                         command_line=f"lcbench check {cfg.source}")
    outcome = execute(options)
    candidate = side_from_frame(outcome.frame, "candidate", str(outcome.run_dir), outcome.run_dir)
    verdict = compare_sides(baseline, candidate, cfg.metrics, cfg.pairs or None, cfg.thresholds, cfg.method,
                            cfg.bootstrap)
    compared = {p.candidate_codec for p in verdict.pairs}
    specs = {}
    for spec in cfg.codecs:
        codec = create_codec(spec, device="cpu")
        specs[codec.label()] = (spec, codec)
    for label in specs:
        if label not in compared:
            verdict.notes.append(f"codec {label!r} has no counterpart in the baseline: not compared")

    images = {im.id: im.path for im in dataset.images}
    if cfg.bitstreams and baseline.run_dir is not None:
        for pair in verdict.pairs:
            spec = specs[pair.candidate_codec][0]
            try:
                report = check_bitstreams(baseline.run_dir, baseline.frame, pair.baseline_codec, spec, images,
                                          device=cfg.device or "cpu")
            except CompatInputError as exc:
                if cfg.bitstreams is True:
                    raise CompareInputError(str(exc)) from exc
                verdict.notes.append(f"bitstream compatibility not checked for {pair.candidate_codec}: {exc}")
                continue
            verdict.checks.append(report.to_check(pair.candidate_codec))
    elif cfg.bitstreams == "auto":
        verdict.notes.append(f"bitstream compatibility not checked: the baseline {cfg.baseline} is not a run directory")
    elif cfg.bitstreams is True:
        raise CompareInputError(f"compat.bitstreams = true needs a baseline run directory with stored bitstreams; "
                                f"{cfg.baseline} is not one")

    det = cfg.determinism
    chosen = ([s for s, c in specs.values() if c.uses_device] if det == "learned" else
              [s for s, _ in specs.values()] if det is True else list(det) if isinstance(det, list) else [])
    for spec in chosen:
        codec = create_codec(spec, device="cpu")
        rates = cfg.determinism_rates or _rates_for(cfg, spec, codec)
        paths = [im.path for im in dataset.images[:cfg.determinism_images]]
        try:
            report = determinism_check(spec, paths, rates, cfg.determinism_devices, plugins=cfg.plugins)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:  # the worker crashed or hung: a failed check
            verdict.checks.append(Check(name=f"{codec.label()}: determinism", group=codec.label(),
                                        kind="determinism", status="error", outcome="not computable",
                                        summary=f"determinism check could not run: {exc}", details=str(exc)))
            continue
        verdict.checks.append(report.to_check(codec.label()))
    return CheckResult(verdict, outcome.run_dir, outcome.planned - outcome.skipped, outcome.skipped)
