"""The paper's open question at this scale: can a decoder-only model's self-attention serve as AFT's reward the way
T5's cross-attention does? (AFT_SPEC §8, issue 20.)

Two families on the same TownInfo corpus with the same SFT budget (2,000 steps) and the same branch settings:
`small` T5 (towninfo-small) and `causal-small`, a Llama-shaped model of about the same size (towninfo-causal).
For each, `--sft-seeds` SFT models, and from each the paper's E3-20 and 200 steps of the salient-coverage reward
(`--aft-seeds` each). Per family and setting:

- the healthy window: whether the branch has a ★ (a healthy checkpoint within the BERTScore floor), how long it
  stays healthy (`healthy_until`), and the terminal attractor it ends in;
- on the test split (the first `--test-examples`), at ★ where the branch has one, else at its last checkpoint:
  ΔFocus, ΔBERTScore, Δentity accuracy and Δlookback against the branch's own SFT model, with 95% t-intervals
  across SFT models (aft_core.protocol.nested_effect: AFT seeds averaged within an SFT model);
- the lookback ratio (the share of the response's attention on the history) of SFT and of the branch.

Reuses the frontier's runner (experiments/frontier.py): finished SFT runs and branches in `--t5-runs` (default: the
frontier's folder, whose SFT models and branches are the same configs) and `OUT/causal` are kept, so a rerun only
scores. Writes `decoder_only.json`, `decoder_only.md` and `decoder_only.png` in OUT; `aft report` shows them when
the folder is RUN_DIR/decoder_only.

    python experiments/decoder_only.py --out runs/decoder_only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aft_core.io import write_json_atomic, write_text_atomic  # noqa: E402
from aft_core.protocol import nested_effect  # noqa: E402
from aft_core.provenance import machine_provenance  # noqa: E402

_spec = importlib.util.spec_from_file_location("frontier", ROOT / "experiments" / "frontier.py")
frontier = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frontier)

FAMILIES = {"encoder–decoder (small T5)": "towninfo-small", "decoder-only (causal-small)": "towninfo-causal"}
SETTINGS = {name: frontier.SETTINGS[name] for name in ("E3-20 (focus)", "salient coverage, 200 steps")}
METRICS = ("focus", "bertscore", "entity_accuracy", "lookback")


class ScoringRunner(frontier.LocalRunner):
    """The frontier's runner, training in `train_dir` and scoring into `score_dir` (scores of this experiment only)."""

    def __init__(
        self, train_dir: Path, score_dir: Path, test_examples: int, preset_name: str, progress: bool, sft_steps: int
    ) -> None:
        super().__init__(
            train_dir, SETTINGS, dev_examples=1, test_examples=test_examples, progress=progress, preset_name=preset_name
        )
        self.params.sft.max_steps = sft_steps  # the same SFT budget for both families
        self.score_dir = score_dir

    def score(self, split: str, key: tuple, systems: dict[str, dict[str, Any]]) -> pd.DataFrame:
        from aft_core.evaluation import evaluate_systems
        from aft_core.layout import EvaluationLayout

        folder = self.score_dir / split / "-".join(frontier.slug(str(x)) for x in key)
        layout = EvaluationLayout(folder)
        if not layout.per_example.exists():
            evaluate_systems(
                {k: {"model": v["model"], "weights": v.get("weights")} for k, v in systems.items()},
                self.eval[split],
                folder,
            )
        return layout.read_per_example()


def probe_trajectory(branch_dir: Path) -> list[dict[str, Any]]:
    probe = pd.read_parquet(branch_dir / "probe.parquet")
    lookback = probe["lookback"] if "lookback" in probe else pd.Series(1.0, index=probe.index)  # cross-attention: 1
    return [
        {"step": int(s), "delta_focus": float(f), "delta_bertscore": float(b), "lookback": float(lb)}
        for s, f, b, lb in zip(probe["step"], probe["delta_focus"], probe["delta_bertscore"], lookback, strict=True)
    ]


