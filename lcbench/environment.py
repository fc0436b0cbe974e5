"""What a run records about the machine and the libraries, so numbers can be reproduced."""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

LIBRARIES = ("lcbench", "numpy", "pillow", "opencv-python-headless", "scikit-image", "torch", "constriction",
             "joblib", "pandas", "pytorch-msssim")


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if "torch" in sys.modules:  # only report CUDA if torch is already loaded (importing it is slow)
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    return info
