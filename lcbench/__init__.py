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
    raise AttributeError(name)