def paired_delta(sft: pd.DataFrame, system: pd.DataFrame, metric: str) -> np.ndarray:
    if metric == "lookback" and "lookback" not in system:
        return np.zeros(len(sft))
    return frontier.paired(sft, system, metric)


def run_family(
    label: str, preset_name: str, runner: Any, train_dir: Path, sft_seeds: list[int], aft_seeds: list[int], log
) -> dict[str, Any]:
    """One family's branches, their windows and attractors, and test effects against their own SFT models."""
    sft_models = {i: runner.sft(i) for i in sft_seeds}
    test_sft = {i: runner.score("test", ("SFT", i), {"SFT": {"model": sft_models[i]}}) for i in sft_seeds}
    rows = []
    for name in SETTINGS:
        deltas: dict[str, list[list[np.ndarray]]] = {m: [] for m in METRICS}
        branches = []
        for i in sft_seeds:
            per_seed: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
            for j in aft_seeds:
                b = runner.branch(i, name, j)
                point = "star" if "star" in b["points"] else "last"
                frame = frontier.system_frame(
                    runner.score("test", (name, i, j, point), {point: b["points"][point]}), point
                )
                for m in METRICS:
                    per_seed[m].append(paired_delta(test_sft[i], frame, m))
                folder = train_dir / "branches" / frontier.slug(name) / f"sft{i}-aft{j}"
                branches.append(
                    {
                        "sft_seed": i,
                        "aft_seed": j,
                        "status": b["status"],
                        "steps": b["steps"],
                        "star_step": b["primary_step"],
                        "healthy_until": b["healthy_until"],
                        "final_label": b["final_label"],
                        "point": point,
                        "point_step": b["points"][point]["step"],
                        "lookback": float(frame["lookback"].mean()) if "lookback" in frame else 1.0,
                        "trajectory": probe_trajectory(folder),
                    }
                )
                log(
                    json.dumps(
                        {
                            "family": label,
                            "setting": name,
                            **{k: v for k, v in branches[-1].items() if k != "trajectory"},
                        }
                    )
                )
            for m in METRICS:
                deltas[m].append(per_seed[m])
        rows.append(
            {
                "setting": name,
                "branches": branches,
                "with_star": sum(b["star_step"] is not None for b in branches),
                "n": len(branches),
                "healthy_until_mean": float(np.mean([b["healthy_until"] or 0 for b in branches])),
                "final_labels": sorted({b["final_label"] for b in branches}),
                "test": {m: nested_effect(np.stack([np.stack(d) for d in deltas[m]])) for m in METRICS},
            }
        )
    sft_lookback = [float(f["lookback"].mean()) if "lookback" in f else 1.0 for f in test_sft.values()]
    sft_entity = [float(f.loc[f["venue_turn"].astype(bool), "entity_correct"].mean()) for f in test_sft.values()]
    return {
        "family": label,
        "preset": preset_name,
        "rows": rows,
        "sft_lookback": sft_lookback,
        "sft_entity_accuracy": sft_entity,
        "examples": int(len(next(iter(test_sft.values())))),
    }


def _ci(effect: dict[str, Any]) -> str:
    low, high = effect["ci"]
    return f"{effect['effect']:+.3f} [{low:+.3f}, {high:+.3f}]"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| family | setting | ★ in branches | healthy until (mean step) | terminal attractors | test ΔFocus | "
        "test ΔBERTScore | test Δentity acc. | lookback SFT → AFT |",
        "|" + "---|" * 9,
    ]
    for fam in result["families"]:
        sft_lb = float(np.mean(fam["sft_lookback"]))
        for row in fam["rows"]:
            t = row["test"]
            aft_lb = float(np.mean([b["lookback"] for b in row["branches"]]))
            lines.append(
                f"| {fam['family']} | {row['setting']} | {row['with_star']}/{row['n']} | "
                f"{row['healthy_until_mean']:.0f} | "
                f"{', '.join(row['final_labels'])} | {_ci(t['focus'])} | {_ci(t['bertscore'])} | "
                f"{_ci(t['entity_accuracy'])} | {sft_lb:.3f} → {aft_lb:.3f} |"
            )
    meta = result["meta"]
    lines += [
        "",
        f"Test: the first {result['families'][0]['examples']} test examples, at ★ where a branch has one, else at "
        f"its last checkpoint; Δ against the branch's own SFT model, mean over {len(meta['sft_seeds'])} SFT seeds × "
        f"{len(meta['aft_seeds'])} AFT seeds, 95% t-interval across SFT models (df {len(meta['sft_seeds']) - 1}).",
        "",
        result["answer"],
    ]
    return "\n".join(lines) + "\n"


