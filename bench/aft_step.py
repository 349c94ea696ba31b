"""Benchmark: the product's AFT step against the obvious implementation (bench/reference_step.py).

Both run in this process on the same batches and seed. The script
1. checks they agree: the reference's K samples are scored by the product's code too, and the
   rewards, the loss and the gradient must match within the stated tolerances;
2. times full steps (sampling, scoring, backward, AdamW) of each: prompts per second;
3. measures each step's peak memory above what was allocated before it (torch's own allocations);
4. measures the model-FLOPs utilisation of the product's teacher-forced forward+backward: its
   FLOPs (counted by torch's FlopCounterMode) per second over the FLOP/s of a large matmul on this device;
5. prints where the product step's time goes (sampling, teacher-forced, reference, reward, loss,
   backward, optimizer).
Targets (issue 6, `small` preset, K=4, CPU): ≥ 3× the reference's prompts/s at ≤ 0.5× its peak
memory. Exits 1 when a target or the agreement check is missed.

    python bench/aft_step.py [--sft MODEL_DIR] [--out DIR] [--steps N]
    python bench/aft_step.py --model large --device cuda --max-new-tokens 128   # GPU timing, untrained T5-Large shape
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aft_core.aft import PROMPT_COLUMNS, aft_step_loss, apply_update, score_candidates  # noqa: E402
from aft_core.config import AFTConfig  # noqa: E402
from aft_core.data.batching import BatchSchedule, SourceBatch  # noqa: E402
from aft_core.data.corpus import load_corpus  # noqa: E402
from aft_core.data.dataset import corpus_to_dataset, encode_table  # noqa: E402
from aft_core.loss import sequence_logprob  # noqa: E402
from aft_core.models import (  # noqa: E402
    family_of,
    parse_layers,
    response_mask,
    torch_threads,  # noqa: E402
)
from aft_core.timing import PhaseTimer  # noqa: E402
from bench.common import load_pair, matmul_flops_per_second, median_seconds, peak_memory_bytes, prepare_model  # noqa: E402
from bench.reference_step import reference_step_loss, stack_candidates  # noqa: E402

SPEED_TARGET = 3.0  # product prompts/s ÷ reference prompts/s, at least
MEMORY_TARGET = 0.5  # product peak ÷ reference peak, at most
# Agreement: fp32 on CPU differs only by summation order; bf16 autocast on a GPU by far more.
TOLERANCE = {
    "cpu": {"reward_abs": 1e-4, "loss_rel": 1e-4, "grad_rel": 1e-3},
    "cuda": {"reward_abs": 5e-2, "loss_rel": 5e-2, "grad_rel": 1e-1},
}
PHASES = ("sampling", "teacher_forced", "reference", "reward", "loss", "backward", "optimizer")


class StepBench:
    """A policy, its reference, the training rows and one implementation's step, restartable from the same weights."""

    def __init__(self, model_dir: str, corpus_dir: str, cfg: AFTConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.policy, self.reference, tokenizer = load_pair(model_dir, device)
        self.family = family_of(self.policy, tokenizer)
        self.pad_id, self.eos_id = self.family.pad_id(), self.family.eos_id()
        self.layers = parse_layers(cfg.layers, self.family.attention_layers(self.policy))
        train = encode_table(
            corpus_to_dataset(load_corpus(corpus_dir))["train"], tokenizer, self.family, cfg.max_source_tokens, 8
        )
        self.rows = train.select_columns(PROMPT_COLUMNS).to_list()
        self.schedule = BatchSchedule([len(r["input_ids"]) for r in self.rows], cfg.batch_size, cfg.seed + 1)
        self.initial = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}

    def batch(self, step: int) -> SourceBatch:
        return SourceBatch.from_rows([self.rows[i] for i in self.schedule(step)], self.pad_id).to(self.device)

    def restart(self) -> torch.optim.Optimizer:
        """Back to the initial weights with a fresh optimizer and the run's seed."""
        self.policy.load_state_dict(self.initial)
        torch.manual_seed(self.cfg.seed)
        return torch.optim.AdamW(self.policy.parameters(), lr=self.cfg.learning_rate)

    def step_fn(self, impl: str, optimizer: torch.optim.Optimizer, timer: Callable = None) -> Callable[[int], dict]:
        timer = timer or PhaseTimer()

        def step(index: int) -> dict[str, Any]:
            src = self.batch(index)
            if impl == "product":
                parts, metrics = aft_step_loss(
                    self.policy, self.reference, self.family, src, self.cfg, self.layers, timer
                )
                length = metrics["sample_length"]
            else:
                parts, sequences = reference_step_loss(
                    self.policy, self.reference, src, self.cfg, self.layers, self.pad_id, self.eos_id, timer
                )
                labels = stack_candidates(sequences, self.pad_id)[:, 1:]
                length = float((response_mask(labels, self.eos_id) & (labels != self.eos_id)).sum(dim=1).float().mean())
            apply_update(self.policy, optimizer, parts["loss"], self.cfg.grad_clip, timer)
            return {"sample_length": length}

        return step


