"""Benchmark: test-set evaluation throughput against a one-example-at-a-time loop (issue 6).

Both produce, per test example, the greedy response, focus and coverage under every I_x, repeat,
length and BERTScore F1. The product (`aft_core.monitor.score_greedy` + one BERTScore call, as
`aft evaluate` runs them) decodes length-bucketed batches with the KV cache; the loop calls
Hugging Face `generate` for one example, a teacher-forced pass with `output_attentions=True` for
it, and BERTScore for that one pair. The script checks that both give the same responses and
metrics, prints examples per second for each and the ratio, and exits 1 below the target
(≥ 5× on this machine, `small` preset).

    python bench/evaluate.py [--sft MODEL_DIR] [--examples N] [--batch-size N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aft_core.bertscore import load_bertscore  # noqa: E402
from aft_core.config import IX_MODES, EvalConfig  # noqa: E402
from aft_core.data.batching import SourceBatch  # noqa: E402
from aft_core.data.corpus import load_corpus  # noqa: E402
from aft_core.data.dataset import corpus_to_dataset, encode_table  # noqa: E402
from aft_core.models import family_of, load_model, parse_layers, response_mask, torch_threads  # noqa: E402  # noqa: E402
from aft_core.models.seq2seq import aggregate_cross_attention  # noqa: E402
from aft_core.monitor import score_greedy  # noqa: E402
from aft_core.reward import coverage, focus, repeat_penalty  # noqa: E402
from bench.common import prepare_model  # noqa: E402

SPEED_TARGET = 5.0
TOLERANCE = 1e-4  # attention metrics of the same response computed in a batch or alone differ by rounding only
# bert-score scores padded batches of 64 pairs; with its padding bug fixed (aft_core.bertscore) a pair scored alone
# differs by rounding only (it differed by up to 0.019 before)
BERTSCORE_TOLERANCE = 1e-4


def evaluate_batched(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], scorer: Any, cfg: EvalConfig
) -> dict[str, list]:
    family = family_of(model, tokenizer)
    layers = parse_layers(cfg.layers, family.attention_layers(model))
    scores = score_greedy(
        model,
        tokenizer,
        family,
        rows,
        ix_modes=IX_MODES,
        layers=layers,
        max_new_tokens=cfg.max_new_tokens,
        repeat_n=cfg.repeat_n,
        batch_size=cfg.batch_size,
    )
    scores["bertscore"] = scorer.f1(scores["texts"], [r["target"] for r in rows])
    return scores


@torch.no_grad()
def evaluate_one_at_a_time(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], scorer: Any, cfg: EvalConfig
) -> dict[str, list]:
    layers = parse_layers(cfg.layers, model.config.num_decoder_layers)  # this yardstick is written for T5
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    scores: dict[str, list] = {"texts": [], "length": [], "repeat": [], "bertscore": []}
    for row in rows:
        src = SourceBatch.from_rows([row], pad)
        seq = model.generate(
            input_ids=src.input_ids,
            attention_mask=src.attention_mask,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=False,
        )
        labels = seq[:, 1:]
        tgt = response_mask(labels, eos)
        out = model(
            input_ids=src.input_ids,
            attention_mask=src.attention_mask,
            decoder_input_ids=seq[:, :-1],
            output_attentions=True,
        )
        attn = aggregate_cross_attention(out.cross_attentions, layers)  # [1,T,S]
        for mode in IX_MODES:
            hist = src.mask(mode)
            scores.setdefault(f"focus/{mode}", []).append(float(focus(attn, tgt, hist)[0]))
            scores.setdefault(f"coverage/{mode}", []).append(float(coverage(attn, tgt, hist)[0]))
        scores["repeat"].append(float(repeat_penalty(labels, tgt, cfg.repeat_n, (pad, eos))[0]))
        scores["length"].append(int((tgt & (labels != eos)).sum()))
        text = tokenizer.decode(seq[0], skip_special_tokens=True).strip()
        scores["texts"].append(text)
        scores["bertscore"].append(scorer.f1([text], [row["target"]])[0])
    return scores


def compare(batched: dict[str, list], looped: dict[str, list]) -> dict[str, Any]:
    same_texts = sum(a == b for a, b in zip(batched["texts"], looped["texts"], strict=True))
    worst = {
        key: max(abs(float(a) - float(b)) for a, b in zip(batched[key], looped[key], strict=True))
        for key in looped
        if key != "texts"
    }
    within = all(value <= (BERTSCORE_TOLERANCE if key == "bertscore" else TOLERANCE) for key, value in worst.items())
    return {
        "same_responses": same_texts,
        "examples": len(looped["texts"]),
        "max_metric_difference": worst,
        "tolerances": {"bertscore": BERTSCORE_TOLERANCE, "other metrics": TOLERANCE},
        "ok": same_texts == len(looped["texts"]) and within,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", help="SFT model folder to evaluate (default: a short SFT run of `small`)")
    parser.add_argument("--sft-steps", type=int, default=600, help="steps of the default short SFT run")
    parser.add_argument("--data", help="corpus whose test split is evaluated (default: the TownInfo corpus of the run)")
    parser.add_argument("--examples", type=int, default=300, help="test examples (the main job evaluates 300)")
    parser.add_argument("--batch-size", type=int, default=EvalConfig.batch_size)
    parser.add_argument("--out", help="work folder (default: a fresh temporary folder)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="aft-bench-eval-"))
    torch.set_num_threads(torch_threads())

    corpus_dir, model_dir = prepare_model(out, args.sft, None, args.sft_steps)
    cfg = EvalConfig(data=args.data or corpus_dir, batch_size=args.batch_size).validate()
    model, tokenizer = load_model(model_dir)
    model.eval()
    table = corpus_to_dataset(load_corpus(cfg.data))["test"]
    rows = encode_table(
        table.select(range(min(args.examples, len(table)))),
        tokenizer,
        family_of(model, tokenizer),
        cfg.max_source_tokens,
        8,
    ).to_list()
    scorer = load_bertscore(cfg.bertscore_model)
    evaluate_batched(model, tokenizer, rows[:20], scorer, cfg)  # warm-up of both paths
    evaluate_one_at_a_time(model, tokenizer, rows[:5], scorer, cfg)

    timings, results = {}, {}
    for name, fn in (("one_at_a_time", evaluate_one_at_a_time), ("product", evaluate_batched)):
        started = time.perf_counter()
        results[name] = fn(model, tokenizer, rows, scorer, cfg)
        timings[name] = time.perf_counter() - started
    agreement = compare(results["product"], results["one_at_a_time"])
    rate = {name: len(rows) / seconds for name, seconds in timings.items()}
    speedup = rate["product"] / rate["one_at_a_time"]
    report = {
        "model": model_dir,
        "data": cfg.data,
        "examples": len(rows),
        "batch_size": cfg.batch_size,
        "threads": torch.get_num_threads(),
        "seconds": timings,
        "examples_per_s": rate,
        "speedup": round(speedup, 2),
        "mean_response_length": sum(results["product"]["length"]) / len(rows),
        "agreement": agreement,
    }
    print(json.dumps(report, indent=2))
    ok = agreement["ok"] and speedup >= SPEED_TARGET
    worst = agreement["max_metric_difference"]
    print(
        f"agreement: {agreement['same_responses']}/{agreement['examples']} identical responses; largest difference "
        f"BERTScore {worst['bertscore']:.1e}, other metrics {max(v for k, v in worst.items() if k != 'bertscore'):.1e} "
        f"-> {'ok' if agreement['ok'] else 'DISAGREE'}"
    )
    print(
        f"examples/s: product {rate['product']:.1f}, one at a time {rate['one_at_a_time']:.1f} "
        f"-> speedup {speedup:.2f}x "
        f"(target >= {SPEED_TARGET}x) -> {'PASS' if ok else 'MISS'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