def answer(result: dict[str, Any]) -> str:
    """The plain answer, read off the table."""
    parts = []
    for fam in result["families"]:
        stars = sum(r["with_star"] for r in fam["rows"])
        n = sum(r["n"] for r in fam["rows"])
        focus = {r["setting"]: r["test"]["focus"] for r in fam["rows"]}
        moved = [s for s, e in focus.items() if e["ci"][0] > 0]
        parts.append(
            f"{fam['family']}: a ★ in {stars} of {n} branches; test ΔFocus above zero across SFT seeds for "
            f"{', '.join(moved) if moved else 'no setting'}; lookback ratio of SFT {np.mean(fam['sft_lookback']):.3f}"
        )
    return "Plainly: " + "; ".join(parts) + "."


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    colours = {fam["family"]: c for fam, c in zip(result["families"], ("tab:blue", "tab:orange"), strict=True)}
    for fam in result["families"]:
        for row, style in zip(fam["rows"], ("-", "--"), strict=True):
            for k, b in enumerate(row["branches"]):
                steps = [p["step"] for p in b["trajectory"]]
                for ax, key in zip(axes, ("delta_focus", "delta_bertscore", "lookback"), strict=True):
                    ax.plot(
                        steps,
                        [p[key] for p in b["trajectory"]],
                        style,
                        color=colours[fam["family"]],
                        alpha=0.6,
                        label=f"{fam['family']}, {row['setting']}" if k == 0 else None,
                    )
    for ax, title in zip(axes, ("probe ΔFocus", "probe ΔBERTScore", "probe lookback ratio"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("AFT step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", required=True, help="experiment folder (RUN_DIR/decoder_only puts it in that run's report)"
    )
    parser.add_argument("--t5-runs", default="runs/frontier", help="where the T5 SFT models and branches are (or go)")
    parser.add_argument("--sft-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--aft-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--test-examples", type=int, default=1000, help="first N test examples (0 = the whole split)")
    parser.add_argument("--sft-steps", type=int, default=2000, help="SFT steps of both families (the main job's 2,000)")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.monotonic()
    train_dirs = {"towninfo-small": Path(args.t5_runs), "towninfo-causal": out / "causal"}
    families = []
    for label, preset_name in FAMILIES.items():
        runner = ScoringRunner(
            train_dirs[preset_name],
            out / "scores" / preset_name,
            args.test_examples,
            preset_name,
            progress=sys.stderr.isatty(),
            sft_steps=args.sft_steps,
        )
        families.append(
            run_family(
                label,
                preset_name,
                runner,
                train_dirs[preset_name],
                args.sft_seeds,
                args.aft_seeds,
                log=lambda s: print(s, flush=True),
            )
        )
    result = {
        "families": families,
        "meta": {
            "sft_seeds": args.sft_seeds,
            "aft_seeds": args.aft_seeds,
            "sft_steps": args.sft_steps,
            "test_examples": args.test_examples,
            "seconds": time.monotonic() - started,
            "provenance": machine_provenance(),
        },
    }
    result["answer"] = answer(result)
    write_json_atomic(out / "decoder_only.json", result)
    write_text_atomic(out / "decoder_only.md", markdown(result))
    plot(result, out / "decoder_only.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
