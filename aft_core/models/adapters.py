"""LoRA adapters (PEFT) over frozen weights, for SFT and AFT branches of either family; π_ref for free.

- **Policy.** `add_adapter(model, settings)` injects LoRA layers (B initialised to zero, so the policy starts
  exactly at the model under it) into the modules `settings.lora_targets` names; only they train. Callers hold
  the injected transformers model (`PeftModel.get_base_model()`), so the family code runs on it unchanged.
- **π_ref.** An AFT branch with an adapter scores π_ref with that adapter disabled (`AdapterDisabled`): the
  frozen weights under it, which are the SFT model, with no second model in memory. `reference_model(ref)`
  yields the model to run, whichever kind of reference a branch holds.
- **Files.** A LoRA SFT model folder is PEFT's layout (adapter_config.json, adapter_model.safetensors) plus
  its tokenizer; `base_model_name_or_path` names the model under it (`hf:<org>/<name>`, a folder, or `../base`
  for a preset built by the run). `load_model` loads it as base + adapter, merged. A branch checkpoint's
  weights file holds only the adapter's tensors, with its settings in the safetensors metadata
  (`save_policy_weights`, `load_policy_weights`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aft_core.errors import AftInputError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_METADATA = "aft_adapter"  # safetensors metadata key: the LoRA settings of a branch checkpoint
LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")


def lora_config(settings: dict[str, Any] | Any) -> Any:
    """PEFT's LoraConfig from the LoRA settings (a config with them, or their dict)."""
    from peft import LoraConfig

    def get(name: str) -> Any:
        return settings[name] if isinstance(settings, dict) else getattr(settings, name)

    targets = get("lora_targets").strip()
    return LoraConfig(
        r=int(get("lora_rank")),
        lora_alpha=float(get("lora_alpha")),  # type: ignore[arg-type]  # PEFT types it int; it is a scale, 16.0 or 0.5 alike
        lora_dropout=float(get("lora_dropout")),
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
        init_lora_weights=True,
        bias="none",
    )


def add_adapter(model: torch.nn.Module, settings: Any, base: str = "", seed: int = 0) -> Any:
    """`model` with a fresh LoRA adapter (zero B: the output is unchanged); only the adapter trains. `base` names the
    model under it in the files it writes. Returns the PeftModel; its `get_base_model()` is the model to run.

    A is drawn again from a generator seeded with `seed`, in parameter order: PEFT draws it from the global RNG in
    the order it finds target modules (a set, whose order changes with Python's hash seed), so two runs of one
    config would start from different adapters."""
    import math

    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, lora_config(settings))
    except ValueError as e:  # e.g. target modules that the architecture does not have
        raise AftInputError(
            type(model).__name__,
            "lora_targets",
            (str(e).splitlines() or [""])[0][:300],
            "use all-linear, or names of the model's linear modules such as q,v or q_proj,v_proj",
        ) from e
    peft_model.peft_config["default"].base_model_name_or_path = base
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name:  # PEFT's own init: kaiming-uniform with a = √5
                values = torch.empty(p.shape, dtype=p.dtype)
                torch.nn.init.kaiming_uniform_(values, a=math.sqrt(5), generator=generator)
                p.copy_(values)
    return peft_model


def adapter_settings(settings: Any) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in LORA_FIELDS}


@dataclass
class AdapterDisabled:
    """π_ref as the policy with its adapter switched off: the frozen weights under the adapter."""

    peft_model: Any

    @contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        with self.peft_model.disable_adapter():
            yield self.peft_model.get_base_model()


@contextmanager
def reference_model(reference: Any) -> Iterator[torch.nn.Module]:
    """The model that scores π_ref: a separate frozen model as it is, or the policy with its adapter disabled."""
    if isinstance(reference, AdapterDisabled):
        with reference.active() as model:
            yield model
    else:
        yield reference


