"""Registry: suggestions, plugins from a file, entry points from an installed distribution."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

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
