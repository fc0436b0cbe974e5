"""lcbench.run() from Python: the same run as the CLI, its arguments checked and named as arguments.

Each case here was a bug: a codec defined in the calling script crashed the run in worker
processes (or, with a warm cache, did not: it looked flaky), no way to load a plugin file,
quality= dropped without a word beside target_bpp=, a rate point given twice run and counted
twice, CLI option names (or a bare errno) in the API's errors, `lcbench.bdrate` missing after
`import lcbench`.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lcbench
from lcbench import Codec, register_codec
from lcbench.store import read_records


def _register_in_process_codec() -> None:
    """A codec defined in this (test) process, as in a script or notebook: worker processes do not
    have it. Registered when the test runs, not when the module is collected, so tests that go
    over every registered codec do not meet it."""
    from lcbench.registry import codecs

    if "api_test_inproc_raw" in codecs:
        return

    @register_codec
    class InProcessRaw(Codec):
        name = "api_test_inproc_raw"
        default_rates = (0,)

        def version(self) -> str:
            return "1"

        def encode(self, image: np.ndarray, rate: float) -> bytes:
            h, w, _ = image.shape
            return h.to_bytes(4, "big") + w.to_bytes(4, "big") + image.tobytes()

        def decode(self, data: bytes) -> np.ndarray:
            h, w = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
            return np.frombuffer(data[8:8 + h * w * 3], np.uint8).reshape(h, w, 3)


def test_a_codec_defined_in_the_calling_process_is_refused_with_workers_and_runs_with_jobs_1(image_folder, tmp_path):
    """jobs > 1 crashed with joblib's traceback "unknown codec" from a worker process."""
    _register_in_process_codec()
    for spec in ("api_test_inproc_raw", "bicubic-x2+api_test_inproc_raw"):
        with pytest.raises(ValueError, match=rf"codec {re.escape(repr(spec))}.*InProcessRaw is defined in this process.*jobs=2"
                                             r".*pass jobs=1.*plugins=\["):
            lcbench.run([spec], image_folder, out=tmp_path / "par", jobs=2, max_images=2)
    assert not (tmp_path / "par").exists()  # refused before anything ran
    df = lcbench.run(["api_test_inproc_raw"], image_folder, out=tmp_path / "one", jobs=1, max_images=1)
    assert len(df) == 1 and not df.error.fillna("").any()


SCRIPT = '''
import sys
import numpy as np
import lcbench
from lcbench import Codec, register_codec

@register_codec
class ScriptRaw(Codec):
    name = "script_raw"
    default_rates = (0,)
    def version(self): return "1"
    def encode(self, image, rate):
        h, w, _ = image.shape
        return h.to_bytes(4, "big") + w.to_bytes(4, "big") + image.tobytes()
    def decode(self, data):
        h, w = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
        return np.frombuffer(data[8:], np.uint8).reshape(h, w, 3)

try:
    lcbench.run(["script_raw"], sys.argv[1], out=sys.argv[2] + "/par", jobs=2, max_images=2)
except ValueError as exc:
    print("refused:", exc)
df = lcbench.run(["script_raw"], sys.argv[1], out=sys.argv[2] + "/one", jobs=1, max_images=1)
print("version:", df.codec_version.iloc[0], "errors:", int(df.error.fillna("").astype(bool).sum()))
'''


