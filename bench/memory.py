"""Benchmark: the memory of one AFT step, full fine-tuning against a LoRA adapter, with and without gradient
checkpointing, at the `large` T5 shape and the largest causal preset (`causal-large`), untrained weights.

Per family, four steps run side by side in this process on the same prompts (K = 4, small B):
- full: every weight trains, π_ref is a second frozen copy (AdamW state for every weight);
- lora: a LoRA adapter trains, π_ref is the same model with the adapter disabled (one model in memory);
- each with gradient checkpointing.

One step = sampling, π_ref's pass, the policy's teacher-forced pass, backward and AdamW (aft_step_loss +
apply_update, the branch's own code). After a first step (which allocates AdamW's state), a step's peak is
measured from torch's own allocations (bench.common: the profiler's memory events on a CPU, the caching
allocator's peak on a GPU) above what it starts with, plus what it starts with (weights and optimizer state,
counted from the tensors): the steady-state step's whole tensor memory. Activations are measured the same way
over the forward passes alone (what they keep for the backward pass). Seconds per step: one more, unprofiled step.

From the bytes per parameter (weights, gradients, optimizer state) and the activation bytes per token, a
**projection** (not a measurement), charging gradients and activations in full as if they coexisted:
the largest model of each family whose AFT step fits on a 24, 40 and 80 GB GPU at B = 8 (this project's
default; the paper gives none), K = 4, 512 source and 128 response tokens, fp32 weights as measured here,
with activation bytes per token growing as P^(2/3) (width and depth grown together).

Target (issue 23): LoRA with the reference for free ≤ 0.4× the full step's peak; exits 1 on a miss.

    python bench/memory.py                     # CPU, both families (about 10 min on 2 cores)
    python bench/memory.py --device cuda       # GPU figures
    python bench/memory.py --families causal --b 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aft_core.aft import aft_step_loss, apply_update, load_policy_and_reference  # noqa: E402
from aft_core.config import AFTConfig  # noqa: E402
from aft_core.data.batching import SourceBatch  # noqa: E402
from aft_core.data.corpus import load_corpus  # noqa: E402
from aft_core.data.dataset import corpus_to_dataset, encode_table  # noqa: E402
from aft_core.models import family_of, parse_layers, torch_threads, trainable_parameters  # noqa: E402
from bench.common import peak_memory_bytes, prepare_model  # noqa: E402

TARGET = 0.4  # LoRA (reference for free) peak ÷ full peak, at most
SHAPES = {"seq2seq": "large", "causal": "causal-large"}
VARIANTS = {
    "full": ("none", False),
    "full + checkpointing": ("none", True),
    "lora": ("lora", False),
    "lora + checkpointing": ("lora", True),
}
GPUS_GB = (24, 40, 80)
PROJECTED = {"b": 8, "k": 4, "source": 512, "response": 128}
GiB = 2**30


def step_tokens(family: str, b: int, k: int, source: int, response: int) -> int:
    """Tokens a step's passes hold activations for: an encoder reads each prompt once and the decoder its K
    responses; a decoder-only model holds K copies of the prompt's states (its cache is shared per response)."""
    return b * (source + k * response) if family == "seq2seq" else b * k * (source + response)


def measure(
    model_dir: str, corpus: str, family_name: str, adapter: str, checkpointing: bool, args: Any, device: torch.device
) -> dict[str, Any]:
    cfg = AFTConfig(
        sft_model=model_dir,
        data=corpus,
        k=args.k,
        batch_size=args.b,
        max_new_tokens=args.new_tokens,
        max_source_tokens=args.source_tokens,
        adapter=adapter,
        gradient_checkpointing=checkpointing,
        learning_rate=1e-5,
    ).validate()
    policy, _, reference, tokenizer = load_policy_and_reference(cfg)
    family = family_of(policy, tokenizer)
    rows = encode_table(
        corpus_to_dataset(load_corpus(corpus))["train"].select(range(args.b)), tokenizer, family, args.source_tokens, 8
    )
    src = SourceBatch.from_rows(rows.to_list(), family.pad_id()).to(device)
    layers = parse_layers("all", family.attention_layers(policy))
    optimizer = torch.optim.AdamW(trainable_parameters(policy), lr=cfg.learning_rate)

    def forward() -> Any:
        return aft_step_loss(policy, reference, family, src, cfg, layers)[0]

    def step() -> None:
        apply_update(policy, optimizer, forward()["loss"], cfg.grad_clip)

    separate = reference if isinstance(reference, torch.nn.Module) and reference is not policy else None
    weights = sum(p.numel() * p.element_size() for p in policy.parameters())
    weights += sum(p.numel() * p.element_size() for p in separate.parameters()) if separate is not None else 0
    torch.manual_seed(0)
    step()  # the first step allocates AdamW's state; the steady state is measured from the second on
    trainable = trainable_parameters(policy)
    gradients = sum(p.numel() * p.element_size() for p in trainable)
    optimizer_state = sum(
        t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)
    )
    above = peak_memory_bytes(step, device)  # gradients, activations and temporaries of a whole step
    held = peak_memory_bytes(lambda: forward(), device)  # what the forward passes keep for the backward pass
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = step_tokens(family_name, args.b, args.k, int(src.input_ids.shape[1]), args.new_tokens)
    result = {
        "variant": f"{adapter}{' + checkpointing' if checkpointing else ''}",
        "parameters": sum(p.numel() for p in policy.parameters()),
        "trainable": sum(p.numel() for p in trainable),
        "peak_bytes": weights + optimizer_state + above,
        "weights_bytes": weights,
        "gradient_bytes": gradients,
        "optimizer_bytes": optimizer_state,
        "activation_bytes": held,
        "tokens": tokens,
        "seconds_per_step": seconds,
    }
    return result  # the models go with this frame


