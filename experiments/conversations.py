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

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_spec = importlib.util.spec_from_file_location("multiturn", ROOT / "experiments" / "multiturn.py")
multiturn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(multiturn)
frontier = multiturn.frontier

SETTINGS = {name: frontier.SETTINGS[name] for name in ("E3-20 (focus)", "salient coverage, 200 steps")}
PRESET = "towninfo-small"


def main(argv: list[str] | None = None) -> int:
    return multiturn.main(
        argv,
        settings=SETTINGS,
        preset_name=PRESET,
        name="conversations",
        title="Single-turn AFT in whole conversations",
        description=__doc__,
    )


if __name__ == "__main__":
    sys.exit(main())