def test_a_codec_defined_in_a_script_is_refused_with_workers_and_its_source_versions_it(image_folder, tmp_path):
    """The audit's script: `python script.py` with jobs > 1 crashed in the workers; with jobs=1 the
    version was version() alone, so an edited class was served the old code's results."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(image_folder), str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refused: codec 'script_raw': ScriptRaw is defined in this process (script.py:")
    assert "pass jobs=1" in lines[0] and not (tmp_path / "par").exists()
    assert re.fullmatch(r"version: 1 source-sha256:[0-9a-f]{12} errors: 0", lines[1])


EDITABLE = '''
import numpy as np
from lcbench import Codec, register_codec


def _padding():
    return {padding!r}


@register_codec
class Editable(Codec):
    name = "{name}"
    default_rates = (0,)
    def version(self): return "1"  # never changed by its author
    def encode(self, image, rate):
        h, w, _ = image.shape
        return h.to_bytes(4, "big") + w.to_bytes(4, "big") + image.tobytes() + _padding()
    def decode(self, data):
        h, w = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
        return np.frombuffer(data[8:8 + h * w * 3], np.uint8).reshape(h, w, 3)
'''


def _import(path: Path, module: str) -> None:
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    spec.loader.exec_module(mod)


def test_editing_a_codec_of_the_calling_process_is_not_served_its_old_results(image_folder, tmp_path):
    """Its version was version() alone: after an edit (here of a helper it calls) the same run
    reused the old code's results, from the run directory and from the result cache."""
    path = tmp_path / "editable.py"
    path.write_text(EDITABLE.format(padding=b"", name="api_test_editable"))
    _import(path, "api_test_editable_mod")
    first = lcbench.run(["api_test_editable"], image_folder, out=tmp_path / "r", jobs=1, max_images=1)
    path.write_text(EDITABLE.format(padding=b"\0" * 7, name="api_test_editable"))  # the same class source
    _import(path, "api_test_editable_mod")
    second = lcbench.run(["api_test_editable"], image_folder, out=tmp_path / "r", jobs=1, max_images=1)
    assert second.attrs["lcbench"]["reused"] == 0 and second.attrs["lcbench"]["from_cache"] == 0
    assert second.bytes.iloc[0] == first.bytes.iloc[0] + 7
    assert second.codec_version.iloc[0] != first.codec_version.iloc[0]


PLUGIN = '''
import numpy as np
from lcbench import Codec, register_codec

@register_codec
class PluginRaw(Codec):
    name = "api_test_plugin_raw"
    default_rates = (0,)
    def version(self): return "1"
    def encode(self, image, rate):
        h, w, _ = image.shape
        return h.to_bytes(4, "big") + w.to_bytes(4, "big") + image.tobytes()
    def decode(self, data):
        h, w = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
        return np.frombuffer(data[8:], np.uint8).reshape(h, w, 3)
'''


def test_plugins_argument_loads_plugin_files_that_run_in_worker_processes(image_folder, tmp_path):
    plugin = tmp_path / "api_plugin.py"
    plugin.write_text(PLUGIN)
    out = tmp_path / "r"
    df = lcbench.run(["api_test_plugin_raw"], image_folder, out=out, plugins=[plugin], jobs=2, max_images=2)
    assert len(df) == 2 and not df.error.fillna("").any()
    assert df.codec_version.str.startswith("1 plugin-sha256:").all()
    assert df.attrs["lcbench"]["planned"] == 2 and len(read_records(out)) == 2


def test_quality_and_target_bpp_together_are_refused(image_folder, tmp_path):
    """quality= was dropped without a word (the CLI refuses -q with --target-bpp)."""
    with pytest.raises(ValueError, match="target_bpp=.*quality="):
        lcbench.run(["jpeg"], image_folder, out=tmp_path / "r", quality=[50], target_bpp=[0.5], jobs=1)
    with pytest.raises(ValueError, match="target_bpp=0: a target rate must be a positive"):
        lcbench.run(["jpeg"], image_folder, out=tmp_path / "r", target_bpp=[0.5, 0], jobs=1)
    assert not (tmp_path / "r").exists()


