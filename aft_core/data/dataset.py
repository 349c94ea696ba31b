"""The Hugging Face `datasets` layer: example tables per split, and their tokenised form.

Example tables hold the tokenizer-independent rows of `Example.to_row`; encoding adds
`input_ids`, `labels` and the per-token prompt map (`src_turn`, `src_is_tag`, `src_is_salient`, `src_is_template`).
"""

from __future__ import annotations

from typing import Any

import datasets
from datasets import Dataset, DatasetDict

from aft_core.data.corpus import Corpus
from aft_core.data.examples import Turn

datasets.disable_progress_bars()  # per-map bars drown the training progress bar


def corpus_to_dataset(corpus: Corpus, dev_fraction: float = 0.05) -> DatasetDict:
    """Example tables per split. A corpus without a validation split lends the last dialogues of train."""
    splits = {name: [ex.to_row() for ex in exs] for name, exs in corpus.examples.items()}
    dialogues = list(dict.fromkeys(r["dialogue_id"] for r in splits.get("train", [])))
    if "validation" not in splits and len(dialogues) >= 2:
        held = set(dialogues[-max(1, int(len(dialogues) * dev_fraction)) :])
        splits["validation"] = [dict(r, split="validation") for r in splits["train"] if r["dialogue_id"] in held]
        splits["train"] = [r for r in splits["train"] if r["dialogue_id"] not in held]
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items() if rows})


def tokenizer_texts(table: Dataset) -> list[str]:
    """Texts a corpus tokenizer learns from: every distinct turn with its speaker tag, and every target."""
    seen: dict[str, None] = {}
    for speakers, texts, target in zip(table["history_speakers"], table["history_texts"], table["target"], strict=True):
        for speaker, text in zip(speakers, texts, strict=True):
            seen.setdefault(f"{speaker}: {text}")
        seen.setdefault(f"system: {target}")
    return list(seen)


def encode_rows(
    rows: dict[str, list], tokenizer: Any, family: Any, max_source_tokens: int, max_target_tokens: int
) -> dict[str, list]:
    """Batched encoder for `Dataset.map`: prompt ids with their token map, and target labels, as the model family
    (aft_core.models) forms them."""
    histories = [
        [Turn(sp, tx, tuple(v)) for sp, tx, v in zip(speakers, texts, values, strict=True)]
        for speakers, texts, values in zip(
            rows["history_speakers"], rows["history_texts"], rows["history_slot_values"], strict=True
        )
    ]
    sources = family.encode_prompts(histories, tokenizer, max_source_tokens)
    encoded = {key: [s[key] for s in sources] for key in sources[0]} if sources else {}
    encoded["labels"] = family.encode_targets(rows["target"], tokenizer, max_target_tokens)
    return encoded


def encode_table(
    table: Dataset, tokenizer: Any, family: Any, max_source_tokens: int, max_target_tokens: int
) -> Dataset:
    return table.map(
        encode_rows,
        batched=True,
        batch_size=1000,
        fn_kwargs={
            "tokenizer": tokenizer,
            "family": family,
            "max_source_tokens": max_source_tokens,
            "max_target_tokens": max_target_tokens,
        },
        load_from_cache_file=False,
    )
