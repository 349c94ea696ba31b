"""The decoder-only AFT step against the peer a user would pick: TRL's GRPOTrainer with the HACA reward (issue 20).

Both run in one process on the same Llama-shaped chat model (causal-small's shape: 128 wide, 4 layers, a chat
template), the same prompts, B, K and response length:

- **product**: `aft_core.aft.aft_step_loss` + one AdamW update. One prefill per prompt whose KV cache its K samples
  share; one teacher-forced pass reading A only in the selected layers and only in the rows that predict response
  tokens (SDPA elsewhere); the reference's pass; the HACA reward from the policy's own pass.
- **TRL**: `GRPOTrainer` (num_generations = K, β = η_kl, one update per generation batch) whose reward function is
  HACA as a TRL user has to write it: TRL hands it prompts and completion ids, so it rebuilds each prompt's ids and
  token map, and runs its own forward pass of the current policy with `output_attentions=True` (eager attention)
  to read A. GRPO's loss is not AFT's (advantages, not softmax weights): what is compared is the cost of a step
  that samples K, scores them by the policy's attention, and updates against a reference.

Prints prompts/s, peak memory (torch's allocations, profiler-counted, the same way for both) and reward agreement
(TRL's reward function against the product's rewards on the product's own samples). Target: ≥ 2× prompts/s at
≤ 1× peak memory; exits 1 on a miss. TRL is a bench-only extra: `pip install -c constraints.txt -e ".[bench]"`.

    python bench/causal_step.py [--steps 4] [--batch-size 8] [--k 4] [--max-new-tokens 48]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aft_core.aft import PROMPT_COLUMNS, aft_step_loss, apply_update, score_candidates  # noqa: E402
from aft_core.config import AFTConfig  # noqa: E402
from aft_core.data.batching import SourceBatch  # noqa: E402
from aft_core.data.corpus import load_corpus  # noqa: E402
from aft_core.data.dataset import corpus_to_dataset, encode_table, tokenizer_texts  # noqa: E402
from aft_core.data.examples import Turn  # noqa: E402
from aft_core.data.towninfo import generate_towninfo  # noqa: E402
from aft_core.models import family_of, load_model, parse_layers, torch_threads  # noqa: E402
from aft_core.reward import haca_reward  # noqa: E402
from bench.common import peak_memory_bytes  # noqa: E402
from bench.hub_models import build_llama_chat  # noqa: E402

SPEED_TARGET = 2.0  # product prompts/s ÷ TRL prompts/s, at least
MEMORY_TARGET = 1.0  # product peak ÷ TRL peak, at most
REWARD_TOLERANCE = 1e-4


def prompts_table(corpus_dir: str, tokenizer: Any, family: Any, cfg: AFTConfig, n: int) -> list[dict[str, Any]]:
    """The first n training prompts that fit the budget uncut.

    So TRL's own chat-template rendering gives the same ids."""
    table = corpus_to_dataset(load_corpus(corpus_dir))["train"]
    rows = encode_table(table.select(range(4 * n)), tokenizer, family, 10_000, 8).to_list()
    return [r for r in rows if len(r["input_ids"]) <= cfg.max_source_tokens][:n]


def messages(row: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"role": "user" if s == "user" else "assistant", "content": t}
        for s, t in zip(row["history_speakers"], row["history_texts"], strict=True)
    ]


