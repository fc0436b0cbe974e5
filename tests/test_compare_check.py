"""``lcbench check`` end to end with a real codec (JPEG via Pillow) on 3 small real photos, and the
bitstream-compatibility and determinism checks of ``lcbench.compat``."""
from __future__ import annotations

import json
import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import lcbench
from lcbench.check import load_config, run_check
from lcbench.cli import main
from lcbench.compat import check_bitstreams, determinism_check
from lcbench.results import read_results
from support import photo

RATES = [20, 40, 60, 80]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A model repository: 3 photos (>= 176 px so MS-SSIM is defined) and a baseline run of the last
    release with its bitstreams and decoded images stored."""
    root = tmp_path_factory.mktemp("repo")
    imgs = root / "imgs"
    imgs.mkdir()
    Image.fromarray(photo("astronaut", (176, 192))).save(imgs / "a.png")
    Image.fromarray(photo("coffee", (180, 200))).save(imgs / "b.png")
    Image.fromarray(photo("chelsea", (170, 210))).save(imgs / "c.png")
    lcbench.run("jpeg", imgs, out=root / "baseline", quality=RATES, jobs=1, save_bitstreams=True,
                save_decoded=True, raise_on_failure=True)
    return root


def write_config(root: Path, name: str, extra: str = "", baseline: str = "baseline", determinism: str = "false",
                 bitstreams: str = '"auto"') -> Path:
    cfg = root / f"{name}.toml"
    cfg.write_text(textwrap.dedent(f"""\
        dataset = "imgs"
        codecs = ["jpeg"]
        rate_points = {RATES}
        metrics = ["psnr_rgb", "ms_ssim_db"]
        {extra}

        [baseline]
        path = "{baseline}"

        [thresholds]
        max_bd_rate = 0.0
        max_slowdown = 20.0
        fail_on = "significant"

        [run]
        dir = "{name}/run"
        jobs = 1

        [compat]
        bitstreams = {bitstreams}
        determinism = {determinism}

        [outputs]
        markdown = "{name}/summary.md"
        junit = "{name}/junit.xml"
        json = "{name}/verdict.json"
        """))
    return cfg


def junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    return {c.get("name"): c for c in root.iter("testcase")}


def test_check_end_to_end_passes_with_bitstreams_and_determinism(workspace, capsys):
    cfg = write_config(workspace, "ok", determinism='["jpeg"]')
    assert main(["check", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "12 job(s) run, 0 reused" in out
    cases = junit_cases(workspace / "ok" / "junit.xml")
    assert sorted(cases) == sorted(["jpeg: BD-rate psnr_rgb", "jpeg: BD-rate ms_ssim_db", "jpeg: encode time",
                                    "jpeg: decode time", "jpeg: bitstream compatibility", "jpeg: determinism"])
    assert not any(c.findall("failure") or c.findall("error") for c in cases.values())
    v = json.loads((workspace / "ok" / "verdict.json").read_text())
    assert v["status"] == "pass"
    compat = next(c for c in v["checks"] if c["kind"] == "bitstream_compat")
    assert compat["data"]["same"] == 12 and compat["data"]["methods"] == ["pixels"]
    bd = [c for c in v["checks"] if c["kind"] == "bd_rate"]
    assert all(c["value"] == 0.0 and c["outcome"] == "no change" for c in bd)  # JPEG is deterministic
    md = (workspace / "ok" / "summary.md").read_text()
    assert "✅ lcbench regression check: passed" in md and "| 12/12 same |" in md
    # the candidate run keeps its bitstreams, so it can be the next release's baseline
    assert len(list((workspace / "ok" / "run" / "bitstreams" / "jpeg").glob("*@*.bin"))) == 12

    # a second check reuses the stored jobs
    config = load_config(cfg)
    config.determinism = False
    result = run_check(config)
    assert (result.jobs_run, result.jobs_reused) == (0, 12)
    assert result.verdict.passed


def test_check_fails_on_a_regression(workspace):
    """The baseline is made 5% cheaper than what this release measures: the candidate is +5.26% worse."""
    better = workspace / "better_baseline"
    shutil.copytree(workspace / "baseline", better, ignore=shutil.ignore_patterns("bitstreams", "decoded"))
    df = pd.read_csv(better / "results.csv")
    df["bytes"], df["bpp"] = df["bytes"] * 0.95, df["bpp"] * 0.95
    df.to_csv(better / "results.csv", index=False)
    cfg = write_config(workspace, "worse", baseline="better_baseline")
    assert main(["check", str(cfg)]) == 1
    cases = junit_cases(workspace / "worse" / "junit.xml")
    (failure,) = cases["jpeg: BD-rate psnr_rgb"].findall("failure")
    assert "+5.26%" in failure.get("message")  # 1/0.95 - 1
    v = json.loads((workspace / "worse" / "verdict.json").read_text())
    assert v["checks"][0]["value"] == pytest.approx(100 * (1 / 0.95 - 1), abs=1e-6)
    assert "bitstream compatibility not checked" in " ".join(v["notes"])


def test_check_with_missing_images_is_bad_input(workspace, capsys):
    cfg = write_config(workspace, "missing", extra="max_images = 2")
    assert main(["check", str(cfg)]) == 2
    assert "is missing 1 image(s) the baseline has: c" in capsys.readouterr().err
    v = json.loads((workspace / "missing" / "verdict.json").read_text())
    assert v["status"] == "error" and "image(s) the baseline has: c" in v["error"]
    assert ET.parse(workspace / "missing" / "junit.xml").getroot().get("errors") == "1"


def test_check_config_errors_are_bad_input(workspace, tmp_path, capsys):
    cfg = write_config(workspace, "typo", extra='max_image = 2')
    assert main(["check", str(cfg)]) == 2
    assert "unknown key(s) ['max_image'] in the top level" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "nope.toml")]) == 2
    assert "no check configuration at" in capsys.readouterr().err
    required = write_config(workspace, "nobits", baseline="nowhere", bitstreams="true")
    assert main(["check", str(required)]) == 2
    assert "nowhere: no such file or directory" in capsys.readouterr().err


def test_bitstreams_decoding_to_other_pixels_fail(workspace):
    """A changed decoder (simulated by a baseline decoded image differing in one pixel) is caught
    pixel for pixel and named; without decoded images the recorded metrics are the reference."""
    base = workspace / "baseline"
    frame = read_results(base)
    images = {p.stem: p for p in (workspace / "imgs").glob("*.png")}
    changed = workspace / "changed"
    shutil.copytree(base, changed)
    png = changed / "decoded" / "jpeg" / "b@40.png"
    px = np.asarray(Image.open(png)).copy()
    px[5, 7, 1] ^= 1
    Image.fromarray(px).save(png)
    rep = check_bitstreams(changed, frame, "jpeg", "jpeg", images)
    assert (rep.count("same"), rep.count("differs")) == (11, 1)
    (bad,) = [o for o in rep.outcomes if o.status == "differs"]
    assert (bad.image, bad.quality, bad.method, bad.detail) == ("b", 40.0, "pixels", "pixels differing: 1 (max |diff| 1)")
    check = rep.to_check("jpeg")
    assert check.status == "fail" and "b@40: differs" in check.details

    # metric reference: no decoded images, one recorded MSE that the decode does not reproduce
    shutil.rmtree(changed / "decoded")
    tampered = frame.copy()
    row = (tampered["image"] == "c") & (tampered["quality"] == 60)
    tampered.loc[row, "mse_rgb"] += 1 / (3 * 170 * 210)  # one more unit of squared error
    rep = check_bitstreams(changed, tampered, "jpeg", "jpeg", images)
    assert (rep.count("same"), rep.count("differs")) == (11, 1)
    (bad,) = [o for o in rep.outcomes if o.status == "differs"]
    assert (bad.image, bad.quality, bad.method) == ("c", 60.0, "metrics") and "mse_rgb" in bad.detail

    # a baseline with neither decoded images nor reference metrics (an older results.csv): nothing to
    # compare with is not "same pixels" (the check passed, "checked by metrics", having compared nothing)
    bare = frame.drop(columns=["mse_rgb", "mse_y", "ssim"])
    rep = check_bitstreams(changed, bare, "jpeg", "jpeg", images)
    assert rep.count("error") == 12 and rep.count("same") == 0
    assert "no reference" in rep.outcomes[0].detail and rep.to_check("jpeg").status != "pass"

    # a stored bitstream damaged in place (same length) does not decode to the baseline's pixels
    bits = changed / "bitstreams" / "jpeg" / "a@80.bin"
    data = bytearray(bits.read_bytes())
    data[len(data) // 2:-2] = bytes(len(data) // 2 - 2)
    bits.write_bytes(bytes(data))
    rep = check_bitstreams(changed, frame, "jpeg", "jpeg", images)
    (bad,) = [o for o in rep.outcomes if o.status != "same"]
    assert (bad.image, bad.quality) == ("a", 80.0) and bad.status in ("differs", "error")
    assert rep.to_check("jpeg").status == "fail"


FLAKY_PLUGIN = '''
import os
import numpy as np
from lcbench.registry import register_codec
from lcbench_codecs.pillow_codecs import JPEG


@register_codec
class FlakyJpeg(JPEG):
    """JPEG with unseeded randomness in both directions, as a buggy learned codec might have."""
    name = "flaky_jpeg"

    def encode(self, image, rate):
        return super().encode(image, rate) + os.urandom(16)  # trailing bytes after EOI

    def decode(self, bitstream):
        out = super().decode(bitstream).copy()
        out[0, :8, 0] = np.frombuffer(os.urandom(8), dtype=np.uint8)
        return out
'''


def test_determinism_check_catches_unseeded_randomness(workspace, tmp_path):
    plugin = tmp_path / "flaky.py"
    plugin.write_text(FLAKY_PLUGIN)
    rep = determinism_check("flaky_jpeg", [workspace / "imgs" / "a.png"], [50], ["cpu"], plugins=[str(plugin)])
    assert not rep.passed and rep.n_roundtrips == 1
    assert "a.png@50 on cpu: two runs encode different bitstreams" in rep.problems
    assert "a.png@50 on cpu: two runs decode different pixels" in rep.problems
    assert "a.png@50: decoding the same bitstream again on cpu gives different pixels" in rep.problems
    assert rep.to_check("flaky_jpeg").outcome == "non-deterministic"


LEAKY_PLUGIN = '''
import hashlib, zlib
import numpy as np
from lcbench import Codec, register_codec

@register_codec
class LeakyShape(Codec):
    """Leaves the shape out of the bitstream: decode reads what encode left on the instance."""
    name = "leaky_shape"
    default_rates = (6,)
    rate_range = (0, 9)
    rate_is_integer = True
    def version(self): return "1"
    def encode(self, image, rate):
        self._shape = image.shape
        return zlib.compress(image.tobytes(), int(rate))
    def decode(self, data):
        return np.frombuffer(zlib.decompress(data), np.uint8).reshape(self._shape)

_SEEN = {}
@register_codec
class Oracle(Codec):
    """A 4-byte 'bitstream': the decoder returns the image its encoder kept in memory."""
    name = "oracle"
    default_rates = (1,)
    rate_range = (1, 1)
    def version(self): return "1"
    def encode(self, image, rate):
        key = hashlib.sha256(image.tobytes()).digest()[:4]
        _SEEN[key] = image.copy()
        return key
    def decode(self, data):
        return _SEEN[bytes(data)]
'''


@pytest.mark.parametrize("spec", ["leaky_shape", "oracle"])
def test_determinism_check_catches_a_decoder_that_needs_its_encoders_memory(workspace, tmp_path, spec):
    """The second process used to encode every image before decoding the first one's bitstreams, so
    a decoder reading the shape (or the pixels) its encoder left in memory passed; 'oracle' scores
    PSNR inf at 0.0007 bpp in a run."""
    plugin = tmp_path / "leaky.py"
    plugin.write_text(LEAKY_PLUGIN)
    rate = 6 if spec == "leaky_shape" else 1
    rep = determinism_check(spec, [workspace / "imgs" / "a.png"], [rate], ["cpu"], plugins=[str(plugin)])
    assert not rep.passed
    (problem,) = rep.problems
    assert problem.startswith(f"a.png@{rate}: the bitstream encoded on cpu does not decode on cpu in a process "
                              "that has encoded nothing (")
    assert problem.endswith("): the decoder needs state outside the bitstream")


def test_documented_examples_are_valid_and_in_sync():
    """docs/examples parse, and docs/ci.md shows exactly those files."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    cfg = load_config(docs / "examples" / "lcbench-check.toml")
    assert cfg.codecs == ["mycodec"] and cfg.rates == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert cfg.thresholds.max_slowdown == 1.25 and cfg.bitstreams is True and cfg.determinism == "learned"
    assert cfg.junit == docs / "examples" / "lcbench-check" / "junit.xml"
    guide = (docs / "ci.md").read_text()
    for name, lang in (("lcbench-check.toml", "toml"), ("lcbench-check.yml", "yaml")):
        text = (docs / "examples" / name).read_text()
        assert f"```{lang}\n{text.rstrip()}\n```" in guide, name
    yaml = pytest.importorskip("yaml")
    steps = yaml.safe_load((docs / "examples" / "lcbench-check.yml").read_text())["jobs"]["check"]["steps"]
    run = " ".join(s.get("run", "") for s in steps)
    assert "lcbench check lcbench-check.toml" in run
    # the workflow publishes the files the config writes
    assert any(s.get("with", {}).get("report_paths") == "lcbench-check/junit.xml" for s in steps)
    assert any(s.get("with", {}).get("path") == "lcbench-check/summary.md" for s in steps)


