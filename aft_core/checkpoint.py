"""Resumable training checkpoints: safetensors and JSON only, written atomically, verified on load.

A checkpoint folder `step-NNNNNNN/` holds everything needed to continue exactly (nanoGPT-style):
model weights (only the adapter's when the rest is frozen), optimizer tensors, RNG states (torch CPU and GPU, numpy,
python) and a JSON state with the step, the LR scheduler (when there is one), the trainer's typed state and the
config. It is written under a temporary name and renamed, so a kill leaves no half-written checkpoint; a damaged one
is named on load and the previous good one is used.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from aft_core.io import replace_dir
from aft_core.models.adapters import has_frozen_weights, load_trainable_state, trainable_state

log = logging.getLogger(__name__)
STATE_FILE = "state.json"


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:07d}"


def save_checkpoint(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    root = Path(root)
    final = checkpoint_dir(root, step)
    opt_state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, per_param in opt_state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    py_state: tuple[Any, ...] = random.getstate()
    np_state: Any = np.random.get_state()  # the legacy tuple form (legacy=True is the default)
    meta = {
        "step": step,
        "trainer": state,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        if scheduler is not None
        else None,
        "optimizer": {"param_groups": opt_state["param_groups"], "scalars": scalars},
        "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy_rng": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    with replace_dir(final) as tmp:
        trainable = trainable_state(model)  # an adapter over frozen weights: only the adapter
        if trainable is None:
            save_model(model, str(tmp / "model.safetensors"))
        else:
            save_file(trainable, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file(_torch_rng_states(), str(tmp / "rng.safetensors"))
        (tmp / STATE_FILE).write_text(json.dumps(meta, default=float))  # last: marks the folder complete
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _torch_rng_states() -> dict[str, torch.Tensor]:
    states = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return states


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith((".old", ".tmp")))


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states in place; returns the JSON state."""
    meta = json.loads((path / STATE_FILE).read_text())
    if not has_frozen_weights(model):
        load_model(model, str(path / "model.safetensors"), strict=True)
    else:
        load_trainable_state(model, load_file(str(path / "model.safetensors")), path)
    tensors = load_file(str(path / "optimizer.safetensors"))
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in {**tensors, **meta["optimizer"]["scalars"]}.items():
        idx, name = key.split(".", 1)
        per_param.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["optimizer"]["param_groups"]})
    if scheduler is not None:
        scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():  # sampling on a GPU draws from its generators
        torch.cuda.set_rng_state_all(list(rng["torch_cuda"]))
    py = meta["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = meta["numpy_rng"]
    np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), npst[2], npst[3], npst[4]))
    return meta


def resume_latest(
    root: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any] | None:
    """Load the newest checkpoint that loads cleanly; a damaged one is reported and skipped."""
    for path in reversed(list_checkpoints(root)):
        try:
            return load_checkpoint(path, model, optimizer, scheduler)
        except Exception as e:  # noqa: BLE001 - any damage means: fall back to the previous checkpoint
            log.warning(
                "checkpoint %s is damaged (%s: %s); falling back to the previous one", path, type(e).__name__, e
            )
    return None