def check_agreement(bench: StepBench) -> dict[str, Any]:
    """Score the reference's own samples with both implementations; compare rewards, loss and gradient."""
    tol = TOLERANCE[bench.device.type]
    bench.restart()
    src = bench.batch(0)
    ref_parts, sequences = reference_step_loss(
        bench.policy, bench.reference, src, bench.cfg, bench.layers, bench.pad_id, bench.eos_id
    )
    ref_parts["loss"].backward()
    ref_grad = torch.cat([p.grad.flatten() for p in bench.policy.parameters() if p.grad is not None])
    bench.policy.zero_grad(set_to_none=True)
    samples = stack_candidates(sequences, bench.pad_id)
    parts, _ = score_candidates(bench.policy, bench.reference, bench.family, src, samples, bench.cfg, bench.layers)
    parts["loss"].backward()
    grad = torch.cat([p.grad.flatten() for p in bench.policy.parameters() if p.grad is not None])
    bench.policy.zero_grad(set_to_none=True)
    found = {
        "reward_abs": float((parts["rewards"] - ref_parts["rewards"]).abs().max()),
        "loss_rel": float(
            (parts["loss"] - ref_parts["loss"]).detach().abs() / ref_parts["loss"].detach().abs().clamp(min=1e-8)
        ),
        "grad_rel": float((grad - ref_grad).norm() / ref_grad.norm().clamp(min=1e-12)),
    }
    return {
        "differences": found,
        "tolerances": tol,
        "ok": all(found[k] <= tol[k] for k in tol),
        "loss": {"product": float(parts["loss"].detach()), "reference": float(ref_parts["loss"].detach())},
        "reward_std": float(ref_parts["rewards"].std()),
    }


def time_steps(bench: StepBench, impl: str, steps: int) -> dict[str, Any]:
    optimizer = bench.restart()
    bench.step_fn(impl, optimizer)(0)  # warm-up: allocator, optimizer state, lazy inits
    timer = PhaseTimer()
    step = bench.step_fn(impl, optimizer, timer)
    lengths = []
    started = time.perf_counter()
    for i in range(1, steps + 1):
        lengths.append(step(i)["sample_length"])
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "steps": steps,
        "prompts_per_s": steps * bench.cfg.batch_size / seconds,
        "mean_sample_length": sum(lengths) / len(lengths),
        "phases_s": {p: round(timer.seconds.get(p, 0.0), 3) for p in PHASES},
    }


def peak_memory(bench: StepBench, impl: str, steps: int) -> int:
    optimizer = bench.restart()
    step = bench.step_fn(impl, optimizer)
    step(0)  # the optimizer's state exists before measuring, for both implementations
    return max(peak_memory_bytes(lambda i=i: step(i), bench.device) for i in range(1, steps + 1))