def test_metric_reference_tolerates_ssim_kernel_noise_but_not_pixel_changes(workspace, tmp_path):
    """No decoded images stored: the recorded metrics are the reference. A baseline SSIM off by 2e-9 (what
    METRICS_VERSION 3 -> 4 did to SSIM, with the same bytes and MSE) is the same decode; SSIM off by 1e-4,
    or one more unit of squared error in the MSE, is not."""
    base = workspace / "baseline"
    frame = read_results(base)
    images = {p.stem: p for p in (workspace / "imgs").glob("*.png")}
    run = tmp_path / "nodecoded"
    shutil.copytree(base, run)
    shutil.rmtree(run / "decoded")
    old_kernel = frame.copy()
    old_kernel["ssim"] = old_kernel["ssim"] + 2e-9
    rep = check_bitstreams(run, old_kernel, "jpeg", "jpeg", images)
    assert rep.count("same") == 12 and rep.count("differs") == 0, [o.detail for o in rep.outcomes]
    assert rep.to_check("jpeg").status == "pass"

    moved = frame.copy()
    row = (moved["image"] == "a") & (moved["quality"] == 20)
    moved.loc[row, "ssim"] += 1e-4
    rep = check_bitstreams(run, moved, "jpeg", "jpeg", images)
    (bad,) = [o for o in rep.outcomes if o.status == "differs"]
    assert (bad.image, bad.quality) == ("a", 20.0) and bad.detail.startswith("ssim ")
    assert "differs by more than 1e-06" in bad.detail

    one_unit = old_kernel.copy()  # SSIM noise everywhere, plus one squared-error unit on one job
    row = (one_unit["image"] == "b") & (one_unit["quality"] == 80)
    one_unit.loc[row, "mse_y"] += 1 / (180 * 200)  # b is 180 x 200 px
    rep = check_bitstreams(run, one_unit, "jpeg", "jpeg", images)
    (bad,) = [o for o in rep.outcomes if o.status == "differs"]
    assert (bad.image, bad.quality) == ("b", 80.0) and bad.detail.startswith("mse_y ")


