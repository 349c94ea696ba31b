"""Experiment (issue 3): the paper's E3-20 setting, and η_kl = 0.10 with the `paper` and the `k3` KL term.

On the default TownInfo corpus and the `small` SFT model, runs three branches:
    (a) E3-20: β=1, γ=0.5, η_kl=0.05, K=4, `paper` estimator, --steps-a steps (default 300)
    (b) η_kl=0.10 with the `paper` estimator, --steps-bc steps
    (c) η_kl=0.10 with the `k3` estimator,    --steps-bc steps
and writes their probe tables (branches/<name>/probe.parquet) and a findings.json: ΔFocus and
ΔBERTScore at the ★ of (a), and for (b) and (c) the label of every checkpoint and the first step
each attractor label was reached. These are findings, not pass/fail checks.

Exploratory under the claims protocol (aft_core.protocol): one SFT model, one seed, probe (dev) figures only,
no test split. It shows what happens on one draw and makes no claim; `findings.json` says so. A claim about
these settings is a frontier run (experiments/frontier.py: several SFT and AFT seeds, selection on dev).

    python experiments/kl_estimators.py --sft runs/main/sft/model --data runs/main/data --out runs/exp-kl
Resumable: rerunning the same command continues unfinished branches.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from aft_core.aft import run_branch
from aft_core.config import AFTConfig
from aft_core.io import write_json_atomic
from aft_core.judging import judge_branch
from aft_core.layout import BranchLayout

SETTINGS = {
    "a-e3-20": {"beta": 1.0, "gamma": 0.5, "eta_kl": 0.05, "k": 4, "kl_estimator": "paper"},
    "b-etakl0.10-paper": {"beta": 1.0, "gamma": 0.5, "eta_kl": 0.10, "k": 4, "kl_estimator": "paper"},
    "c-etakl0.10-k3": {"beta": 1.0, "gamma": 0.5, "eta_kl": 0.10, "k": 4, "kl_estimator": "k3"},
}


def findings(name: str, folder: Path) -> dict:
    branch = BranchLayout(folder)
    result, attractors = branch.read_result(), branch.read_verdict()
    probe = pd.DataFrame(branch.read_probe_rows())
    labels = [(c["step"], c["label"]) for c in attractors["checkpoints"]]
    first_reached: dict[str, int] = {}
    for step, label in labels:
        first_reached.setdefault(label, step)
    warnings: dict[str, int] = {}
    for c in attractors["checkpoints"]:
        for mode in c["warnings"]:
            warnings.setdefault(mode, c["step"])
    cols = [
        "step",
        "focus",
        "delta_focus",
        "bertscore",
        "delta_bertscore",
        "mean_length",
        "unique_outputs",
        "closing_rate",
        "repeat",
        "loss_mean",
        "reward_mean",
    ]
    return {
        "branch": name,
        "branch_id": result["branch_id"],
        "status": result["status"],
        "steps": result["steps"],
        "primary_step": attractors["primary_step"],
        "primary_delta_focus": attractors["primary_delta_focus"],
        "primary_delta_bertscore": attractors["primary_delta_bertscore"],
        "final_label": attractors["final_label"],
        "labels": labels,
        "first_reached": first_reached,
        "first_warning": warnings,
        "probe": probe[[c for c in cols if c in probe]].round(4).to_dict("records"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", required=True, help="the small SFT model folder")
    parser.add_argument("--data", required=True, help="the corpus the SFT model was trained on")
    parser.add_argument("--out", required=True, help="experiment folder")
    parser.add_argument("--steps-a", type=int, default=300)
    parser.add_argument("--steps-bc", type=int, default=300)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--only", choices=sorted(SETTINGS), action="append", help="run only these branches")
    args = parser.parse_args()
    out = Path(args.out)
    report = {}
    for name, setting in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        steps = args.steps_a if name.startswith("a-") else args.steps_bc
        # lr 1e-4 and no early stopping: the setting these findings were measured with (before the calibration)
        cfg = AFTConfig(
            sft_model=args.sft,
            data=args.data,
            steps=steps,
            checkpoint_every=args.checkpoint_every,
            keep_checkpoints=1,
            learning_rate=1e-4,
            early_stop_checkpoints=0,
            **setting,
        )
        run_branch(cfg, out / "branches" / name, progress=sys.stderr.isatty())
        judge_branch(out / "branches" / name)
        report[name] = findings(name, out / "branches" / name)
        print(json.dumps({k: v for k, v in report[name].items() if k != "probe"}), flush=True)
    report["protocol"] = (
        "exploratory: one SFT model, one seed, probe (dev) figures only; no claim "
        "(claims need experiments/frontier.py's protocol, aft_core.protocol)"
    )
    write_json_atomic(out / "findings.json", report)
    print(f"findings: {out / 'findings.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