def model_flops_utilisation(bench: StepBench, repeats: int) -> dict[str, Any]:
    """FLOP/s of the product's teacher-forced forward+backward over a large matmul's FLOP/s."""
    from torch.utils.flop_counter import FlopCounterMode

    bench.restart()
    src = bench.batch(0)
    samples = bench.family.generate(
        bench.policy, src, max_new_tokens=bench.cfg.max_new_tokens, do_sample=True, k=bench.cfg.k
    )

    def forward_backward() -> None:
        state = bench.family.prompt_state(bench.policy, src)
        tf = bench.family.teacher_forced(bench.policy, src, samples, bench.cfg.k, bench.layers, state)
        sequence_logprob(tf["token_logp"], tf["tgt_mask"]).sum().backward()
        bench.policy.zero_grad(set_to_none=True)

    forward_backward()
    with FlopCounterMode(display=False) as counter:
        forward_backward()
    flops = counter.get_total_flops()
    seconds = median_seconds(forward_backward, bench.device, repeats)
    if bench.device.type == "cuda":
        peak = matmul_flops_per_second(bench.device, torch.bfloat16, 8192)
    else:
        peak = matmul_flops_per_second(bench.device, torch.float32, 2048)
    achieved = flops / seconds
    return {
        "flops": flops,
        "seconds": seconds,
        "achieved_flops_per_s": achieved,
        "matmul_flops_per_s": peak,
        "mfu": achieved / peak,
        "sequences": int(samples.shape[0]),
        "target_length": int(samples.shape[1] - 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", help="SFT model folder to time (default: a short SFT run of `small`)")
    parser.add_argument(
        "--model", choices=["tiny", "small", "large"], help="time an untrained preset built from config instead"
    )
    parser.add_argument("--sft-steps", type=int, default=600, help="steps of the default short SFT run")
    parser.add_argument("--out", help="work folder (default: a fresh temporary folder)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per implementation (after one warm-up step)")
    parser.add_argument("--memory-steps", type=int, default=3, help="steps whose peak memory is measured")
    parser.add_argument("--batch-size", type=int, default=AFTConfig.batch_size)
    parser.add_argument("--k", type=int, default=AFTConfig.k)
    parser.add_argument("--max-new-tokens", type=int, default=AFTConfig.max_new_tokens)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="aft-bench-step-"))
    device = torch.device(args.device)
    torch.set_num_threads(torch_threads())

    corpus_dir, model_dir = prepare_model(out, args.sft, args.model, args.sft_steps)
    cfg = AFTConfig(
        sft_model=model_dir, data=corpus_dir, batch_size=args.batch_size, k=args.k, max_new_tokens=args.max_new_tokens
    ).validate()
    bench = StepBench(model_dir, corpus_dir, cfg, device)
    agreement = check_agreement(bench)
    timing = {impl: time_steps(bench, impl, args.steps) for impl in ("reference", "product")}
    memory = {impl: peak_memory(bench, impl, args.memory_steps) for impl in ("reference", "product")}
    mfu = model_flops_utilisation(bench, repeats=5)

    speedup = timing["product"]["prompts_per_s"] / timing["reference"]["prompts_per_s"]
    memory_ratio = memory["product"] / memory["reference"]
    product_phases = timing["product"]["phases_s"]
    total = sum(product_phases.values())
    report = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "model": model_dir,
        "parameters": sum(p.numel() for p in bench.policy.parameters()),
        "batch_size": cfg.batch_size,
        "k": cfg.k,
        "max_new_tokens": cfg.max_new_tokens,
        "agreement": agreement,
        "timing": timing,
        "peak_memory_mib": {impl: round(b / 2**20, 2) for impl, b in memory.items()},
        "speedup": round(speedup, 2),
        "memory_ratio": round(memory_ratio, 3),
        "mfu": mfu,
        "product_seconds_per_step": timing["product"]["seconds"] / timing["product"]["steps"],
        "product_time_share": {p: round(s / total, 3) for p, s in product_phases.items()},
    }
    print(json.dumps(report, indent=2))
    ok = agreement["ok"] and speedup >= SPEED_TARGET and memory_ratio <= MEMORY_TARGET
    d = agreement["differences"]
    print(
        f"agreement: max |Δreward| {d['reward_abs']:.2e}, loss rel {d['loss_rel']:.2e}, grad rel {d['grad_rel']:.2e} "
        f"-> {'ok' if agreement['ok'] else 'DISAGREE'}"
    )
    print(
        f"prompts/s: product {timing['product']['prompts_per_s']:.2f}, "
        f"reference {timing['reference']['prompts_per_s']:.2f} "
        f"-> speedup {speedup:.2f}x (target >= {SPEED_TARGET}x)"
    )
    print(
        f"peak memory: product {memory['product'] / 2**20:.1f} MiB, reference {memory['reference'] / 2**20:.1f} MiB "
        f"-> ratio {memory_ratio:.3f} (target <= {MEMORY_TARGET})"
    )
    print(
        f"MFU of teacher-forced fwd+bwd: {mfu['achieved_flops_per_s'] / 1e9:.2f} GFLOP/s of "
        f"{mfu['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s matmul = {mfu['mfu']:.1%}"
    )
    print("product step time: " + ", ".join(f"{p} {share:.0%}" for p, share in report["product_time_share"].items()))
    print(f"seconds per product step: {report['product_seconds_per_step']:.3f} -> {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
