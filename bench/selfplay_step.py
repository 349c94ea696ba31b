"""Benchmark: the self-play AFT step against the obvious loop (issue 30, item 4).

Both advance the same buffer of live conversations (`rollout: self_play`; the same training goals and user seeds,
drawn from the branch seed at step 0, then taken `--warm-steps` product steps in so that the histories are some
turns long, as a branch's mostly are between refreshes) by one system turn per picked conversation per step, and
take one optimizer step. Both start from the same weights, optimizer state, seed and buffer state.

- **The product:** `BranchRun.train_step` of a self-play branch. Every picked conversation's history is one prompt
  of a batch; the K candidates of all of them are sampled together, scored by one teacher-forced pass that shares
  each prompt's encoder state, with attention read only on the layers the reward uses (aft_core.aft).
- **The obvious loop:** one conversation at a time. Its history is encoded alone, its K candidates come from K
  `generate` calls with attentions, and each candidate gets its own policy and reference forward
  (bench/reference_step.py, issue 6's yardstick). The conversations' losses are averaged into one backward, as
  the product's loss is a mean over prompts. Each conversation goes on with its highest-weighted candidate, as in
  the product.

**Agreement:** on one step, every conversation's K candidates from the obvious loop are scored together by the
product's `score_candidates` (all the step's conversations in one batch); the rewards, the loss and the gradient
must equal the one-at-a-time ones within fp32 rounding.

**Targets:** >= 3x conversation turns per second at <= 0.5x peak memory (torch's own allocations above what was
allocated before the step). Prints the figures; exits 1 on a miss.

    python bench/selfplay_step.py [--sft MODEL_DIR] [--steps 6] [--batch-size 8] [--k 4]

Without --sft, a short SFT run of the `small` preset (600 steps) gives replies of realistic length; with the main
job's model (`--sft runs/main/sft/model`) the figures are those of the preset's branches.
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

from aft_core.aft import BranchRun, apply_update, score_candidates  # noqa: E402
from aft_core.attractors import AttractorThresholds  # noqa: E402
from aft_core.config import AFTConfig  # noqa: E402
from aft_core.data.batching import SourceBatch  # noqa: E402
from aft_core.data.corpus import load_corpus  # noqa: E402
from aft_core.data.dataset import corpus_to_dataset  # noqa: E402
from aft_core.data.towninfo import load_database  # noqa: E402
from aft_core.layout import BranchLayout  # noqa: E402
from aft_core.loss import softmax_weights  # noqa: E402
from aft_core.models import model_device, torch_threads, trainable_parameters  # noqa: E402
from aft_core.tracking import NullTracker  # noqa: E402
from bench.common import matmul_flops_per_second, peak_memory_bytes, prepare_model  # noqa: E402
from bench.reference_step import reference_step_loss, stack_candidates  # noqa: E402

SPEED_TARGET = 3.0  # product conversation turns/s ÷ the obvious loop's, at least
MEMORY_TARGET = 0.5  # product peak ÷ the obvious loop's peak, at most
TOLERANCE = {"reward_abs": 1e-4, "loss_rel": 1e-4, "grad_rel": 1e-3}  # fp32 on a CPU: summation order only


class SelfPlayBench:
    """A self-play branch (its policy, π_ref and buffer of live conversations), restartable from the same weights."""

    def __init__(self, cfg: AFTConfig, out: Path, warm_steps: int) -> None:
        tables = corpus_to_dataset(load_corpus(cfg.data))
        db = load_database(Path(cfg.data))
        self.cfg = cfg
        self.run = BranchRun(cfg, BranchLayout(out / "branch"), tables, db, NullTracker(), AttractorThresholds())
        buffer = self.run.self_play
        assert buffer is not None  # cfg.rollout == "self_play"
        self.buffer = buffer
        self.initial = {k: v.detach().clone() for k, v in self.run.model.state_dict().items()}
        # Conversations some turns in, as a branch's buffer mostly is between refreshes: the first turns' histories
        # are a single user utterance, which neither implementation would be timed on fairly.
        torch.manual_seed(cfg.seed)
        for step in range(warm_steps + 1):
            self.run.train_step(step)  # step 0 draws the conversations (the refresh schedule)
        self.warm_state = buffer.state()
        self.mean_history_turns = sum(len(s.history) for s in buffer.slots) / len(buffer.slots)

    def restart(self) -> torch.optim.Optimizer:
        """The initial weights, a fresh optimizer, the run's seed and the warmed-up conversations."""
        self.run.model.load_state_dict(self.initial)
        self.run.optimizer = torch.optim.AdamW(trainable_parameters(self.run.model), lr=self.cfg.learning_rate)
        torch.manual_seed(self.cfg.seed)
        self.buffer.restore(self.warm_state)
        return self.run.optimizer

    def prompts(self, picked: list[int]) -> SourceBatch:
        """The picked conversations' histories, encoded as the product encodes them."""
        histories = self.buffer.histories(picked)
        rows = self.run.family.encode_prompts(histories, self.run.tokenizer, self.cfg.max_source_tokens)
        return SourceBatch.from_rows(rows, self.run.pad_id).to(model_device(self.run.model))

    def obvious_scores(self, picked: list[int]) -> tuple[torch.Tensor, list[torch.Tensor], list[list[torch.Tensor]]]:
        """One conversation at a time: (mean loss over them, rewards [K] per conversation, K sequences each)."""
        run, eos = self.run, self.run.family.eos_id()
        losses, rewards, sequences = [], [], []
        for index in picked:
            parts, seqs = reference_step_loss(
                run.model, run.reference, self.prompts([index]), self.cfg, run.layers, run.pad_id, eos
            )
            losses.append(parts["loss"])
            rewards.append(parts["rewards"][0])
            sequences.append(seqs)
        return torch.stack(losses).mean(), rewards, sequences

    def obvious_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The obvious loop's step: score one conversation at a time, one update, each goes on with its best reply."""
        picked = self.buffer.take(self.cfg.batch_size)
        loss, rewards, sequences = self.obvious_scores(picked)
        apply_update(self.run.model, optimizer, loss, self.cfg.grad_clip)
        replies = []
        for reward, seqs in zip(rewards, sequences, strict=True):
            best = int(softmax_weights(reward[None], self.cfg.eta)[0].argmax())
            replies.append(self.run.tokenizer.decode(seqs[best][0], skip_special_tokens=True).strip())
        self.buffer.answer(picked, replies)

    def step_fn(self, impl: str) -> Callable[[int], None]:
        """A step of `impl` after one untimed step (allocator, optimizer state); steps never reach a refresh."""
        optimizer = self.restart()
        if impl == "product":
            self.run.train_step(1)
            return lambda step: self.run.train_step(step)
        self.obvious_step(optimizer)
        return lambda step: self.obvious_step(optimizer)