def has_frozen_weights(model: torch.nn.Module) -> bool:
    return not all(p.requires_grad for p in model.parameters())


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The trainable tensors by name when some weights are frozen (an adapter), else None (the whole model)."""
    if not has_frozen_weights(model):
        return None
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Load `trainable_state`'s tensors back; every trainable tensor must be there."""
    wanted = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != wanted:
        raise ValueError(f"{where} holds {len(tensors)} trainable tensors, the model {len(wanted)}")
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            named[name].copy_(value)


def save_policy_weights(model: torch.nn.Module, adapter: Any, settings: Any, path: str | Path) -> None:
    """A branch checkpoint's weights: the adapter's tensors and settings when it has one, else the whole model."""
    from safetensors.torch import save_file, save_model

    if adapter is None:
        save_model(model, str(path))
        return
    from peft import get_peft_model_state_dict

    tensors = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(adapter).items()}
    save_file(tensors, str(path), metadata={ADAPTER_METADATA: json.dumps(adapter_settings(settings))})


def checkpoint_adapter(path: str | Path) -> dict[str, Any] | None:
    """The LoRA settings a branch checkpoint's weights file carries, or None (full weights)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    return json.loads(metadata[ADAPTER_METADATA]) if ADAPTER_METADATA in metadata else None


def apply_adapter_checkpoint(model: torch.nn.Module, path: str | Path, settings: dict[str, Any], base: str = "") -> Any:
    """`model` with the adapter of a branch checkpoint (settings from `checkpoint_adapter`); returns the PeftModel."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    peft_model = add_adapter(model, settings, base)
    result: Any = set_peft_model_state_dict(peft_model, load_file(str(path)))  # torch's _IncompatibleKeys
    if result.unexpected_keys or any("lora_" in key for key in result.missing_keys):
        raise AftInputError(
            path,
            "weights",
            "the adapter does not fit this SFT model",
            "evaluate the checkpoint with the SFT model its branch was trained from",
        )
    return peft_model


def load_policy_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """`model` (the SFT model) with a branch checkpoint's weights: an adapter is applied and merged, full weights
    replace the model's. Returns the model to run."""
    from safetensors.torch import load_model

    settings = checkpoint_adapter(path)
    if settings is None:
        load_model(model, str(path), strict=True)
        return model
    return apply_adapter_checkpoint(model, path, settings).merge_and_unload()


def is_adapter_folder(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def adapter_base(path: Path) -> str:
    """The model under a saved adapter: `hf:<org>/<name>`, or a folder (relative paths from the adapter's folder)."""
    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path") or ""
    except (OSError, json.JSONDecodeError) as e:
        raise AftInputError(
            path / ADAPTER_CONFIG,
            "adapter_config",
            f"is unreadable ({e})",
            "rewrite the adapter with `aft sft --adapter lora` or PEFT's save_pretrained",
        ) from e
    if not base:
        raise AftInputError(
            path / ADAPTER_CONFIG,
            "base_model_name_or_path",
            "names no base model",
            "set it to the base model's folder or hf:<org>/<name>",
        )
    if base.startswith("hf:"):
        return base
    resolved = base if Path(base).is_absolute() else str((path / base).resolve())
    if not Path(resolved).is_dir():
        raise AftInputError(
            path / ADAPTER_CONFIG,
            "base_model_name_or_path",
            f"adapter {path} names base {resolved}, which does not exist",
            "put the base model there, or set base_model_name_or_path to its folder or hf:<org>/<name>",
        )
    return resolved


def load_adapter_model(path: Path, base_model: torch.nn.Module) -> torch.nn.Module:
    """A saved LoRA adapter applied to `base_model` and merged into it (the SFT model as one plain model)."""
    from peft import PeftModel

    if not (path / ADAPTER_WEIGHTS).is_file():
        raise AftInputError(
            path,
            ADAPTER_WEIGHTS,
            "the adapter folder holds no safetensors weights (pickles are never loaded)",
            "save the adapter with safe_serialization (PEFT's default)",
        )
    merged = PeftModel.from_pretrained(base_model, str(path), is_trainable=False).merge_and_unload()
    return merged.requires_grad_(True)  # a plain model again, as any loaded model is
