"""``lcbench check`` configuration validation: every wrong type or value is a CheckConfigError that
names the file and the key (exit 2 from the CLI, no traceback), found before the benchmark runs."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from PIL import Image

from lcbench.check import CheckConfigError, load_config, parse_config
from lcbench.cli import main
from support import photo


def base_doc(**top) -> dict:
    doc = {"dataset": "imgs", "codecs": ["jpeg"], "baseline": {"path": "baseline"}}
    doc.update(top)
    return doc


def parse(doc: dict, tmp_path: Path):
    return parse_config(doc, tmp_path, "cfg.toml")


@pytest.mark.parametrize("doc, message", [
    (base_doc(compat={"devices": [[1]]}), r"cfg\.toml: compat\.devices must be"),
    (base_doc(compat={"devices": ["tpu"]}), r"compat\.devices must be"),
    (base_doc(compat={"images": -3}), r"compat\.images must be a positive integer.*-3"),
    (base_doc(compat={"images": 0}), r"compat\.images must be a positive integer"),
    (base_doc(compat={"images": True}), r"compat\.images must be a positive integer"),
    (base_doc(compat={"bitstreams": 1}), r"compat\.bitstreams must be true, false or \"auto\", got 1"),
    (base_doc(compat={"bitstreams": 0}), r"compat\.bitstreams must be"),
    (base_doc(compat={"determinism": 1}), r"compat\.determinism must be"),
    (base_doc(compat={"determinism": [1]}), r"compat\.determinism must be a non-empty list"),
    (base_doc(run={"save_bitstreams": 1}), r"run\.save_bitstreams must be true or false, got 1"),
    (base_doc(run={"save_decoded": "yes"}), r"run\.save_decoded must be true or false"),
    (base_doc(run={"jobs": -100}), r"run\.jobs must be a positive integer"),
    (base_doc(run={"jobs": 0}), r"run\.jobs must be a positive integer"),
    (base_doc(run={"jobs": "2"}), r"run\.jobs must be"),
    (base_doc(run={"device": ["cpu"]}), r"run\.device must be"),
    (base_doc(run={"dir": 3}), r"run\.dir must be a path string"),
    (base_doc(metrics=[1, 2]), r"metrics must be a non-empty list of metric columns"),
    (base_doc(codecs=["jpeg", 3]), r"codecs must be a non-empty list"),
    (base_doc(plugins=[1]), r"plugins must be a non-empty list of plugin file paths"),
    (base_doc(plugins=7), r"plugins must be"),
    (base_doc(images=5), r"images must be a file-name pattern"),
    (base_doc(max_images=0), r"max_images must be a positive integer"),
    (base_doc(rate_points={"jpg": [20, 40, 60, 80]}), r"rate_points\.jpg: 'jpg' is not one of the configured codecs"),
    (base_doc(rate_points=[20, "x"]), r"rate_points: expected a list of numbers"),
    (base_doc(thresholds={"bootstrap": -1}), r"thresholds\.bootstrap must be an integer of at least 100"),
    (base_doc(thresholds={"bootstrap": 2.5}), r"thresholds\.bootstrap must be"),
    (base_doc(thresholds={"max_bd_rate": "1"}), r"thresholds\.max_bd_rate must be a number"),
    (base_doc(thresholds={"max_slowdown": True}), r"thresholds\.max_slowdown must be a number"),
    (base_doc(thresholds={"fail_on": 5}), r"thresholds\.fail_on must be"),
    (base_doc(thresholds={"method": ["pchip"]}), r"thresholds\.method must be"),
    (base_doc(baseline={"path": "baseline", "pairs": [1]}), r"baseline\.pairs must be a list of 'old:new' strings"),
    (base_doc(baseline={"path": "baseline", "pairs": {"jpeg": 2}}), r"baseline\.pairs must be"),
    (base_doc(baseline={"path": "baseline", "pairs": ["a:b:c"]}), r"baseline\.pairs: --pair 'a:b:c'"),
    (base_doc(outputs={"json": 1}), r"outputs\.json must be a path string"),
    (base_doc(compat=[1]), r"\[compat\] must be a table"),
])
def test_wrong_types_and_values_name_file_and_key(tmp_path, doc, message):
    with pytest.raises(CheckConfigError, match=message):
        parse(doc, tmp_path)


def test_valid_values_still_parse(tmp_path):
    cfg = parse(base_doc(codecs=["jpeg:subsampling=444", "bicubic-x2+webp:method=4"],
                         rate_points={"jpeg": [10, 20, 30, 40], "bicubic-x2+webp:method=4": [50, 60, 70, 80]},
                         plugins=["a.py", "b.py"],
                         compat={"images": 2, "devices": ["cpu"], "bitstreams": False, "determinism": ["jpeg"]},
                         run={"jobs": -1, "save_bitstreams": False}), tmp_path)
    assert cfg.codec_rates == {"jpeg": (10.0, 20.0, 30.0, 40.0), "bicubic-x2+webp:method=4": (50.0, 60.0, 70.0, 80.0)}
    assert cfg.plugins == [str(tmp_path / "a.py"), str(tmp_path / "b.py")]
    assert (cfg.determinism_images, cfg.determinism_devices, cfg.bitstreams, cfg.jobs) == (2, ["cpu"], False, -1)
    assert cfg.save_bitstreams is False and cfg.determinism == ["jpeg"]


def test_plugins_as_one_string_is_one_path_not_characters(tmp_path):
    cfg = parse(base_doc(plugins="my,plugin.py"), tmp_path)
    assert cfg.plugins == [str(tmp_path / "my,plugin.py")]


def test_non_utf8_config_names_the_file(tmp_path):
    p = tmp_path / "lcbench-check.toml"
    p.write_bytes(b"\xff\xfedataset = 'x'\n")
    with pytest.raises(CheckConfigError, match=r"lcbench-check\.toml: not UTF-8 text \(byte 0xff at offset 0\)"):
        load_config(p)


def test_cli_exit_2_without_traceback_on_nested_devices(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text('dataset = "imgs"\ncodecs = ["jpeg"]\n[baseline]\npath = "b"\n[compat]\ndevices = [[1]]\n')
    assert main(["check", str(p)]) == 2
    err = capsys.readouterr().err
    assert "c.toml: compat.devices must be" in err and "Traceback" not in err


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(photo("astronaut", (64, 64))).save(imgs / "a.png")
    return tmp_path


def _config(root: Path, outputs: str) -> Path:
    p = root / "c.toml"
    p.write_text(textwrap.dedent(f"""\
        dataset = "imgs"
        codecs = ["jpeg"]
        rate_points = [20, 40, 60, 80]
        [baseline]
        path = "baseline.csv"
        [run]
        dir = "run"
        jobs = 1
        [outputs]
        {outputs}
        """))
    (root / "baseline.csv").write_text("not used: the check stops before reading the baseline\n")
    return p


def test_output_path_that_is_a_folder_fails_before_the_run(repo, capsys):
    (repo / "reports").mkdir()
    cfg = _config(repo, 'json = "reports"\nmarkdown = "out/summary.md"')
    assert main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"outputs.json (--json) {repo / 'reports'} is a folder; expected a file path" in err
    assert "Traceback" not in err
    assert not (repo / "run").exists()  # nothing ran
    assert "is a folder" in (repo / "out" / "summary.md").read_text()  # the valid report carries the error


def test_output_path_under_a_file_fails_before_the_run(repo, capsys):
    (repo / "afile").write_text("x")
    cfg = _config(repo, 'junit = "afile/junit.xml"')
    assert main(["check", str(cfg)]) == 2
    assert f"cannot create its folder, {repo / 'afile'} is a file" in capsys.readouterr().err
    assert not (repo / "run").exists()


def test_unknown_determinism_codec_fails_before_the_run(repo, capsys):
    cfg = _config(repo, "")
    cfg.write_text(cfg.read_text().replace("[outputs]\n", '[compat]\ndeterminism = ["nosuch"]\n'))
    assert main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "c.toml: compat.determinism: unknown codec 'nosuch'" in err
    assert not (repo / "run").exists()


@pytest.mark.parametrize("line, message", [
    ('metrics = ["psnr_rbg"]', "c.toml: metrics: 'psnr_rbg' is not a quality metric of these results; valid: psnr_rgb"),
    ('metrics = ["bpp"]', "c.toml: metrics: 'bpp' is not a quality metric"),
])
def test_unknown_metric_names_the_file_and_key_before_the_run(repo, capsys, line, message):
    """A misspelt metric failed only after the benchmark, as '--metric: ...', an option the user never gave."""
    cfg = _config(repo, "")
    cfg.write_text(line + "\n" + cfg.read_text())
    (repo / "baseline.csv").write_bytes((Path(__file__).parent / "data" / "kodak4_results.csv").read_bytes())
    assert main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert message in err and "--metric" not in err and "Traceback" not in err
    assert not (repo / "run").exists()  # nothing ran


def test_baseline_on_another_dataset_fails_before_the_run(repo, capsys):
    """'different datasets' was found by the comparison, after the whole benchmark had run."""
    cfg = _config(repo, "")
    (repo / "baseline.csv").write_bytes((Path(__file__).parent / "data" / "kodak4_results.csv").read_bytes())
    assert main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"c.toml: dataset '{repo / 'imgs'}' is 'imgs', but the baseline" in err and "is on kodak" in err
    assert not (repo / "run").exists()


def test_unknown_codec_names_the_file_before_the_run(repo, capsys):
    cfg = _config(repo, "")
    cfg.write_text(cfg.read_text().replace('codecs = ["jpeg"]', 'codecs = ["jpg"]'))
    data = (Path(__file__).parent / "data" / "kodak4_results.csv").read_text().replace(",kodak,", ",imgs,")
    (repo / "baseline.csv").write_text(data)
    assert main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "c.toml: codecs: " in err and "'jpg'" in err
    assert not (repo / "run").exists()


def test_pair_of_a_codec_the_baseline_lacks_names_the_file_before_the_run(repo, capsys):
    cfg = _config(repo, "")
    cfg.write_text(cfg.read_text().replace('path = "baseline.csv"', 'path = "baseline.csv"\npairs = ["jpg:jpeg"]'))
    (repo / "baseline.csv").write_bytes((Path(__file__).parent / "data" / "kodak4_results.csv").read_bytes())
    assert main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "c.toml: baseline.pairs jpg:jpeg: baseline" in err and "has no codec 'jpg'" in err
    assert not (repo / "run").exists()


# ------------------------------------------------------- a corrupt result cache (lcbench.result_cache)

@pytest.fixture
def fresh_warnings(monkeypatch):
    import lcbench.result_cache as rc

    monkeypatch.setattr(rc, "_warned", set(), raising=False)


def test_garbage_result_cache_warns_once_and_is_bypassed(tmp_path, capsys, fresh_warnings):
    from lcbench.result_cache import ResultCache

    db = tmp_path / "results.sqlite"
    db.write_text("junk\n")
    cache = ResultCache(db)
    assert not cache.enabled
    assert cache.get_many(["k"]) == {}
    cache.put_many([("k", {"bpp": 1.0})])
    img = tmp_path / "a.png"
    Image.fromarray(photo("astronaut", (16, 16))).save(img)
    assert cache.pixel_hash(img).startswith("16x16:")  # still computed, just not remembered
    cache.close()
    ResultCache(db).close()  # a second open in the same process: no second warning
    err = capsys.readouterr().err
    assert err.count("warning") == 1
    assert f"result cache {db} is unusable (DatabaseError: file is not a database)" in err
    assert f"rm {db}" in err
    assert db.read_text() == "junk\n"  # left as it is


def test_run_with_a_garbage_result_cache_completes(repo, capsys, fresh_warnings):
    (repo / "cache").mkdir(exist_ok=True)
    (repo / "cache" / "results.sqlite").write_text("junk\n")
    out = repo / "r"
    assert main(["run", "--codecs", "jpeg", "-q", "50", "--dataset", str(repo / "imgs"), "--out", str(out),
                 "--jobs", "1", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "1/1 jobs ok" in captured.out
    assert captured.err.count("result cache") == 1 and "Traceback" not in captured.err
    assert (out / "results.csv").read_text().count("\n") == 2  # header and the one job
