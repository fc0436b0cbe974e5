"""``lcbench check``: the release gate in one command, driven by a TOML file in the model's repository.

It runs the benchmark (``lcbench.runner.execute``: jobs already in the run directory are reused),
compares the run against the baseline (``lcbench.compare``), optionally decodes the baseline's
stored bitstreams with the candidate and checks determinism (``lcbench.compat``), and writes the
CI reports (``lcbench.ci_outputs``). Relative paths in the file are relative to the file's folder.
See docs/ci.md for the format.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the backport
    import tomli as tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .compare import MIN_BOOTSTRAP, Check, CompareInputError, Side, Thresholds, Verdict, compare_sides, load_side, parse_pair, run_label, side_from_frame

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
    # the config file's folder: relative paths inside codec specs (weights_dir=weights, a tool
    # path) are read from there, like every other path of the file, not from the working directory
    folder: Path | None = None


_SECTIONS: dict[str, set[str]] = {
    "": {"dataset", "codecs", "metrics", "rate_points", "max_images", "images", "plugins",
         "baseline", "thresholds", "run", "compat", "outputs"},
    "baseline": {"path", "pairs"},
    "thresholds": {"max_bd_rate", "max_slowdown", "fail_on", "method", "bootstrap"},
    "run": {"dir", "jobs", "device", "save_bitstreams", "save_decoded"},
    "compat": {"bitstreams", "determinism", "devices", "images", "rate_points"},
    "outputs": {"markdown", "junit", "json"},
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rates(value: Any, where: str) -> tuple[float, ...]:
    from .rates import parse_rate_list

    if isinstance(value, str):
        try:
            return parse_rate_list(value)
        except ValueError as exc:
            raise CheckConfigError(f"{where}: {exc}") from exc
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return tuple(float(v) for v in value)
    raise CheckConfigError(f"{where}: expected a list of numbers or a string like '5:95:10', got {value!r}")


def _codec_names(spec: str) -> set[str]:
    """The names a ``[rate_points]`` key may use for this codec spec: the spec itself, its codec
    name without options, and for a pipeline its canonical name (as ``lcbench.jobs`` looks it up)."""
    from .registry import parse_codec_spec

    names = {spec.strip()}
    try:
        names.add(parse_codec_spec(spec)[0])
    except ValueError:
        pass
    if "+" in spec:
        try:
            from .pipeline import _canonical, split_pipeline_spec

            steps, (inner, inner_opts) = split_pipeline_spec(spec)
            names.add("+".join([_canonical(n, o) for n, o in steps] + [_canonical(inner, inner_opts)]))
        except Exception:  # an invalid pipeline spec is reported when the run plans it
            pass
    return names


def parse_config(doc: dict[str, Any], base: Path, source: str = "<config>") -> CheckConfig:
    """A parsed TOML document -> CheckConfig; relative paths resolved against ``base``.

    Every key is type-checked: a wrong type or value raises ``CheckConfigError`` naming the file
    and the key (``FILE: compat.images must be a positive integer, got -3``).
    """
    def fail(msg: str) -> CheckConfigError:
        return CheckConfigError(f"{source}: {msg}")

    for section, allowed in _SECTIONS.items():
        table = doc if not section else doc.get(section, {})
        if not isinstance(table, dict):
            if section == "baseline" and isinstance(table, str):
                continue
            raise fail(f"[{section}] must be a table, got {table!r}")
        unknown = sorted(k for k in table if k not in allowed)
        if unknown:
            raise fail(f"unknown key(s) {unknown} in {'[' + section + ']' if section else 'the top level'}; "
                       f"known: {sorted(allowed)}")

    def path(p: Any, key: str) -> Path:
        if not isinstance(p, str) or not p:
            raise fail(f"{key} must be a path string, got {p!r}")
        q = Path(p).expanduser()
        return q if q.is_absolute() else base / q

    def boolean(table: dict, key: str, default: bool, name: str) -> bool:
        v = table.get(key, default)
        if not isinstance(v, bool):
            raise fail(f"{name} must be true or false, got {v!r}")
        return v

    def integer(table: dict, key: str, default: int | None, name: str, minimum: int | None = None,
                what: str = "an integer") -> int | None:
        v = table.get(key, default)
        if v is None and default is None:
            return None
        if not _is_int(v) or (minimum is not None and v < minimum):
            raise fail(f"{name} must be {what}, got {v!r}")
        return v

    def number(table: dict, key: str, default: float | None, name: str) -> float | None:
        v = table.get(key, default)
        if v is None and default is None:
            return None
        if not _is_number(v):
            raise fail(f"{name} must be a number, got {v!r}")
        return float(v)

    def string_list(v: Any, name: str, what: str, split_commas: bool) -> list[str]:
        """A list of non-empty strings; a string is a comma-separated list (``split_commas``) or one item."""
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",")] if split_commas else [v]
        if not isinstance(v, list) or not v or not all(isinstance(s, str) and s.strip() for s in v):
            raise fail(f"{name} must be a non-empty list of {what} (strings), got {v!r}")
        return [s.strip() for s in v]

    for key in ("dataset", "codecs", "baseline"):
        if key not in doc:
            raise fail(f"missing required key {key!r}")
    dataset = doc["dataset"]
    if not isinstance(dataset, str) or not dataset:
        raise fail(f"dataset must be a name or a folder, got {dataset!r}")
    if (base / dataset).is_dir():
        dataset = str(base / dataset)
    codecs = string_list(doc["codecs"], "codecs", "codec specs", split_commas=True)
    metrics = None
    if "metrics" in doc:
        metrics = string_list(doc["metrics"], "metrics", "metric columns", split_commas=True)
    plugins: list[str] = []
    if "plugins" in doc:
        # a single string is one plugin path (never split: a path may contain commas)
        plugins = [str(path(p, "plugins")) for p in string_list(doc["plugins"], "plugins", "plugin file paths",
                                                                  split_commas=False)]

    rates, codec_rates = None, {}
    rp = doc.get("rate_points")
    if isinstance(rp, dict):
        if not rp:
            raise fail("[rate_points] is empty: give rate points per codec (jpeg = [20, 40]) or a top-level list")
        known = set().union(*(_codec_names(c) for c in codecs))
        for k in rp:
            if k not in known:
                raise fail(f"rate_points.{k}: {k!r} is not one of the configured codecs {codecs}; "
                           f"a [rate_points] key must be a codec spec or codec name from codecs")
        codec_rates = {k: _rates(v, f"{source}: rate_points.{k}") for k, v in rp.items()}
    elif rp is not None:
        rates = _rates(rp, f"{source}: rate_points")

    bl = doc["baseline"]
    bl = {"path": bl} if isinstance(bl, str) else bl
    if "path" not in bl:
        raise fail("[baseline] needs path = run directory, results.csv or CompressAI JSON")
    pairs_raw = bl.get("pairs", [])
    try:
        if isinstance(pairs_raw, dict) and all(isinstance(v, str) and v for v in pairs_raw.values()):
            pairs = [(str(k), v) for k, v in pairs_raw.items()]
        elif isinstance(pairs_raw, list) and all(isinstance(p, str) for p in pairs_raw):
            pairs = [parse_pair(p) for p in pairs_raw]
        else:
            raise fail(f"baseline.pairs must be a list of 'old:new' strings or a table old = 'new', got {pairs_raw!r}")
    except CheckConfigError:
        raise
    except CompareInputError as exc:
        raise fail(f"baseline.pairs: {exc}") from exc

    th = doc.get("thresholds", {})
    max_bd = number(th, "max_bd_rate", 0.0, "thresholds.max_bd_rate")
    slow = number(th, "max_slowdown", None, "thresholds.max_slowdown")
    fail_on = th.get("fail_on", "significant")
    if not isinstance(fail_on, str):
        raise fail(f"thresholds.fail_on must be \"significant\" or \"point\", got {fail_on!r}")
    try:
        thresholds = Thresholds(max_bd, slow, fail_on)
    except CompareInputError as exc:
        raise fail(f"thresholds: {exc}") from exc
    method = th.get("method", "pchip")
    if method not in ("pchip", "cubic"):
        raise fail(f"thresholds.method must be \"pchip\" or \"cubic\", got {method!r}")
    bootstrap = integer(th, "bootstrap", 2000, "thresholds.bootstrap", MIN_BOOTSTRAP,
                        f"an integer of at least {MIN_BOOTSTRAP} (bootstrap resamples)")

    run = doc.get("run", {})
    compat = doc.get("compat", {})
    outputs = doc.get("outputs", {})
    jobs = run.get("jobs")
    if jobs is not None and not (_is_int(jobs) and (jobs >= 1 or jobs == -1)):
        raise fail(f"run.jobs must be a positive integer (or -1: all cores), got {jobs!r}")
    device = run.get("device")
    if device is not None and device not in ("cpu", "cuda"):
        raise fail(f"run.device must be \"cpu\" or \"cuda\", got {device!r}")
    bitstreams = compat.get("bitstreams", "auto")
    if not (isinstance(bitstreams, bool) or bitstreams == "auto"):
        raise fail(f"compat.bitstreams must be true, false or \"auto\", got {bitstreams!r}")
    determinism = compat.get("determinism", "learned")
    if isinstance(determinism, list):
        determinism = string_list(determinism, "compat.determinism", "codec specs", split_commas=False)
    elif not (isinstance(determinism, bool) or determinism == "learned"):
        raise fail(f"compat.determinism must be true, false, \"learned\" or a list of codecs, got {determinism!r}")
    devices = compat.get("devices")
    if devices is not None and (not isinstance(devices, list) or not devices
                                or not all(isinstance(d, str) and d in ("cpu", "cuda") for d in devices)):
        raise fail(f"compat.devices must be a non-empty list of \"cpu\"/\"cuda\", got {devices!r}")
    images = integer(compat, "images", 1, "compat.images", 1, "a positive integer (images per determinism check)")
    max_images = integer(doc, "max_images", None, "max_images", 1, "a positive integer")
    image_glob = doc.get("images")
    if image_glob is not None and (not isinstance(image_glob, str) or not image_glob):
        raise fail(f"images must be a file-name pattern string (e.g. \"kodim0*.png\"), got {image_glob!r}")
    return CheckConfig(
        dataset=dataset, codecs=codecs, baseline=str(path(bl["path"], "baseline.path")), source=source,
        rates=rates, codec_rates=codec_rates, metrics=metrics, max_images=max_images, image_glob=image_glob,
        plugins=plugins, pairs=pairs, thresholds=thresholds, method=method, bootstrap=bootstrap,
        run_dir=path(run.get("dir", "lcbench-check/run"), "run.dir"), jobs=jobs, device=device,
        save_bitstreams=boolean(run, "save_bitstreams", True, "run.save_bitstreams"),
        save_decoded=boolean(run, "save_decoded", False, "run.save_decoded"),
        bitstreams=bitstreams, determinism=determinism, determinism_devices=devices, determinism_images=images,
        determinism_rates=_rates(compat["rate_points"], f"{source}: compat.rate_points")
        if "rate_points" in compat else None,
        markdown=path(outputs["markdown"], "outputs.markdown") if "markdown" in outputs else None,
        junit=path(outputs["junit"], "outputs.junit") if "junit" in outputs else None,
        folder=base,
        json=path(outputs["json"], "outputs.json") if "json" in outputs else None,
    )


def load_config(path: str | Path) -> CheckConfig:
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CheckConfigError(f"no check configuration at {p} (see docs/ci.md for an example)") from None
    except IsADirectoryError:
        raise CheckConfigError(f"{p} is a folder; expected a TOML check configuration file") from None
    except UnicodeDecodeError as exc:
        raise CheckConfigError(f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                               "a TOML file must be UTF-8") from None
    except OSError as exc:
        raise CheckConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CheckConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_config(doc, p.resolve().parent, str(p))


def check_output_paths(cfg: CheckConfig) -> None:
    """Fail before the benchmark runs when a report or the run directory could not be written:
    a report path that is a folder, or whose folder cannot be created (a file in the way, no
    write permission). Raises ``CheckConfigError`` naming the option and the path."""
    def creatable_parent(p: Path, what: str) -> None:
        ancestor = p.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise CheckConfigError(f"{what} {p}: cannot create its folder, {ancestor} is a file")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise CheckConfigError(f"{what} {p}: cannot write in {ancestor} (permission denied)")

    for key in ("markdown", "junit", "json"):
        p = getattr(cfg, key)
        if p is None:
            continue
        p = Path(p)
        what = f"outputs.{key} (--{key})"
        if p.is_dir():
            raise CheckConfigError(f"{what} {p} is a folder; expected a file path")
        if p.exists():
            if not os.access(p, os.W_OK):
                raise CheckConfigError(f"{what} {p}: file is not writable")
        else:
            creatable_parent(p, what)
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckConfigError(f"run.dir (--run-dir) {run_dir} is a file; expected a folder")
    if not run_dir.exists():
        creatable_parent(run_dir, "run.dir (--run-dir)")


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
    check_output_paths(cfg)  # a report that cannot be written fails now, not after the benchmark
    with _working_directory(cfg.folder):
        return _run_check(cfg)


@contextlib.contextmanager
def _working_directory(folder: Path | None) -> Iterator[None]:
    """The config's folder as the working directory while the check runs (and the worker
    processes it starts), so `autoencoder:weights_dir=weights` means the folder beside the
    config; the codec's label stays as written, so it still matches the baseline's."""
    if folder is None:
        yield
        return
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _check_against_baseline(cfg: CheckConfig, baseline: Side) -> None:
    """This file's `metrics` and `baseline.pairs` against the baseline, before the benchmark runs:
    an error names the file and its key (compare's own errors name --metric and --pair)."""
    from .summary import check_metric_names

    bc = baseline.codecs
    for b, c in cfg.pairs:
        if b not in bc:
            raise CheckConfigError(f"{cfg.source}: baseline.pairs {b}:{c}: baseline {baseline.source} has no codec "
                                   f"{b!r}; it has {bc}")
    if cfg.metrics:
        codecs = [b for b, _ in cfg.pairs] or bc
        tables = ([baseline.frame.loc[baseline.frame["codec"] == b] for b in codecs] if baseline.frame is not None
                  else [baseline.curves[b] for b in codecs])
        try:
            check_metric_names(cfg.metrics, *tables, option="metrics")
        except ValueError as exc:
            raise CheckConfigError(f"{cfg.source}: {exc} (baseline {baseline.source})") from exc


def _run_check(cfg: CheckConfig) -> CheckResult:
    from .compat import CompatInputError, check_bitstreams, determinism_check
    from .dataset import resolve_dataset, select_images
    from .registry import create_codec, load_plugin
    from .runner import RunOptions, execute

    for plugin in cfg.plugins:
        load_plugin(plugin)
    if isinstance(cfg.determinism, list):  # an unknown codec fails now, not after the benchmark
        for spec in cfg.determinism:
            if spec not in cfg.codecs:
                try:
                    create_codec(spec, device="cpu")
                except (KeyError, ValueError) as exc:
                    raise CheckConfigError(f"{cfg.source}: compat.determinism: {exc}") from exc
    baseline = load_side(cfg.baseline, "baseline")  # fail fast, before the benchmark runs
    _check_against_baseline(cfg, baseline)
    dataset = select_images(resolve_dataset(cfg.dataset), max_images=cfg.max_images, pattern=cfg.image_glob)
    if baseline.datasets and set(baseline.datasets) != {dataset.name}:  # found after the benchmark before
        raise CheckConfigError(f"{cfg.source}: dataset {cfg.dataset!r} is {dataset.name!r}, but the baseline "
                               f"{baseline.source} is on {', '.join(baseline.datasets)}")
    for spec in cfg.codecs:  # an unknown codec or bad option: name this file, before anything runs
        try:
            create_codec(spec, device="cpu")
        except (KeyError, ValueError) as exc:
            raise CheckConfigError(f"{cfg.source}: codecs: {exc}") from exc
    options = RunOptions(codecs=cfg.codecs, dataset=dataset, out=cfg.run_dir, rates=cfg.rates,
                         codec_rates=cfg.codec_rates, jobs=cfg.jobs, device=cfg.device,
                         save_bitstreams=cfg.save_bitstreams, save_decoded=cfg.save_decoded, progress=False,
                         command_line=f"lcbench check {cfg.source}")
    try:
        outcome = execute(options)
    except ValueError as exc:  # a codec spec, option or rate point of this file: say which file
        raise CheckConfigError(f"{cfg.source}: {exc}") from exc
    candidate = side_from_frame(outcome.frame, "candidate", str(outcome.run_dir), outcome.run_dir)
    verdict = compare_sides(baseline, candidate, cfg.metrics, cfg.pairs or None, cfg.thresholds, cfg.method,
                            cfg.bootstrap)
    # labels the compared curves ran under (jpeg for jpeg@target_bpp); compare_sides already noted the
    # candidate codecs it did not compare
    compared = {run_label(candidate, p.candidate_codec) for p in verdict.pairs}
    specs = {}
    for spec in cfg.codecs:
        codec = create_codec(spec, device="cpu")
        specs[codec.label()] = (spec, codec)
    for label in specs:
        if label not in compared:
            # not compared, but its failures still fail the gate, as they fail `lcbench run`
            failed = outcome.frame.loc[(outcome.frame["codec"] == label) & (outcome.frame["error"] != "")]
            if len(failed):
                errs = list(dict.fromkeys(failed["error"].astype(str)))[:5]
                verdict.checks.append(Check(name=f"{label}: jobs", group=label, kind="jobs", status="fail",
                                            outcome="failed jobs", summary=f"{len(failed)} job(s) failed",
                                            details="\n".join(errs), value=float(len(failed))))

    images = {im.id: im.path for im in dataset.images}
    if cfg.bitstreams and baseline.run_dir is not None:
        required = cfg.bitstreams is True
        for pair in verdict.pairs:
            spec = specs[run_label(candidate, pair.candidate_codec)][0]
            try:
                report = check_bitstreams(baseline.run_dir, baseline.frame, pair.baseline_codec, spec, images,
                                          device=cfg.device or "cpu")
            except CompatInputError as exc:
                if required:
                    raise CompareInputError(str(exc)) from exc
                verdict.notes.append(f"bitstream compatibility not checked for {pair.candidate_codec}: {exc}")
                continue
            # true: every baseline job's bitstream must be there; "auto": the stored ones are checked
            check = report.to_check(pair.candidate_codec, required=required)
            if not required and check.data["missing"]:
                verdict.notes.append(f"bitstream compatibility of {pair.candidate_codec}: {check.data['missing']} of "
                                     f"{len(report.outcomes)} baseline bitstreams not stored, so not checked "
                                     "(bitstreams = \"auto\"; true fails on them)")
            verdict.checks.append(check)
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