def test_failing_codec_without_a_baseline_counterpart_fails_the_gate(workspace, capsys):
    # a configured codec whose every job fails used to pass the gate with only a note
    plugin = workspace / "broken_plugin.py"
    plugin.write_text("from lcbench import Codec, register_codec\n\n@register_codec\nclass Broken(Codec):\n"
                      "    name = 'broken'\n    def version(self): return '1'\n"
                      "    def encode(self, image, rate): raise RuntimeError('cannot encode')\n"
                      "    def decode(self, data): return None\n")
    cfg = write_config(workspace, "broken", extra=f'plugins = ["{plugin}"]')
    cfg.write_text(cfg.read_text().replace('codecs = ["jpeg"]', 'codecs = ["jpeg", "broken"]'))
    assert main(["check", str(cfg)]) == 1
    v = json.loads((workspace / "broken" / "verdict.json").read_text())
    jobs = next(c for c in v["checks"] if c["name"] == "broken: jobs")
    assert jobs["status"] == "fail" and jobs["value"] == 12 and "cannot encode" in jobs["details"]


def test_bootstrap_below_the_minimum_is_a_config_error_before_the_run(workspace, capsys):
    cfg = write_config(workspace, "boot50")
    cfg.write_text(cfg.read_text().replace('fail_on = "significant"', 'fail_on = "significant"\nbootstrap = 50'))
    assert main(["check", str(cfg)]) == 2
    assert "thresholds.bootstrap must be an integer of at least 100" in capsys.readouterr().err
    assert not (workspace / "boot50" / "run").exists()