def haca_reward_for_trl(policy: Any, tokenizer: Any, family: Any, cfg: AFTConfig, layers: list[int]):
    """HACA as a TRL reward function: re-tokenise, one eager forward with output_attentions, A as AFT_SPEC §8."""

    def reward(prompts, completions, completion_ids, history_speakers, history_texts, history_slot_values, **_):
        values = []
        for speakers, texts, slots, ids in zip(
            history_speakers, history_texts, history_slot_values, completion_ids, strict=True
        ):
            history = [Turn(s, t, tuple(v)) for s, t, v in zip(speakers, texts, slots, strict=True)]
            row = family.encode_prompts([history], tokenizer, 10_000)[0]
            response = list(ids)
            full = torch.tensor([row["input_ids"] + response])
            was = policy.config._attn_implementation
            policy.set_attn_implementation("eager")
            try:
                with torch.no_grad():
                    out = policy(input_ids=full, output_attentions=True)
            finally:
                policy.set_attn_implementation(was)
            s = len(row["input_ids"])
            rows = torch.arange(len(response)) + s - 1
            raw = torch.stack([out.attentions[layer][0].mean(dim=0) for layer in layers]).mean(dim=0)[rows, :s]  # [T,S]
            src = SourceBatch.from_rows([row], family.pad_id())
            keep = src.attention_mask[0].bool() & ~src.src_is_template[0]
            attn = raw * keep / (raw * keep).sum(dim=-1, keepdim=True)
            labels = torch.tensor([response])
            mask = torch.ones_like(labels, dtype=torch.bool)
            values.append(
                float(
                    haca_reward(
                        attn[None],
                        labels,
                        mask,
                        src.mask(cfg.ix_mode),
                        cfg.alpha,
                        cfg.beta,
                        cfg.gamma,
                        cfg.repeat_n,
                        (family.pad_id(), family.eos_id()),
                    )[0]
                )
            )
        return values

    return reward


def product_run(model_dir: str, rows: list[dict[str, Any]], cfg: AFTConfig, steps: int) -> dict[str, Any]:
    policy, tokenizer = load_model(model_dir)
    reference, _ = load_model(model_dir)
    policy.eval()
    reference.eval().requires_grad_(False)
    family = family_of(policy, tokenizer)
    layers = parse_layers(cfg.layers, family.attention_layers(policy))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.learning_rate)
    batches = [
        SourceBatch.from_rows(
            [{k: r[k] for k in PROMPT_COLUMNS} for r in rows[i * cfg.batch_size : (i + 1) * cfg.batch_size]],
            family.pad_id(),
        )
        for i in range(steps + 1)
    ]

    def step(i: int) -> float:
        parts, metrics = aft_step_loss(policy, reference, family, batches[i], cfg, layers)
        apply_update(policy, optimizer, parts["loss"], cfg.grad_clip)
        return metrics["sample_length"]

    torch.manual_seed(cfg.seed)
    step(0)  # warm-up
    started = time.perf_counter()
    lengths = [step(i) for i in range(1, steps + 1)]
    seconds = time.perf_counter() - started
    peak = peak_memory_bytes(lambda: step(1), torch.device("cpu"))
    # Agreement: the TRL-style reward function on the product's own samples of one batch
    torch.manual_seed(cfg.seed + 1)
    src = batches[0]
    with torch.no_grad():
        samples = family.generate(policy, src, max_new_tokens=cfg.max_new_tokens, do_sample=True, k=cfg.k)
    parts, _ = score_candidates(policy, reference, family, src, samples, cfg, layers)
    fn = haca_reward_for_trl(policy, tokenizer, family, cfg, layers)
    batch_rows = rows[: cfg.batch_size]
    tf_mask = family.teacher_forced(policy, src, samples, cfg.k, None)["tgt_mask"]
    completion_ids = [samples[n, 1:][tf_mask[n]].tolist() for n in range(samples.shape[0])]
    repeat = lambda key: [r[key] for r in batch_rows for _ in range(cfg.k)]  # noqa: E731
    theirs = torch.tensor(
        fn(
            None,
            None,
            completion_ids,
            repeat("history_speakers"),
            repeat("history_texts"),
            repeat("history_slot_values"),
        )
    )
    return {
        "seconds": seconds,
        "prompts_per_s": steps * cfg.batch_size / seconds,
        "mean_sample_length": sum(lengths) / len(lengths),
        "peak_bytes": peak,
        "reward_max_abs_difference": float((theirs - parts["rewards"].flatten()).abs().max()),
    }


