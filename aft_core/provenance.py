"""What a run's numbers depend on, recorded beside them: the machine, the numerical libraries and the seeds.

A rerun on the same machine (same torch build, CPU capability, BLAS and thread count) reproduces every
figure exactly; another CPU runs other kernels (e.g. AVX2 against AVX-512 matmul paths), so its SFT model,
and everything downstream of it, differs. `provenance.json` in every run folder says which case applies.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from aft_core.io import read_json, write_json_atomic


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    """The BLAS torch was built with (from its build configuration), e.g. 'mkl' or 'open'."""
    match = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return match.group(1) if match else "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_provenance() -> dict[str, Any]:
    """The machine and libraries this process computes with."""
    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_git": torch.version.git_version,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": _blas(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "torch_threads": torch.get_num_threads(),
        "aft_threads": os.environ.get("AFT_THREADS"),
        "cuda": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "libraries": {p: _version(p) for p in ("transformers", "tokenizers", "numpy", "bert-score", "sacrebleu")},
    }


def record_provenance(path: Path, seeds: dict[str, int], step: int) -> dict[str, Any]:
    """Append this process's machine, seeds and starting step to `path` (one entry per start or resume).

    A run resumed on another machine shows two different entries: its figures are then not a
    same-machine rerun's. Returns the file's content.
    """
    entries = (
        read_json(path, fix="delete the provenance file (it is rewritten at the next start)")["runs"]
        if path.exists()
        else []
    )
    entry = {
        "started_at_step": step,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "seeds": seeds,
        **machine_provenance(),
    }
    content = {"runs": [*entries, entry], "same_machine_throughout": all(_same_machine(e, entry) for e in entries)}
    write_json_atomic(path, content)
    return content


MACHINE_KEYS = ("cpu", "torch", "torch_git", "cpu_capability", "blas", "torch_threads", "gpu", "cuda")


def _same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in MACHINE_KEYS)