def test_missing_bitstreams_fail_when_required_and_are_named_when_auto(workspace, capsys):
    """A baseline that stored only some bitstreams used to pass `bitstreams = true` ("2/12 ...; 10 not
    stored", exit 0)."""
    partial = workspace / "partial_baseline"
    shutil.copytree(workspace / "baseline", partial)
    for path in (partial / "bitstreams" / "jpeg").glob("*.bin"):
        if path.name not in ("a@20.bin", "b@80.bin"):
            path.unlink()
    images = {p.stem: p for p in (workspace / "imgs").glob("*.png")}
    rep = check_bitstreams(partial, read_results(partial), "jpeg", "jpeg", images)
    assert (rep.count("same"), rep.count("missing")) == (2, 10)
    required = rep.to_check("jpeg", required=True)
    assert required.status == "fail" and required.outcome == "10/12 bitstreams not stored"
    assert "10 of 12 not stored in the baseline (a@40, a@60, a@80, b@20, b@40 ... (10 in all))" in required.summary
    assert required.details.count(": missing: no ") == 10 and required.data["missing_jobs"][0] == "a@40"
    auto = rep.to_check("jpeg", required=False)
    assert auto.status == "pass" and "so NOT checked" in auto.summary
    assert auto.outcome == "compatible (10/12 not stored, not checked)"

    cfg = write_config(workspace, "partial_true", baseline="partial_baseline", bitstreams="true")
    assert main(["check", str(cfg)]) == 1
    v = json.loads((workspace / "partial_true" / "verdict.json").read_text())
    compat = next(c for c in v["checks"] if c["kind"] == "bitstream_compat")
    assert compat["status"] == "fail" and compat["data"]["missing"] == 10
    cfg = write_config(workspace, "partial_auto", baseline="partial_baseline", bitstreams='"auto"')
    assert main(["check", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "10 of 12 baseline bitstreams not stored, so not checked" in out
    v = json.loads((workspace / "partial_auto" / "verdict.json").read_text())
    assert any("10 of 12 baseline bitstreams not stored" in n for n in v["notes"])


def test_check_with_a_baseline_codec_the_config_does_not_run_is_bad_input(workspace, capsys):
    """As in `lcbench compare`: a baseline codec with no candidate rows is not silently skipped; pairs
    choose the codecs compared."""
    two = workspace / "two_codec_baseline"
    shutil.copytree(workspace / "baseline", two, ignore=shutil.ignore_patterns("bitstreams", "decoded"))
    df = pd.read_csv(two / "results.csv")
    pd.concat([df, df.assign(codec="webp")]).to_csv(two / "results.csv", index=False)
    cfg = write_config(workspace, "two", baseline="two_codec_baseline")
    assert main(["check", str(cfg)]) == 2
    assert "has no rows for 1 codec(s) the baseline" in capsys.readouterr().err
    cfg.write_text(cfg.read_text().replace('path = "two_codec_baseline"',
                                           'path = "two_codec_baseline"\npairs = ["jpeg:jpeg"]'))
    assert main(["check", str(cfg)]) == 0


def test_relative_paths_in_codec_specs_are_read_from_the_config_folder(workspace, tmp_path, monkeypatch):
    """`autoencoder:weights_dir=weights` was read from the working directory: run from elsewhere,
    the check found no weights (or, worse, benchmarked another folder's weights under that label)."""
    import shutil

    from lcbench.registry import create_codec

    repo = tmp_path / "repo"
    shutil.copytree(workspace / "imgs", repo / "imgs")
    shutil.copytree(workspace / "baseline", repo / "baseline")
    (repo / "weights").mkdir()
    shipped = Path(lcbench.registry.codecs.get("autoencoder").shipped_weights_dir) / "autoencoder_1.pt"
    shutil.copy(shipped, repo / "weights" / "autoencoder_1.pt")
    spec = "autoencoder:weights_dir=weights"
    cfg = write_config(repo, "rel", extra=f'codecs = ["jpeg", "{spec}"]\n[rate_points]\njpeg = {RATES}\n'
                                          f'"{spec}" = [1]').read_text()
    # `codecs` was written twice above: keep the second line (TOML refuses duplicate keys)
    cfg = cfg.replace('codecs = ["jpeg"]\n', "", 1).replace("rate_points = [20, 40, 60, 80]\n", "", 1)
    cfg = cfg.replace('path = "baseline"', 'path = "baseline"\npairs = ["jpeg:jpeg"]')
    (repo / "rel.toml").write_text(cfg)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "weights").mkdir(parents=True)  # an empty folder of the same name must not be used
    monkeypatch.chdir(elsewhere)
    assert main(["check", str(repo / "rel.toml")]) == 0
    df = read_results(repo / "rel" / "run")
    version = df[df.codec == spec].codec_version.unique().tolist()
    assert version == [create_codec(f"autoencoder:weights_dir={repo / 'weights'}").version() + " on cpu"]
    assert Path.cwd() == elsewhere  # restored


def test_a_bad_codec_option_in_the_config_names_the_file(workspace, capsys):
    """`autoencoder:weight_dir=...` (a typo) said only 'bad options for codec', not which file."""
    cfg = write_config(workspace, "typo", extra='codecs = ["jpeg:optimise=true"]')
    text = cfg.read_text().replace('codecs = ["jpeg"]\n', "", 1)
    cfg.write_text(text)
    assert main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:" in err and "optimise" in err
