"""Registry: suggestions, plugins from a file, entry points from an installed distribution."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lcbench.registry import Registry, UnknownNameError, codecs, create_codec, load_plugin, parse_codec_spec

PLUGIN = textwrap.dedent('''
    import numpy as np
    from lcbench import Codec, register_codec

    @register_codec
    class Raw{suffix}(Codec):
        name = "raw{suffix}"
        default_rates = (0,)
        lossless = True
        def version(self): return "raw-1"
        def encode(self, image, rate):
            h, w, _ = image.shape
            return h.to_bytes(4, "big") + w.to_bytes(4, "big") + image.tobytes()
        def decode(self, data):
            h, w = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
            return np.frombuffer(data[8:], np.uint8).reshape(h, w, 3).copy()
''')


def test_unknown_codec_suggests_closest():
    with pytest.raises(UnknownNameError, match=r"did you mean .*jpeg"):
        codecs.get("jpge")


def test_spec_parsing():
    assert parse_codec_spec("jpeg:subsampling=444:optimize=true") == ("jpeg", {"subsampling": 444, "optimize": True})
    with pytest.raises(ValueError, match="key=value"):
        parse_codec_spec("jpeg:444")


def test_duplicate_registration_is_an_error():
    reg: Registry[type] = Registry("thing")
    reg.register("a", int, origin="x.py:1")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", float, origin="y.py:2")


def test_plugin_file(tmp_path):
    path = tmp_path / "rawcodec.py"
    path.write_text(PLUGIN.format(suffix="plug"))
    load_plugin(path)
    codec = create_codec("rawplug")
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(codec.decode(codec.encode(img, 0)), img)
    assert codecs.entry("rawplug").origin.startswith("rawcodec.py:")


def test_a_plugin_edited_after_loading_is_an_error_not_its_old_code(tmp_path):
    """Loading a plugin file again (a notebook re-running lcbench.run(plugins=[...]) after editing
    it) returned at once, and the old code ran under the old plugin-sha256 without a word."""
    path = tmp_path / "editedcodec.py"
    path.write_text(PLUGIN.format(suffix="edited"))
    load_plugin(path)
    load_plugin(path)  # unchanged: nothing to do
    path.write_text(PLUGIN.format(suffix="edited").replace('"raw-1"', '"raw-2"'))
    with pytest.raises(ImportError, match=r"editedcodec.py changed since this process loaded it.*restart"):
        load_plugin(path)


def test_missing_plugin_file():
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_plugin("nope.py")


def test_entry_point_from_installed_distribution(tmp_path, monkeypatch):
    """A real dist-info with entry_points.txt on sys.path, as pip would install it."""
    pkg = tmp_path / "lcb_ep_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PLUGIN.format(suffix="ep").replace("@register_codec\n", ""))
    dist = tmp_path / "lcb_ep_demo-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lcb-ep-demo\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text("[lcbench.codecs]\nrawep = lcb_ep_demo:Rawep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[type] = Registry("codec", (), "lcbench.codecs")
    assert "rawep" in reg.names()
    assert "lcb-ep-demo==1.2" in reg.entry("rawep").origin
    cls = reg.get("rawep")
    assert cls.name == "rawep" and cls().version() == "raw-1"
    sys.modules.pop("lcb_ep_demo", None)


# --- plugins and entry points that must not run under a wrong name -------------------------------

def _lcbench(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """The real command in a fresh process: the registries load as in a user's run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(pythonpath or ""),
                                                                     os.environ.get("PYTHONPATH", "")]))}
    return subprocess.run([sys.executable, "-m", "lcbench", *args], capture_output=True, text=True, env=env,
                          timeout=300)


RAW_BODY = '''
    default_rates = (1,)
    def version(self): return "1"
    def encode(self, image, rate):
        h, w, _ = image.shape
        return h.to_bytes(4, "big") + w.to_bytes(4, "big") + image.tobytes()
    def decode(self, data):
        h, w = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
        return np.frombuffer(data[8:], np.uint8).reshape(h, w, 3).copy()
'''


def test_a_plugin_step_may_not_take_a_builtin_step_name(tmp_path):
    """docs/pipelines.md's step example named bicubic-x2 replaced the built-in step (its numbers
    under the built-in's label) and broke lanczos-x4 by making lcbench_codecs.rescale fail to load."""
    plugin = tmp_path / "stepclash.py"
    plugin.write_text(textwrap.dedent('''
        from lcbench.pipeline import Step, register_step

        @register_step
        class MyDenoise(Step):
            name = "bicubic-x2"
            def version(self): return "1"
            def forward(self, image): return image, b""
            def inverse(self, image, side, height, width): return image
    '''))
    done = _lcbench("steps", "--plugin", str(plugin))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "'bicubic-x2' registered twice" in done.stderr
    assert "lcbench_codecs.rescale" in done.stderr and str(plugin) in done.stderr