def largest_fit(row: dict[str, Any], family: str, budget_bytes: float) -> float:
    """The parameter count P whose step fits `budget_bytes`: bytes_per_param·P + per_token(P)·tokens, with the
    measured per-token bytes scaled by (P/P0)^(2/3). Bisection on P."""
    p0 = row["parameters"]
    per_param = (row["weights_bytes"] + row["gradient_bytes"] + row["optimizer_bytes"]) / p0
    per_token = row["activation_bytes"] / row["tokens"]
    tokens = step_tokens(family, PROJECTED["b"], PROJECTED["k"], PROJECTED["source"], PROJECTED["response"])

    def need(p: float) -> float:
        return per_param * p + per_token * (p / p0) ** (2 / 3) * tokens

    low, high = 0.0, 1e13
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if need(mid) <= budget_bytes else (low, mid)
    return low


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--families", default="seq2seq,causal", help="comma-separated: seq2seq, causal")
    parser.add_argument("--b", type=int, default=1, help="prompts per step")
    parser.add_argument("--k", type=int, default=4, help="responses per prompt (the paper's K = 4)")
    parser.add_argument("--source-tokens", type=int, default=64, help="prompt budget")
    parser.add_argument("--new-tokens", type=int, default=16, help="sampled tokens (an untrained model rarely stops)")
    parser.add_argument("--out", default="", help="folder for the models and memory.json (default: a temporary one)")
    args = parser.parse_args()
    os.environ["AFT_DEVICE"] = args.device
    device = torch.device(args.device)
    torch.set_num_threads(torch_threads())
    out = Path(args.out or tempfile.mkdtemp(prefix="aft-memory-"))
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    report: dict[str, Any] = {
        "device": args.device,
        "b": args.b,
        "k": args.k,
        "source_tokens": args.source_tokens,
        "new_tokens": args.new_tokens,
        "families": {},
    }
    failed = False
    for family in families:
        corpus, model_dir = prepare_model(out, None, SHAPES[family], 0)
        rows = []
        for adapter, ckpt in VARIANTS.values():
            rows.append(measure(model_dir, corpus, family, adapter, ckpt, args, device))
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        full, lora = rows[0], rows[2]
        ratio = lora["peak_bytes"] / full["peak_bytes"]
        projection = {r["variant"]: {f"{gb} GB": largest_fit(r, family, gb * 1e9) for gb in GPUS_GB} for r in rows}
        report["families"][family] = {
            "preset": SHAPES[family],
            "rows": rows,
            "lora_over_full": ratio,
            "projection": projection,
        }
        print(
            f"\n{family} ({SHAPES[family]}, {full['parameters'] / 1e6:.0f}M parameters; B={args.b}, K={args.k}, "
            f"{args.source_tokens}-token prompts, {args.new_tokens} new tokens, {args.device})"
        )
        print(
            f"{'variant':<22}{'peak GiB':>10}{'weights':>9}{'grads':>8}{'AdamW':>8}{'activ.':>8}{'s/step':>9}"
            f"{'trainable':>12}"
        )
        for r in rows:
            print(
                f"{r['variant']:<22}{r['peak_bytes'] / GiB:>10.2f}{r['weights_bytes'] / GiB:>9.2f}"
                f"{r['gradient_bytes'] / GiB:>8.2f}{r['optimizer_bytes'] / GiB:>8.2f}"
                f"{r['activation_bytes'] / GiB:>8.2f}"
                f"{r['seconds_per_step']:>9.1f}{r['trainable'] / 1e6:>11.2f}M"
            )
        verdict = "PASS" if ratio <= TARGET else "MISS"
        failed |= ratio > TARGET
        print(f"lora / full peak: {ratio:.2f} (target ≤ {TARGET}) {verdict}")
        print(
            f"projection (not measured): largest {family} model whose step fits, at B={PROJECTED['b']}, "
            f"K={PROJECTED['k']}, {PROJECTED['source']}+{PROJECTED['response']} tokens, fp32 weights"
        )
        for variant, fits in projection.items():
            print(f"  {variant:<22}" + "".join(f"{gb}: {p / 1e9:>6.2f}B   " for gb, p in fits.items()))
    (out / "memory.json").write_text(json.dumps(report, indent=2))
    print(f"\n{out / 'memory.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