def test_a_rate_point_given_twice_is_one_job(image_folder, tmp_path, monkeypatch):
    """quality=[10, 10, 20] planned 3 jobs and reported 1 of them reused in a new run directory;
    target_bpp=[0.5, 0.5] encoded twice for one row."""
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))  # counts must not depend on earlier tests
    out = tmp_path / "q"
    df = lcbench.run(["jpeg"], image_folder, out=out, quality=[10, 10.0, 20], jobs=1, max_images=1)
    assert sorted(df.quality) == [10, 20]
    assert {k: df.attrs["lcbench"][k] for k in ("planned", "reused", "from_cache")} == \
        {"planned": 2, "reused": 0, "from_cache": 0}
    assert len(read_records(out)) == 2
    out = tmp_path / "t"
    df = lcbench.run(["jpeg"], image_folder, out=out, target_bpp=[0.5, 0.5], jobs=1, max_images=1)
    assert len(df) == 1 and df.attrs["lcbench"]["planned"] == 1 and len(read_records(out)) == 1


def test_errors_name_the_api_arguments(image_folder, tmp_path):
    """out= a file was a bare "[Errno 17] File exists"; others named --max-images, --device."""
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for kwargs, message in (({"out": a_file}, r"out='.*file.txt': is a file"),
                            ({"out": a_file / "run"}, r"out='.*run': lies under the file"),
                            ({"max_images": 0}, r"max_images=0: must be a whole number >= 1"),
                            ({"device": "tpu"}, r"device='tpu': not a torch device")):
        kwargs = {"out": tmp_path / "r", **kwargs}
        with pytest.raises(ValueError, match=message) as info:
            lcbench.run(["jpeg"], image_folder, quality=[50], jobs=1, **kwargs)
        assert "--" not in str(info.value)
    assert not (tmp_path / "r").exists()


def test_documented_submodules_are_attributes_of_the_package():
    """The README's `lcbench.bdrate.bd_rate(...)` raised AttributeError: bdrate after `import lcbench`."""
    code = ("import lcbench; print(lcbench.bdrate.bd_rate.__name__, lcbench.tools.CommandLineCodec.__name__); "
            "print(hasattr(lcbench, 'no_such_module'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["bd_rate", "CommandLineCodec", "False"]


NOTEBOOK_CELL = '''
import numpy as np
from lcbench import Codec

PAD = {pad}

class NotebookRaw(Codec):
    name = "api_test_notebook_raw"
    default_rates = (0,)
    def version(self): return "1"
    def encode(self, image, rate):
        return image.tobytes() + b"\\0" * PAD
    def decode(self, data):
        raise NotImplementedError
'''


def _notebook_class(pad: int, cell: int):
    """The class as a Jupyter cell defines it: in a module without a file, its code known only to
    linecache (inspect cannot find the class's own source there, only its methods')."""
    import linecache
    import types

    source = NOTEBOOK_CELL.format(pad=pad)
    filename = f"<ipython-input-{cell}-api-test>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"api_test_notebook_{cell}")
    sys.modules[module.__name__] = module
    exec(compile(source, filename, "exec"), module.__dict__)
    return module.NotebookRaw


def test_a_notebook_class_is_tagged_by_its_code_and_the_constants_it_reads():
    """In Jupyter the tag was random (inspect.getsource fails for a class of __main__), so every
    kernel restart recomputed everything; and a module constant the class reads was not part of
    the tag, so editing it reused the old results."""
    from lcbench.in_process_codecs import _source_digest

    first, again, edited = _notebook_class(0, 1), _notebook_class(0, 2), _notebook_class(7, 3)
    tags = [_source_digest(c) for c in (first, again, edited)]
    assert not any(t.startswith("unhashed") for t in tags)
    assert tags[0] == tags[1] != tags[2]


def test_a_script_class_is_tagged_by_its_whole_file(tmp_path):
    """A constant the class reads (PAD = 0 -> 7) left its tag unchanged, and the edited script was
    served the old results."""
    from lcbench.in_process_codecs import _source_digest

    path = tmp_path / "script_codec.py"
    digests = []
    for pad in (0, 0, 7):
        path.write_text(NOTEBOOK_CELL.format(pad=pad))
        _import(path, "api_test_script_codec")
        digests.append(_source_digest(sys.modules["api_test_script_codec"].NotebookRaw))
    assert digests[0] == digests[1] != digests[2]
