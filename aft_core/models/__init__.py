"""The model-family layer: one interface (family.py) over encoder–decoders (seq2seq.py, with the T5 fast path in
t5_decoding.py) and decoder-only models (causal.py); registry.py reads the family from a config and loads or
builds models."""

from aft_core.models import adapters
from aft_core.models.family import ModelFamily, parse_layers, response_mask
from aft_core.models.registry import (
    PRESETS,
    build_model,
    check_model_source,
    count_parameters,
    default_device,
    family_of,
    load_model,
    model_device,
    save_model,
    torch_threads,
    train_tokenizer,
    trainable_parameters,
)

__all__ = [
    "PRESETS",
    "ModelFamily",
    "build_model",
    "check_model_source",
    "count_parameters",
    "default_device",
    "family_of",
    "load_model",
    "model_device",
    "parse_layers",
    "response_mask",
    "save_model",
    "torch_threads",
    "train_tokenizer",
    "trainable_parameters",
    "adapters",
]