def test_the_registered_name_is_the_label(tmp_path):
    """@register_codec(name="jpeg_opt") on a JPEG subclass wrote its results as codec=jpeg; a class
    with name = "jpeg" registered under another key also slipped past the built-in name check."""
    sub = tmp_path / "subjpeg.py"
    sub.write_text(textwrap.dedent('''
        from lcbench import register_codec
        from lcbench.pipeline import register_step
        from lcbench_codecs.pillow_codecs import JPEG
        from lcbench_codecs.rescale import BicubicX2

        @register_codec(name="jpeg_opt_t")
        class JpegOpt(JPEG):
            pass

        @register_step(name="bicubic-x2-t")
        class MyBicubic(BicubicX2):
            pass
    '''))
    load_plugin(sub)
    assert create_codec("jpeg_opt_t").label() == "jpeg_opt_t"
    assert create_codec("bicubic-x2-t+jpeg_opt_t").label() == "bicubic-x2-t+jpeg_opt_t"
    assert create_codec("jpeg").label() == "jpeg"  # the built-in keeps its own name
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("import numpy as np\nfrom lcbench import Codec, register_codec\n"
                      "@register_codec(name='myjpeg_t')\nclass Sneaky(Codec):\n    name = 'jpeg'\n" + RAW_BODY)
    with pytest.raises(ImportError, match=r"Sneaky sets name = 'jpeg' but is registered as 'myjpeg_t'") as info:
        load_plugin(sneaky)
    assert str(sneaky) in str(info.value) and "myjpeg_t" not in codecs


BAD_CODECS = {  # class body lines -> what the error says
    "letters": ("default_rates = ('a', 'b')", r"default_rates \('a', 'b'\) must be a tuple of finite numbers"),
    "number": ("default_rates = 5", r"default_rates 5 must be a tuple"),
    "nan": ("default_rates = (float('nan'),)", r"default_rates \(nan,\) must be a tuple"),
    "range": ("rate_range = (100, 1)", r"rate_range \(100, 1\) must be None or \(lo, hi\)"),
    "param": ("rate_param = ''", r"rate_param '' must be a non-empty string"),
}


@pytest.mark.parametrize("case", sorted(BAD_CODECS))
def test_bad_codec_attributes_are_errors_naming_codec_and_file(tmp_path, case):
    body, message = BAD_CODECS[case]
    path = tmp_path / f"bad_{case}.py"
    path.write_text("import numpy as np\nfrom lcbench import Codec, register_codec\n@register_codec\n"
                    f"class Bad(Codec):\n    name = 'bad_{case}'\n" + RAW_BODY + f"    {body}\n")
    with pytest.raises(ImportError, match=message) as info:
        load_plugin(path)
    assert str(path) in str(info.value) and f"codec 'bad_{case}'" in str(info.value)
    assert f"bad_{case}" not in codecs


@pytest.mark.parametrize("version", ["1", "None"])
def test_a_plugin_version_that_is_not_text_is_an_error_naming_it(tmp_path, version):
    path = tmp_path / f"v{version}.py"
    path.write_text("import numpy as np\nfrom lcbench import Codec, register_codec\n@register_codec\n"
                    f"class V(Codec):\n    name = 'vers_{version}'\n"
                    + RAW_BODY.replace('return "1"', f"return {version}"))
    load_plugin(path)
    with pytest.raises(ValueError, match=rf"'vers_{version}' \(plugin .*v{version}.py\): version\(\) returned {version}, "
                                         "not a string"):
        create_codec(f"vers_{version}").version()


@pytest.mark.parametrize("name", ["../evil", ".hidden", "-q", "a/b", "caf\u00e9"])
def test_codec_and_step_names_are_file_and_label_safe(tmp_path, name):
    """A plugin codec named ../evil was written to the report as compressai/.._evil.json (hidden)."""
    path = tmp_path / "evil.py"
    path.write_text("import numpy as np\nfrom lcbench import Codec, register_codec\n@register_codec\n"
                    f"class Evil(Codec):\n    name = {name!r}\n" + RAW_BODY)
    with pytest.raises(ImportError, match=r"codec name .* must be a non-empty string of ASCII letters") as info:
        load_plugin(path)
    assert str(path) in str(info.value)
    from lcbench.pipeline import register_step, steps

    with pytest.raises(ValueError, match=r"step name .* must be a non-empty string of ASCII letters"):
        register_step(name=name)(type("S", (steps.get("bicubic-x2"),), {}))


def _dist(root: Path, package: str, entry_points: str, code: dict[str, str]) -> None:
    """A package and its dist-info, as pip installs them, under ``root`` (put on PYTHONPATH)."""
    (root / package).mkdir(parents=True)
    for name, text in code.items():
        (root / package / name).write_text(textwrap.dedent(text))
    info = root / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


EP_CODEC = "import numpy as np\nfrom lcbench import Codec, register_codec\n"


