"""Render a ``lcbench.compare.Verdict`` for CI: Markdown (pull-request comment), JUnit XML, JSON.

JUnit: one ``<testcase>`` per check (codec x metric for BD-rate, plus time, job, bitstream
compatibility and determinism checks), ``<failure>`` for a failed check, ``<error>`` for one that
could not be computed or for bad input. CI services (GitHub Actions test reporters, GitLab, Jenkins)
show these as test results.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from .compare import Check, Verdict

_ICON = {"pass": "✅", "fail": "❌", "error": "⚠️"}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(c: Check) -> str:
    if c.kind == "bitstream_compat":
        d = c.data
        return f"{d.get('same', 0)}/{sum(d.get(k, 0) for k in ('same', 'differs', 'errors', 'missing'))} same"
    if c.kind in ("determinism", "jobs"):
        if not math.isfinite(c.value):
            return ""
        n = int(c.value)
        return f"{n} failed" if c.kind == "jobs" else f"{n} difference{'' if n == 1 else 's'}"
    if not math.isfinite(c.value):
        return "n/a"
    if c.unit == "%":
        return f"{c.value:+.2f}%"
    if c.unit == "x":
        return f"x{c.value:.2f}"
    return f"{c.value:g}"


def _interval(c: Check) -> str:
    if not (math.isfinite(c.ci_low) and math.isfinite(c.ci_high)):
        return ""
    if c.unit == "%":
        return f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
    return f"[{c.ci_low:.2f}, {c.ci_high:.2f}]"


def _threshold(c: Check) -> str:
    if not math.isfinite(c.threshold):
        return ""
    return f"≤ {c.threshold:+.2f}%" if c.unit == "%" else f"≤ x{c.threshold:g}" if c.unit == "x" else f"{c.threshold:g}"


def markdown(v: Verdict, title: str = "lcbench regression check") -> str:
    """A pull-request comment: overall status, one row per check, failures, per-point deltas."""
    lines: list[str] = []
    if v.error is not None:
        lines += [f"## {_ICON['error']} {title}: bad input", "", f"Nothing was compared: {v.error}", ""]
        lines += [f"Baseline: `{v.baseline}` · Candidate: `{v.candidate}`", ""]
        return "\n".join(lines)
    failed = [c for c in v.checks if not c.passed]
    head = "passed" if v.passed else f"failed ({len(failed)} of {len(v.checks)} checks)"
    lines += [f"## {_ICON['pass' if v.passed else 'fail']} {title}: {head}", ""]
    th = v.thresholds
    rule = ("a regression must be significant (whole per-image 95% interval above the threshold)"
            if th.fail_on == "significant" else "the point estimate decides")
    slow = f", slowdown ≤ x{th.max_slowdown:g}" if th.max_slowdown is not None else ""
    lines += [f"Baseline: `{v.baseline}` · Candidate: `{v.candidate}`  ",
              f"Thresholds: BD-rate ≤ {th.max_bd_rate:+.2f}%{slow}; {rule}. BD method: {v.method}; negative BD-rate "
              "= fewer bits for the same quality.", ""]
    better = [c for c in v.checks if c.kind == "bd_rate" and c.outcome == "better"]
    if better and v.passed:
        lines += [f"The candidate is **better** on {len(better)} of "
                  f"{sum(c.kind == 'bd_rate' for c in v.checks)} BD-rate checks.", ""]
    lines += ["| | Codec | Check | Value | 95% CI | Allowed | Outcome |", "|---|---|---|---|---|---|---|"]
    for c in v.checks:
        what = c.name.split(": ", 1)[1] if ": " in c.name else c.name
        lines.append("| " + " | ".join(_cell(x) for x in (_ICON[c.status], c.group, what, _value(c), _interval(c),
                                                            _threshold(c), c.outcome)) + " |")
    lines.append("")
    if failed:
        lines += ["### Failures", ""]
        for c in failed:
            lines.append(f"- **{_cell(c.name)}**: {c.details or c.summary}".replace("\n", "  \n  "))
        lines.append("")
    for p in v.pairs:
        if not any(mc.points for mc in p.metrics.values()) and not p.times:
            continue
        lines += [f"<details><summary>{p.name}: per-rate-point deltas and timing "
                  f"({len(p.images) or 'average curves'}{' images' if p.images else ''})</summary>", ""]
        for m, mc in p.metrics.items():
            avg = f"{mc.bd_rate.value:+.2f}%" if mc.bd_rate.ok else f"n/a ({mc.bd_rate.reason})"
            # the average curves hold only the images complete on both sides: say so when that is fewer
            over = (f" (average curves over {mc.n_images} of {len(p.images)} images)"
                    if p.images and mc.n_images < len(p.images) else "")
            lines += [f"**{m}**{over}: BD-rate on average curves {avg}, BD-{m} "
                      + (f"{mc.bd_metric.value:+.3f}" if mc.bd_metric.ok else "n/a"), ""]
            if mc.points:
                lines += [f"| {mc.points[0].rate_param} | bpp baseline | bpp candidate | Δ bpp | {m} baseline | "
                          f"{m} candidate | Δ {m} |", "|---:|---:|---:|---:|---:|---:|---:|"]
                for d in mc.points:
                    lines.append(f"| {d.quality:g} | {d.bpp_baseline:.4f} | {d.bpp_candidate:.4f} | "
                                 f"{d.bpp_change_pct:+.2f}% | {d.metric_baseline:.3f} | {d.metric_candidate:.3f} | "
                                 f"{d.metric_delta:+.3f} |")
                lines.append("")
        times = [t for t in p.times.values() if math.isfinite(t.ratio)]
        if times:
            lines += ["| time | baseline s/job | candidate s/job | ratio | 95% CI |", "|---|---:|---:|---:|---|"]
            for t in times:
                ci = f"[{t.ci_low:.2f}, {t.ci_high:.2f}]" if math.isfinite(t.ci_low) else ""
                lines.append(f"| {t.kind} | {t.baseline_s:.4g} | {t.candidate_s:.4g} | x{t.ratio:.2f} | {ci} |")
            lines.append("")
        for n in p.notes:
            lines.append(f"- {n}")
        lines += ["</details>", ""]
    for n in v.notes:
        lines.append(f"> {n}")
    return "\n".join(lines).rstrip() + "\n"


def junit_xml(v: Verdict, suite: str = "lcbench") -> str:
    """JUnit XML: one testcase per check; failures as <failure>, uncomputable checks and bad input as <error>."""
    cases = v.checks
    failures = sum(c.status == "fail" for c in cases)
    errors = sum(c.status == "error" for c in cases) + (v.error is not None)
    tests = len(cases) + (v.error is not None)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    root = ET.Element("testsuites", name=suite, tests=str(tests), failures=str(failures), errors=str(errors))
    ts = ET.SubElement(root, "testsuite", name=f"{suite} compare", tests=str(tests), failures=str(failures),
                       errors=str(errors), skipped="0", timestamp=stamp)
    props = ET.SubElement(ts, "properties")
    th = v.thresholds
    for k, val in (("baseline", v.baseline), ("candidate", v.candidate), ("method", v.method),
                   ("max_bd_rate", th.max_bd_rate), ("max_slowdown", th.max_slowdown), ("fail_on", th.fail_on)):
        ET.SubElement(props, "property", name=k, value="" if val is None else str(val))
    if v.error is not None:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.input", name="inputs can be compared", time="0")
        ET.SubElement(tc, "error", message=v.error, type="bad input").text = v.error
    for c in cases:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{c.group}", name=c.name, time="0")
        if c.status == "fail":
            ET.SubElement(tc, "failure", message=c.summary, type=c.outcome or "failure").text = c.details or c.summary
        elif c.status == "error":
            ET.SubElement(tc, "error", message=c.summary, type=c.outcome or "error").text = c.details or c.summary
        ET.SubElement(tc, "system-out").text = c.summary
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def json_verdict(v: Verdict) -> str:
    return json.dumps(v.to_dict(), indent=2, allow_nan=False) + "\n"


def text_summary(v: Verdict) -> str:
    """Terminal lines: one per check, then the overall status."""
    if v.error is not None:
        return f"BAD INPUT: {v.error}\n"
    out = []
    for c in v.checks:
        out.append(f"{c.status.upper():5} {c.group}: {c.summary}")
    # notes say what was not compared or compared loosely: not only in --markdown/--json
    notes = [*v.notes, *(f"{p.name}: {n}" for p in v.pairs for n in p.notes)]
    out += [f"note: {n}" for n in dict.fromkeys(notes)]
    n_fail = sum(not c.passed for c in v.checks)
    out.append(f"\n{'PASS' if v.passed else 'FAIL'}: {len(v.checks) - n_fail}/{len(v.checks)} checks passed "
               f"(baseline {v.baseline}, candidate {v.candidate})")
    return "\n".join(out) + "\n"


def write_outputs(v: Verdict, markdown_path: str | Path | None = None, junit_path: str | Path | None = None,
                  json_path: str | Path | None = None) -> list[Path]:
    """Write the requested files (parent folders created); returns the paths written."""
    written = []
    for path, render in ((markdown_path, markdown), (junit_path, junit_xml), (json_path, json_verdict)):
        if path is None:
            continue
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render(v), encoding="utf-8")
        written.append(p)
    return written
