"""Does single-turn AFT change whole conversations? The frontier's settings (E3-20 and salient coverage, both trained
on corpus turns) in closed-loop conversations with the user simulator, under the claims protocol (issue 29, §7).

Two questions, and a third read off the same runs:
1. does AFT change closed-loop success (sharded user, and full)?
2. does it change the full → sharded degradation (the sharding drop: the branch's full − sharded success gap
   against its own SFT model's)?
3. does the single-turn focus gain show in the conversation's attention trajectory (mean focus by system turn)?

The protocol and its outputs are experiments/multiturn.py's (select the point and the settings on dev
conversations, test once, effects paired per goal and nested over SFT models, Holm); only the settings differ:
the frontier's, on the main job's preset (`towninfo-small`; `--preset towninfo-causal` for the decoder-only family).
Run it in the same `--out` as multiturn.py to share its SFT models (the same corpus and SFT config) and its
scores. Writes `conversations.json`, `conversations.md` and `conversations.png`.

    python experiments/conversations.py --out runs/multiturn
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aft_core.io import write_json_atomic, write_text_atomic  # noqa: E402
from aft_core.provenance import machine_provenance  # noqa: E402

_spec = importlib.util.spec_from_file_location("multiturn", ROOT / "experiments" / "multiturn.py")
multiturn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(multiturn)
frontier = multiturn.frontier

SETTINGS = {name: frontier.SETTINGS[name] for name in ("E3-20 (focus)", "salient coverage, 200 steps")}
PRESET = "towninfo-small"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="experiment folder (share multiturn.py's to share its SFT models)")
    parser.add_argument("--preset", default=PRESET, help=f"the preset whose corpus, SFT and branch are used ({PRESET})")
    parser.add_argument("--sft-seeds", type=int, nargs="+", default=[0, 1, 2], help="SFT seeds (default: 0 1 2)")
    parser.add_argument("--aft-seeds", type=int, nargs="+", default=[0, 1, 2], help="AFT seeds (default: 0 1 2)")
    parser.add_argument("--dev-goals", type=int, default=100, help="validation goals used for selection")
    parser.add_argument("--test-goals", type=int, default=0, help="first N test goals (0 = the whole split)")
    parser.add_argument("--test-examples", type=int, default=1000, help="single-turn test examples (0 = all)")
    args = parser.parse_args()
    if len(args.sft_seeds) < 3 or len(args.aft_seeds) < 3:
        print("note: the protocol asks for >= 3 SFT seeds and >= 3 AFT seeds before a claim is made", file=sys.stderr)
    out = Path(args.out)
    started = time.monotonic()
    runner = multiturn.ConversationRunner(out, args.preset, args.dev_goals, args.test_goals, args.test_examples)
    runner.settings = SETTINGS
    log = lambda line: print(line, flush=True)  # noqa: E731
    result = multiturn.run_protocol(runner, SETTINGS, args.sft_seeds, args.aft_seeds, log=log)
    result["meta"] = {
        "preset": args.preset,
        "dev_goals": args.dev_goals,
        "test_goals": args.test_goals,
        "test_examples": args.test_examples,
        "seconds": time.monotonic() - started,
        "branches": len(result["branches"]),
        "steps_run": sum(b["steps"] for b in result["branches"].values()),
        "provenance": machine_provenance(),
    }
    markdown = multiturn.markdown(result).replace(
        "# Training on its own conversations:", "# Single-turn AFT in whole conversations:", 1
    )
    write_json_atomic(out / "conversations.json", result)
    write_text_atomic(out / "conversations.md", markdown)
    multiturn.plot(result, out / "conversations.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