def test_entry_points_load_or_say_clearly_why_not(tmp_path):
    _dist(tmp_path, "lcbtestpkg", '''
        [lcbench.codecs]
        lcbt_self = lcbtestpkg.selfreg:MyCodec
        lcbt_alias = lcbtestpkg.codec:Other
        lcbt_inherits = lcbtestpkg.codec:Inherits
        lcbt_broken = lcbtestpkg.broken:X
        lcbt_missing = lcbtestpkg.codec:Nope
        lcbt_module = lcbtestpkg.codec:np
        jpeg = lcbtestpkg.codec:MyCodec
        ../lcbt_evil = lcbtestpkg.codec:MyCodec
        [lcbench.steps]
        bicubic-x4 = lcbtestpkg.codec:MyCodec
    ''', {
        "__init__.py": "",
        # the README's pattern: an entry point and @register_codec on the same class
        "selfreg.py": EP_CODEC + "@register_codec\nclass MyCodec(Codec):\n    name = 'lcbt_self'\n" + RAW_BODY,
        "codec.py": EP_CODEC + "class MyCodec(Codec):\n    name = 'lcbt_plain'\n" + RAW_BODY
                    + "class Other(MyCodec):\n    name = 'differentname'\n"
                    + "class Inherits(MyCodec):\n    pass\n",
        "broken.py": "raise RuntimeError('entry point module broken')\n",
    })
    done = _lcbench("codecs", "--json", pythonpath=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    ok = {name for name, row in rows.items() if row["available"]}
    assert {"lcbt_self", "lcbt_inherits", "webp"} <= ok
    why = {name: row["reason"] for name, row in rows.items()}
    origin = "(entry point lcbtestpkg.{} from lcbtestpkg==1.0)"
    assert origin.format("codec:Other") in why["lcbt_alias"]
    assert "Other sets name = 'differentname' but is registered as 'lcbt_alias'" in why["lcbt_alias"]
    assert "cannot load codec 'lcbt_broken' (entry point lcbtestpkg.broken:X from lcbtestpkg==1.0): importing " \
           "lcbtestpkg.broken raised RuntimeError: entry point module broken" in why["lcbt_broken"]
    assert "module lcbtestpkg.codec has no attribute 'Nope'" in why["lcbt_missing"]
    assert "'numpy' (module) is not a subclass of lcbench.Codec" in why["lcbt_module"]
    # a package reusing a built-in's name: neither runs under it, and the listing says why
    assert "codec 'jpeg' is claimed twice: pillow_codecs.py" in why["jpeg"]
    assert "entry point lcbtestpkg.codec:MyCodec from lcbtestpkg==1.0" in why["jpeg"]
    assert "must be a non-empty string of ASCII letters" in why["../lcbt_evil"]
    listing = _lcbench("codecs", "lcbt_*", pythonpath=tmp_path)  # printed '[: ]' for what did not load
    assert listing.returncode == 0 and "[: ]" not in listing.stdout
    lines = listing.stdout.splitlines()
    detail = {lines[i].split()[0]: lines[i + 1] for i in range(len(lines) - 1) if lines[i].startswith("lcbt_")}
    assert "(not loaded)" in detail["lcbt_broken"] and "(not loaded)" not in detail["lcbt_self"]

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(images / "a.png")
    run = _lcbench("run", "--codecs", "jpeg", "-q", "50", "--dataset", str(images), "--out",
                   str(tmp_path / "r"), pythonpath=tmp_path)
    assert run.returncode == 2 and "codec 'jpeg' is claimed twice" in run.stderr and "uninstall lcbtestpkg" in run.stderr
    steps_listing = _lcbench("steps", "bicubic-x4+webp", pythonpath=tmp_path)
    assert steps_listing.returncode == 2 and "step 'bicubic-x4' is claimed twice" in steps_listing.stderr
    run = _lcbench("run", "--codecs", "lcbt_self,lcbt_inherits", "--dataset", str(images), "--out",
                   str(tmp_path / "r2"), pythonpath=tmp_path)
    assert run.returncode == 0, run.stderr
    assert set(pd.read_csv(tmp_path / "r2" / "results.csv").codec) == {"lcbt_self", "lcbt_inherits"}


def test_a_version_that_is_not_text_is_an_error_for_any_codec():
    """An entry-point codec whose version() returned 1 was filed (job keys, cache, results) under 1."""
    from lcbench.codec import Codec, result_version

    class NumberVersion(Codec):
        name = "number_version"

        def version(self):
            return 1

        def encode(self, image, rate):  # pragma: no cover - never called
            return b""

        def decode(self, bitstream):  # pragma: no cover
            return np.zeros((1, 1, 3), np.uint8)

    with pytest.raises(ValueError, match=r"codec 'number_version': version\(\) returned 1, not a string"):
        result_version(NumberVersion())