def trl_run(model_dir: str, rows: list[dict[str, Any]], cfg: AFTConfig, steps: int, out: Path) -> dict[str, Any]:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, attn_implementation="sdpa")
    family = family_of(policy, tokenizer)
    layers = parse_layers(cfg.layers, family.attention_layers(policy))
    dataset = datasets.Dataset.from_list(
        [
            {
                "prompt": messages(r),
                "history_speakers": r["history_speakers"],
                "history_texts": r["history_texts"],
                "history_slot_values": r["history_slot_values"],
            }
            for r in rows
        ]
    )
    args = GRPOConfig(
        output_dir=str(out / "trl"),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1000,
        max_steps=steps + 1,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size * cfg.k,
        num_generations=cfg.k,
        generation_batch_size=cfg.batch_size * cfg.k,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=1.0,
        top_k=0,
        beta=cfg.eta_kl,
        num_iterations=1,
        max_grad_norm=cfg.grad_clip,
        shuffle_dataset=False,
        disable_dropout=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
    )  # TRL turns it on by default: off, TRL is at its fastest
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            times.append(time.perf_counter())

    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=haca_reward_for_trl(policy, tokenizer, family, cfg, layers),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    peak = peak_memory_bytes(trainer.train, torch.device("cpu"))
    seconds = times[-1] - times[0]  # the first step is the warm-up
    return {"seconds": seconds, "prompts_per_s": steps * cfg.batch_size / seconds, "peak_bytes": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="work folder (default: a fresh temporary folder)")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per implementation (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=AFTConfig.batch_size)
    parser.add_argument("--k", type=int, default=AFTConfig.k)
    parser.add_argument("--max-new-tokens", type=int, default=AFTConfig.max_new_tokens)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="aft-bench-causal-"))
    torch.set_num_threads(torch_threads())
    try:
        import trl
    except ImportError:
        print('TRL is not installed: pip install -c constraints.txt -e ".[bench]"', file=sys.stderr)
        return 2
    corpus_dir = generate_towninfo(out / "towninfo")
    texts = tokenizer_texts(corpus_to_dataset(load_corpus(corpus_dir))["train"])
    model_dir = str(build_llama_chat(out / "llama-chat", texts, layers=4, hidden=128, heads=4, kv_heads=4))
    cfg = AFTConfig(
        sft_model=model_dir,
        data=str(corpus_dir),
        batch_size=args.batch_size,
        k=args.k,
        max_new_tokens=args.max_new_tokens,
    ).validate()
    policy, tokenizer = load_model(model_dir)
    rows = prompts_table(
        str(corpus_dir), tokenizer, family_of(policy, tokenizer), cfg, (args.steps + 2) * cfg.batch_size
    )
    product = product_run(model_dir, rows, cfg, args.steps)
    peer = trl_run(model_dir, rows, cfg, args.steps, out)
    speedup = product["prompts_per_s"] / peer["prompts_per_s"]
    memory_ratio = product["peak_bytes"] / peer["peak_bytes"]
    agree = product["reward_max_abs_difference"] <= REWARD_TOLERANCE
    report = {
        "trl": trl.__version__,
        "threads": torch.get_num_threads(),
        "model": model_dir,
        "parameters": sum(p.numel() for p in policy.parameters()),
        "batch_size": cfg.batch_size,
        "k": cfg.k,
        "max_new_tokens": cfg.max_new_tokens,
        "product": product,
        "trl_grpo": peer,
        "speedup": round(speedup, 2),
        "memory_ratio": round(memory_ratio, 3),
    }
    print(json.dumps(report, indent=2))
    print(
        f"reward agreement: max |Δreward| {product['reward_max_abs_difference']:.2e} -> {'ok' if agree else 'DISAGREE'}"
    )
    print(
        f"prompts/s: product {product['prompts_per_s']:.2f}, TRL GRPOTrainer {peer['prompts_per_s']:.2f} "
        f"-> speedup {speedup:.2f}x (target >= {SPEED_TARGET}x)"
    )
    print(
        f"peak memory: product {product['peak_bytes'] / 2**20:.1f} MiB, TRL {peer['peak_bytes'] / 2**20:.1f} MiB "
        f"-> ratio {memory_ratio:.3f} (target <= {MEMORY_TARGET})"
    )
    ok = agree and speedup >= SPEED_TARGET and memory_ratio <= MEMORY_TARGET
    print("PASS" if ok else "MISS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
