"""Benchmark: batched self-play against one conversation at a time (issue 29: >= 5x conversations/s, same goals,
identical greedy transcripts).

Both loops are `aft_core.dialogue.selfplay.converse` with the same model, goals, reveal mode and seed; the
batched one advances every live conversation together (one generation per round), the other runs them one
after the other. They are timed side by side in one process, alternating, and their transcripts compared word
for word. Prints the ratio; exits 1 on a miss (ratio under target, or any transcript differing).

    python bench/selfplay.py [--sft MODEL_DIR] [--goals 100] [--reveal sharded] [--sft-steps 300]

Without --sft, a short SFT run of the `small` preset gives a model whose replies have realistic lengths.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aft_core.data.towninfo import load_database  # noqa: E402
from aft_core.dialogue.goals import load_goals  # noqa: E402
from aft_core.dialogue.metrics import summarise  # noqa: E402
from aft_core.dialogue.reader import Reader  # noqa: E402
from aft_core.dialogue.selfplay import ModelSystem, converse  # noqa: E402
from aft_core.models import load_model  # noqa: E402
from bench.common import matmul_flops_per_second, prepare_model  # noqa: E402

TARGET = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", help="an SFT model folder trained on the default TownInfo corpus")
    parser.add_argument("--goals", type=int, default=100, help="TownInfo test goals (the same for both loops)")
    parser.add_argument("--reveal", default="sharded", choices=("full", "sharded", "agenda"))
    parser.add_argument("--sft-steps", type=int, default=300, help="SFT steps when no --sft is given")
    parser.add_argument("--max-exchanges", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128, help="conversations per generation batch")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="aft-bench-selfplay-"))
    corpus_dir, model_dir = prepare_model(out, args.sft, None, args.sft_steps)
    model, tokenizer = load_model(model_dir)
    system = ModelSystem(model.eval(), tokenizer, max_source_tokens=192, max_new_tokens=48, batch_size=args.batch_size)
    reader, goals = Reader(load_database(corpus_dir)), load_goals(corpus_dir, "test")[: args.goals]
    run = dict(reveal=args.reveal, seed=0, max_exchanges=args.max_exchanges)

    converse(system, goals[:2], reader, **run)  # warm-up
    seconds = {"batched": 0.0, "one_at_a_time": 0.0}
    records = {}
    for name, batched in (("one_at_a_time", False), ("batched", True)):
        started = time.perf_counter()
        records[name] = converse(system, goals, reader, batched=batched, **run)
        seconds[name] = time.perf_counter() - started
    rate = {name: len(goals) / s for name, s in seconds.items()}
    ratio = rate["batched"] / rate["one_at_a_time"]
    same = sum(
        [t["text"] for t in a["turns"]] == [t["text"] for t in b["turns"]]
        for a, b in zip(records["batched"], records["one_at_a_time"], strict=True)
    )
    summary = summarise([r["outcome"] for r in records["batched"]])
    report = {
        "goals": len(goals),
        "reveal": args.reveal,
        "conversations_per_s": {k: round(v, 3) for k, v in rate.items()},
        "ratio": round(ratio, 2),
        "target": TARGET,
        "identical_transcripts": f"{same}/{len(goals)}",
        "system_turns": sum(r["outcome"]["turns"] for r in records["batched"]),
        "success": summary["success"][0],
        "threads": torch.get_num_threads(),
        "matmul_gflops": round(matmul_flops_per_second(torch.device("cpu"), torch.float32, 2048) / 1e9, 1),
        "model": model_dir,
    }
    print(json.dumps(report, indent=2))
    ok = ratio >= TARGET and same == len(goals)
    print(
        f"self-play: batched {rate['batched']:.2f} vs one at a time {rate['one_at_a_time']:.2f} conversations/s "
        f"(ratio {ratio:.2f}; target >= {TARGET}); transcripts identical {same}/{len(goals)} "
        f"-> {'PASS' if ok else 'MISS'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