def check_agreement(bench: SelfPlayBench) -> dict[str, Any]:
    """The obvious loop's candidates of one step, scored together by the product: rewards, loss and gradient."""
    bench.restart()
    run, cfg = bench.run, bench.cfg
    picked = bench.buffer.take(cfg.batch_size)
    loss, rewards, sequences = bench.obvious_scores(picked)
    loss.backward()
    obvious_grad = torch.cat([p.grad.flatten() for p in run.model.parameters() if p.grad is not None])
    run.model.zero_grad(set_to_none=True)
    per_conversation = [stack_candidates(seqs, run.pad_id) for seqs in sequences]  # [K, 1+T_b] each
    width = max(s.shape[1] for s in per_conversation)
    samples = torch.cat(
        [torch.nn.functional.pad(s, (0, width - s.shape[1]), value=run.pad_id) for s in per_conversation]
    )  # [B*K, 1+T]: a conversation's K candidates adjacent
    parts, _ = score_candidates(run.model, run.reference, run.family, bench.prompts(picked), samples, cfg, run.layers)
    parts["loss"].backward()
    grad = torch.cat([p.grad.flatten() for p in run.model.parameters() if p.grad is not None])
    run.model.zero_grad(set_to_none=True)
    one_at_a_time = torch.stack(rewards)  # [B,K]
    found = {
        "reward_abs": float((parts["rewards"] - one_at_a_time).abs().max()),
        "loss_rel": float((parts["loss"] - loss).detach().abs() / loss.detach().abs().clamp(min=1e-8)),
        "grad_rel": float((grad - obvious_grad).norm() / obvious_grad.norm().clamp(min=1e-12)),
    }
    return {
        "differences": found,
        "tolerances": TOLERANCE,
        "ok": all(found[k] <= TOLERANCE[k] for k in TOLERANCE),
        "reward_std": float(one_at_a_time.std()),
    }


