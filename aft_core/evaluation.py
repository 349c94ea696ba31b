"""Test evaluation: greedy responses of several systems (SFT, each branch's ★ and last) on a test split.

Per system and example: the response, focus under the run's I_x, coverage under `all`, `history`
and `salient`, repeat, BERTScore F1, length in tokens, and, when the corpus has a venue database,
entity correctness (a venue named that satisfies the turn's belief state). Everything per example
goes to `per_example.parquet` so any figure can be recomputed; the means go to `table.json`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from aft_core.attention import parse_layers
from aft_core.bertscore import load_bertscore
from aft_core.config import _check, setting
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, encode_table
from aft_core.data.examples import Example, encode_sources
from aft_core.data.venues import VenueDB, entity_correct, names_venue
from aft_core.errors import AftInputError
from aft_core.io import atomic_path, write_json_atomic
from aft_core.modeling import generate_texts, load_model, torch_threads
from aft_core.monitor import score_greedy

IX_MODES = ("all", "history", "salient")


@dataclass
class EvalConfig:
    """Test evaluation of SFT and AFT checkpoints."""

    data: str = setting("", "corpus path (its test split is evaluated)")
    split: str = setting("test", "split to evaluate: test or validation")
    test_examples: int = setting(0, "evaluate the first N examples of the split (0 = all)")
    ix_mode: str = setting("all", "I_x of the Focus column (the branches' setting)")
    layers: str = setting("all", "decoder layers averaged into A")
    repeat_n: int = setting(3, "n of the repeat penalty")
    max_source_tokens: int = setting(192, "source budget, as in SFT")
    max_new_tokens: int = setting(48, "greedy generation budget")
    batch_size: int = setting(50, "examples per generation batch (batches are length-bucketed)")
    bertscore_model: str = setting("", "BERTScore encoder: empty = offline all-MiniLM-L6-v2")

    def validate(self, where: str = "evaluation") -> "EvalConfig":
        _check(bool(self.data), "data", "no corpus given", "pass --data PATH", where)
        _check(self.split in ("test", "validation"), "split", f"unknown split '{self.split}'", "use test or validation", where)
        _check(self.test_examples >= 0, "test_examples", "must be >= 0", "use 0 for the whole split", where)
        _check(self.ix_mode in IX_MODES, "ix_mode", f"unknown '{self.ix_mode}'", "use all, history or salient", where)
        for name in ("max_new_tokens", "batch_size", "repeat_n", "max_source_tokens"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}", "use a positive integer", where)
        return self


def load_system(model_dir: str | Path, weights: str | Path | None = None) -> tuple[Any, Any]:
    """A saved model, optionally with a checkpoint's weights (safetensors) loaded over it."""
    from safetensors.torch import load_model as load_weights

    model, tokenizer = load_model(model_dir)
    if weights:
        if not Path(weights).is_file():
            raise AftInputError(weights, "weights", "checkpoint weights file does not exist",
                                "rerun the branch, or point at an existing weights/step-*.safetensors")
        load_weights(model, str(weights), strict=True)
    return model.eval(), tokenizer


