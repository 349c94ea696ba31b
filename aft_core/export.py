"""`aft export`: an SFT model or a branch checkpoint as a model folder other tools open.

With `merge`, every adapter is merged into the weights: a plain hub-layout folder (config.json,
model.safetensors, tokenizer) that `transformers` loads with no PEFT. Without it, an adapter stays an adapter
(PEFT's layout, its base named by absolute path or `hf:` name), and a full model is written as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aft_core.errors import AftInputError
from aft_core.io import copy_dir
from aft_core.layout import BranchLayout
from aft_core.models import load_model, save_model
from aft_core.models.adapters import (
    ADAPTER_CONFIG,
    adapter_base,
    apply_adapter_checkpoint,
    checkpoint_adapter,
    is_adapter_folder,
    load_policy_weights,
)


def branch_step(branch: BranchLayout, step: str) -> int:
    """A branch checkpoint named by `star`, `last`, a step number, or '' (★ when the branch has one, else last)."""
    verdict = branch.read_verdict() if branch.verdict.exists() else {}
    saved = sorted(int(p.stem.split("-")[1]) for p in branch.weights(0).parent.glob("step-*.safetensors"))
    if not saved:
        raise AftInputError(branch.root, "weights", "the branch has no saved checkpoint", "train it first")
    if step in ("", "star") and verdict.get("primary_step") is not None:
        return int(verdict["primary_step"])
    if step == "star":
        raise AftInputError(
            branch.root,
            "step",
            "the branch has no ★ (or has not been judged)",
            "use --step last or a step number, or run `aft classify` first",
        )
    if step in ("", "last"):
        return int(verdict.get("last_step") or saved[-1])
    if not step.isdigit() or int(step) not in saved:
        raise AftInputError(branch.root, "step", f"no checkpoint '{step}'", f"use star, last or one of {saved}")
    return int(step)


def export_model(source: str | Path, out: str | Path, step: str = "", merge: bool = False) -> dict[str, Any]:
    """Write `source` (an SFT model folder, or a branch folder with `step`) to `out`; returns what was written."""
    source, out = Path(source), Path(out)
    branch = BranchLayout(source)
    if branch.config.exists() and (source / "weights").is_dir():
        sft_model = str(branch.read_config()["sft_model"])
        at = branch_step(branch, step)
        weights = branch.weights(at)
        settings = checkpoint_adapter(weights)
        model, tokenizer = load_model(sft_model)
        if settings is not None and not merge:
            save_model(
                apply_adapter_checkpoint(model, weights, settings, str(Path(sft_model).resolve())), tokenizer, out
            )
        else:
            save_model(load_policy_weights(model, weights), tokenizer, out)
        return {"source": str(source), "step": at, "out": str(out), "adapter": settings is not None and not merge}
    if is_adapter_folder(source) and not merge:
        base = adapter_base(source)  # absolute, so the copy still finds it
        with copy_dir(source, out) as tmp:
            config = json.loads((tmp / ADAPTER_CONFIG).read_text(encoding="utf-8"))
            (tmp / ADAPTER_CONFIG).write_text(json.dumps({**config, "base_model_name_or_path": base}, indent=2))
        return {"source": str(source), "out": str(out), "adapter": True}
    model, tokenizer = load_model(source)  # a full model, or an adapter merged into its base
    save_model(model, tokenizer, out)
    return {"source": str(source), "out": str(out), "adapter": False}