def time_steps(bench: SelfPlayBench, impl: str, steps: int) -> dict[str, Any]:
    step = bench.step_fn(impl)
    started = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    seconds = time.perf_counter() - started
    turns = steps * bench.cfg.batch_size
    return {"seconds": round(seconds, 3), "steps": steps, "turns_per_s": turns / seconds}


def peak_memory(bench: SelfPlayBench, impl: str, steps: int) -> int:
    step = bench.step_fn(impl)  # its warm-up step: the optimizer's state exists before measuring
    return max(peak_memory_bytes(lambda i=i: step(i), torch.device("cpu")) for i in range(1, steps + 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", help="an SFT model folder trained on the default TownInfo corpus")
    parser.add_argument("--sft-steps", type=int, default=600, help="steps of the default short SFT run")
    parser.add_argument("--out", help="work folder (default: a fresh temporary folder)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per implementation (after one warm-up)")
    parser.add_argument("--memory-steps", type=int, default=2, help="steps whose peak memory is measured")
    parser.add_argument("--batch-size", type=int, default=AFTConfig.batch_size, help="conversations per step")
    parser.add_argument("--k", type=int, default=AFTConfig.k)
    parser.add_argument("--conversations", type=int, default=AFTConfig.self_play_conversations)
    parser.add_argument(
        "--warm-steps", type=int, default=24, help="product steps that advance the conversations before measuring"
    )
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="aft-bench-selfplay-step-"))
    torch.set_num_threads(torch_threads())

    corpus_dir, model_dir = prepare_model(out, args.sft, None, args.sft_steps)
    cfg = AFTConfig(
        sft_model=model_dir,
        data=corpus_dir,
        rollout="self_play",
        batch_size=args.batch_size,
        k=args.k,
        self_play_conversations=args.conversations,
        self_play_refresh_every=args.warm_steps + args.steps + 10,  # no refresh while measured
    ).validate()
    bench = SelfPlayBench(cfg, out, args.warm_steps)
    agreement = check_agreement(bench)
    timing = {impl: time_steps(bench, impl, args.steps) for impl in ("obvious", "product")}
    memory = {impl: peak_memory(bench, impl, args.memory_steps) for impl in ("obvious", "product")}
    speedup = timing["product"]["turns_per_s"] / timing["obvious"]["turns_per_s"]
    memory_ratio = memory["product"] / memory["obvious"]
    report = {
        "model": model_dir,
        "threads": torch.get_num_threads(),
        "matmul_gflops": round(matmul_flops_per_second(torch.device("cpu"), torch.float32, 2048) / 1e9, 1),
        "batch_size": cfg.batch_size,
        "k": cfg.k,
        "conversations": cfg.self_play_conversations,
        "warm_steps": args.warm_steps,
        "mean_history_turns": round(bench.mean_history_turns, 2),
        "agreement": agreement,
        "timing": timing,
        "peak_memory_mib": {impl: round(b / 2**20, 2) for impl, b in memory.items()},
        "speedup": round(speedup, 2),
        "memory_ratio": round(memory_ratio, 3),
    }
    print(json.dumps(report, indent=2))
    ok = agreement["ok"] and speedup >= SPEED_TARGET and memory_ratio <= MEMORY_TARGET
    d = agreement["differences"]
    print(
        f"agreement (the same candidates, batched vs one conversation at a time): max |Δreward| "
        f"{d['reward_abs']:.2e}, loss rel {d['loss_rel']:.2e}, grad rel {d['grad_rel']:.2e} "
        f"-> {'ok' if agreement['ok'] else 'DISAGREE'}"
    )
    print(
        f"conversation turns/s: product {timing['product']['turns_per_s']:.2f}, obvious loop "
        f"{timing['obvious']['turns_per_s']:.2f} -> speedup {speedup:.2f}x (target >= {SPEED_TARGET}x)"
    )
    print(
        f"peak memory: product {memory['product'] / 2**20:.1f} MiB, obvious loop {memory['obvious'] / 2**20:.1f} MiB "
        f"-> ratio {memory_ratio:.3f} (target <= {MEMORY_TARGET}) -> {'PASS' if ok else 'MISS'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