def evaluate_systems(systems: dict[str, dict[str, Any]], cfg: EvalConfig, out_dir: str | Path) -> dict[str, Any]:
    """Evaluate each system {name: {"model": dir, "weights": file or None}} on the same test examples.

    Writes per_example.parquet and table.json in `out_dir`; returns the table (one row per system).
    """
    cfg.validate()
    out = Path(out_dir)
    torch.set_num_threads(torch_threads())
    corpus = load_corpus(cfg.data)
    tables = corpus_to_dataset(corpus)
    if cfg.split not in tables:
        raise AftInputError(cfg.data, cfg.split, "the corpus has no such split", "evaluate a corpus with a test split")
    table = tables[cfg.split]
    if cfg.test_examples:
        table = table.select(range(min(cfg.test_examples, len(table))))
    db = VenueDB.load(corpus.db_dir) if corpus.db_dir else None
    scorer = load_bertscore(cfg.bertscore_model)
    frames, rows = [], []
    for name, spec in systems.items():
        model, tokenizer = load_system(spec["model"], spec.get("weights"))
        encoded = encode_table(table, tokenizer, cfg.max_source_tokens, 8).to_list()
        layers = parse_layers(cfg.layers, model.config.num_decoder_layers)
        s = score_greedy(model, tokenizer, encoded, ix_modes=IX_MODES, layers=layers,
                         max_new_tokens=cfg.max_new_tokens, repeat_n=cfg.repeat_n, batch_size=cfg.batch_size)
        references = [r["target"] for r in encoded]
        frame = pd.DataFrame({
            "system": name, "example_id": [r["example_id"] for r in encoded], "reference": references,
            "response": s["texts"], "focus": s[f"focus/{cfg.ix_mode}"],
            **{f"coverage_{m}": s[f"coverage/{m}"] for m in IX_MODES},
            "repeat": s["repeat"], "bertscore": scorer.f1(s["texts"], references), "length": s["length"],
        })
        if db is not None:
            states = [json.loads(r["belief_state"]) for r in encoded]
            frame["venue_turn"] = [names_venue(db, ref) for ref in references]
            frame["entity_correct"] = [entity_correct(db, resp, st) for resp, st in zip(s["texts"], states)]
        frames.append(frame)
        rows.append(summary_row(name, spec, frame))
    per_example = pd.concat(frames, ignore_index=True)
    with atomic_path(out / "per_example.parquet") as tmp:
        per_example.to_parquet(tmp)
    result = {"split": cfg.split, "examples": len(table), "ix_mode": cfg.ix_mode,
              "bertscore_encoder": scorer.encoder, "bertscore_layer": scorer.layer, "rows": rows}
    write_json_atomic(out / "table.json", result)
    return result


def summary_row(name: str, spec: dict[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    row = {"system": name, "model": str(spec["model"]), "weights": str(spec.get("weights") or ""),
           "focus": frame["focus"].mean(), "repeat": frame["repeat"].mean(), "bertscore": frame["bertscore"].mean(),
           "avg_len": frame["length"].mean(),
           **{f"coverage_{m}": frame[f"coverage_{m}"].mean() for m in IX_MODES}}
    if "venue_turn" in frame:
        venue = frame[frame["venue_turn"]]
        row["entity_accuracy"] = float(venue["entity_correct"].mean()) if len(venue) else None
        row["venue_turns"] = int(len(venue))
    return {k: float(v) if isinstance(v, (float, int)) and not isinstance(v, bool) else v for k, v in row.items()}


def venue_turns(db: VenueDB, examples: Sequence[Example], limit: int) -> list[Example]:
    """The first `limit` examples whose reference response names a venue of the database."""
    return [ex for ex in examples if names_venue(db, ex.target)][:limit]


def entity_accuracy(model: Any, tokenizer: Any, db: VenueDB, examples: Sequence[Example], *,
                    max_source_tokens: int, max_new_tokens: int = 48) -> dict[str, Any]:
    """Share of greedy responses that name a venue satisfying the turn's belief-state constraints."""
    sources = [s["input_ids"] for s in encode_sources([ex.history for ex in examples], tokenizer, max_source_tokens)]
    responses = generate_texts(model, tokenizer, sources, max_new_tokens=max_new_tokens)
    correct = [entity_correct(db, r, ex.belief_state) for r, ex in zip(responses, examples)]
    return {
        "entity_accuracy": sum(correct) / max(len(correct), 1),
        "turns": len(correct),
        "samples": [{"example_id": ex.example_id, "user": ex.history[-1].text, "reference": ex.target,
                     "response": r, "correct": c, "constraints": json.dumps(ex.belief_state, sort_keys=True)}
                    for ex, r, c in zip(examples, responses, correct)],
    }
