"""lcbench: benchmark and evaluation harness for classical and learned image codecs."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "run", "Codec", "TorchCodec", "Availability", "ModelPerRateCodec",
           "register_codec"]


def __getattr__(name: str) -> Any:  # lazy: `import lcbench` stays cheap for the CLI
    if name == "run":
        from .api import run

        return run
    if name in ("Codec", "TorchCodec", "Availability"):
        from . import codec

        return getattr(codec, name)
    if name == "ModelPerRateCodec":
        from .model_per_rate import ModelPerRateCodec

        return ModelPerRateCodec
    if name == "register_codec":
        from .registry import register_codec

        return register_codec
    if not name.startswith("_"):
        # a submodule (`lcbench.bdrate.bd_rate(...)`, as the README shows) after a bare `import
        # lcbench`: imported on first use, so the CLI does not pay for the ones it does not use
        import importlib
        import importlib.util

        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
