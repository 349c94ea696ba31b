"""The frontier experiment (issue 12): which AFT setting trades BERTScore for entity accuracy, over seeds.

From one SFT model, every setting of SETTINGS (learning rate, KL estimator / η_kl / adaptive KL, I_x
and reward weights) is trained with each seed (AFT's sampling and prompt order; the SFT model is
fixed), with attractor-aware early stopping. Each branch's ★ and last checkpoint, and SFT, are then
decoded greedily on the whole test split. Per setting and point (★, last):

- ΔFocus (I_x = all, the paper's column), ΔBERTScore, Δentity accuracy, ΔCov(salient) against SFT on
  the same examples, and Avg Len: the mean over seeds with a 95% t-interval over seeds;
- a paired test of entity accuracy against SFT: per venue turn, the mean over seeds of
  correct(AFT) − correct(SFT), paired bootstrap p-value (two-sided), and each seed's own p-value.

Writes `frontier.json` (every figure), `frontier.md` (the table and the plain answer) and
`frontier.png` (ΔBERTScore against Δentity accuracy, one point per setting and point, bars = 95% CI
over seeds). `aft report RUN_DIR` shows them when they lie in RUN_DIR/frontier. Resumable: finished
branches and evaluations are kept; rerunning the same command continues.

    python experiments/frontier.py --sft runs/main/sft/model --data runs/main/data --out runs/main/frontier
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aft_core.aft import run_branch
from aft_core.judging import judge_branch
from aft_core.layout import verdict_fields
from aft_core.config import AFTConfig
from aft_core.evaluation import EvalConfig, branch_systems, evaluate_systems
from aft_core.io import write_json_atomic, write_text_atomic
from aft_core.stats import paired_bootstrap_p

# name -> AFTConfig overrides of the branch defaults (β=1, γ=0.5, η_kl=0.05, K=4, paper KL, I_x=all, lr 1e-5)
# and of --steps
SETTINGS: dict[str, dict[str, Any]] = {
    "focus lr1e-5 (default)": {},
    "salient coverage": {"ix_mode": "salient", "alpha": 1.0, "beta": 0.0},
    "focus lr1e-4": {"learning_rate": 1e-4},
    "focus lr3e-6": {"learning_rate": 3e-6},
    "focus k3 η_kl=0.5": {"kl_estimator": "k3", "eta_kl": 0.5},
    "focus adaptive KL": {"kl_estimator": "k3", "eta_kl": 0.1, "kl_target": 0.02},
    "salient coverage lr3e-6": {"ix_mode": "salient", "alpha": 1.0, "beta": 0.0, "learning_rate": 3e-6},
    "salient coverage 200 steps": {"ix_mode": "salient", "alpha": 1.0, "beta": 0.0, "steps": 200},
}
POINTS = ("star", "last")
BERTSCORE_FLOOR = -0.03
ALPHA = 0.05


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in name).strip("-").replace("--", "-")


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (a point when there is one value; NaNs when none)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def evaluate_branch(folder: Path, sft_model: str, eval_cfg: EvalConfig) -> pd.DataFrame:
    """Per-example test scores of a branch's ★ and last checkpoint (kept in the branch folder)."""
    out = folder / "test"
    if not (out / "per_example.parquet").exists():
        evaluate_systems(branch_systems(sft_model, folder, name="branch"), eval_cfg, out)
    return pd.read_parquet(out / "per_example.parquet")


def point_frame(per_example: pd.DataFrame, point: str) -> pd.DataFrame | None:
    prefix = "branch ★" if point == "star" else "branch last"
    systems = [s for s in per_example["system"].unique() if s.startswith(prefix)]
    return per_example[per_example["system"] == systems[0]].set_index("example_id") if systems else None


def summarize(sft: pd.DataFrame, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per setting and point: Δ means with 95% CIs over seeds, the paired entity test, Avg Len."""
    sft = sft.set_index("example_id")
    venue = sft.index[sft["venue_turn"]] if "venue_turn" in sft else sft.index[:0]
    rows = []
    for name, seeds in runs.items():
        for point in POINTS:
            deltas: dict[str, list[float]] = {k: [] for k in ("focus", "bertscore", "entity_accuracy", "coverage_salient")}
            lengths, per_seed_p, entity_deltas, steps = [], [], [], []
            for run in seeds:
                frame = point_frame(run["per_example"], point)
                if frame is None:
                    continue
                frame = frame.loc[sft.index]
                steps.append(run["result"]["primary_step" if point == "star" else "last_step"])
                for key in ("focus", "bertscore", "coverage_salient"):
                    deltas[key].append(float(frame[key].mean() - sft[key].mean()))
                lengths.append(float(frame["length"].mean()))
                if len(venue):
                    d = frame.loc[venue, "entity_correct"].astype(float).to_numpy() - \
                        sft.loc[venue, "entity_correct"].astype(float).to_numpy()
                    entity_deltas.append(d)
                    deltas["entity_accuracy"].append(float(d.mean()))
                    per_seed_p.append(paired_bootstrap_p(d))
            row: dict[str, Any] = {"setting": name, "point": point, "seeds": len(lengths), "of_seeds": len(seeds),
                                   "steps": steps}
            for key, values in deltas.items():
                mean, low, high = t_interval(values)
                row[f"delta_{key}"], row[f"delta_{key}_ci"] = mean, [low, high]
            row["avg_len"], *ci = t_interval(lengths)
            row["avg_len_ci"] = ci
            row["entity_p_per_seed"] = per_seed_p
            row["entity_p_pooled"] = paired_bootstrap_p(np.mean(entity_deltas, axis=0)) if entity_deltas else None
            row["venue_turns"] = int(len(venue))
            row["raises_entity_accuracy"] = bool(
                row["seeds"] == row["of_seeds"] and entity_deltas and row["delta_entity_accuracy"] > 0
                and row["entity_p_pooled"] < ALPHA and row["delta_bertscore"] >= BERTSCORE_FLOOR)
            rows.append(row)
    return rows


def _fmt(row: dict[str, Any], key: str, digits: int = 3) -> str:
    """A mean with its 95% interval; Δ columns signed."""
    value, ci = row.get(key), row.get(f"{key}_ci")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    sign = "+" if key.startswith("delta_") else ""
    return f"{value:{sign}.{digits}f} [{ci[0]:{sign}.{digits}f}, {ci[1]:{sign}.{digits}f}]" if ci else f"{value:.{digits}f}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# Frontier: {meta['branches']} branches ({len(SETTINGS)} settings × seeds {meta['seeds']}), "
             f"{meta['test_examples']} test examples ({meta['venue_turns']} venue turns)", "",
             f"SFT test: entity accuracy {meta['sft_entity_accuracy']:.3f}, BERTScore {meta['sft_bertscore']:.3f}, "
             f"Avg Len {meta['sft_avg_len']:.1f}. Δ = system − SFT on the same test examples; mean over seeds "
             "[95% t-interval over seeds]. p: paired bootstrap of entity correctness against SFT (per venue turn, "
             "averaged over seeds); per-seed p in frontier.json.", "",
             "| setting | point | seeds | steps | ΔFocus | ΔBERTScore | Δentity acc. | p (entity) | ΔCov(salient) | Avg Len |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = "–" if r["entity_p_pooled"] is None else f"{r['entity_p_pooled']:.3f}"
        lines.append(f"| {r['setting']} | {'★' if r['point'] == 'star' else 'last'} | {r['seeds']}/{r['of_seeds']} | "
                     f"{','.join(str(s) for s in r['steps'])} | {_fmt(r, 'delta_focus')} | {_fmt(r, 'delta_bertscore')} | "
                     f"{_fmt(r, 'delta_entity_accuracy')} | {p} | {_fmt(r, 'delta_coverage_salient', 4)} | "
                     f"{_fmt(r, 'avg_len', 1)} |")
    lines += ["", "## Answer", "", answer(rows), ""]
    lines += [f"Compute: {meta['steps_run']} AFT steps run of {meta['steps_planned']} planned; early stopping saved "
              f"{meta['steps_saved']} steps ({meta['steps_saved'] / max(meta['steps_planned'], 1):.0%}). "
              f"Wall time {meta['seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def answer(rows: list[dict[str, Any]]) -> str:
    """The plain answer: a setting that raises test entity accuracy (p < 0.05) at ΔBERTScore ≥ −0.03, or the closest."""
    winners = [r for r in rows if r["raises_entity_accuracy"]]
    if winners:
        best = max(winners, key=lambda r: r["delta_entity_accuracy"])
        others = ", ".join(f"{r['setting']} ({r['point']})" for r in winners if r is not best)
        return (f"Yes: **{best['setting']}** at {best['point']} raises test entity accuracy by "
                f"{best['delta_entity_accuracy']:+.3f} (pooled paired p = {best['entity_p_pooled']:.3f}, all "
                f"{best['seeds']} seeds) at ΔBERTScore {best['delta_bertscore']:+.3f}."
                + (f" Also meeting the bar: {others}." if others else " No other setting meets the bar."))
    scored = [r for r in rows if r["entity_p_pooled"] is not None and not math.isnan(r["delta_entity_accuracy"])]
    if not scored:
        return "No setting could be judged (no venue turns, or no branch finished)."
    close = max(scored, key=lambda r: (r["delta_bertscore"] >= BERTSCORE_FLOOR, r["delta_entity_accuracy"]))
    return (f"No. The closest is **{close['setting']}** at {close['point']}: Δentity accuracy "
            f"{close['delta_entity_accuracy']:+.3f} (pooled paired p = {close['entity_p_pooled']:.3f}) at ΔBERTScore "
            f"{close['delta_bertscore']:+.3f}, {close['seeds']}/{close['of_seeds']} seeds with this point.")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    colours = plt.cm.tab10.colors
    for i, name in enumerate(SETTINGS):
        for r in (r for r in rows if r["setting"] == name and not math.isnan(r["delta_bertscore"])):
            x, y = r["delta_bertscore"], r["delta_entity_accuracy"]
            if math.isnan(y):
                continue
            xe = [[x - r["delta_bertscore_ci"][0]], [r["delta_bertscore_ci"][1] - x]]
            ye = [[y - r["delta_entity_accuracy_ci"][0]], [r["delta_entity_accuracy_ci"][1] - y]]
            ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="*" if r["point"] == "star" else "o", ms=12 if r["point"] == "star" else 7,
                        color=colours[i % 10], capsize=3, label=f"{name} ({'★' if r['point'] == 'star' else 'last'})")
    ax.axhline(0, color="#868e96", lw=0.8)
    ax.axvline(BERTSCORE_FLOOR, color="#c92a2a", lw=0.8, ls="--", label="ΔBERTScore = −0.03")
    ax.set_xlabel("test ΔBERTScore vs SFT")
    ax.set_ylabel("test Δentity accuracy vs SFT")
    ax.set_title("AFT frontier: 95% CI over seeds")
    ax.legend(fontsize=6, loc="best")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", required=True, help="the SFT model folder (e.g. runs/main/sft/model)")
    parser.add_argument("--data", required=True, help="the corpus the SFT model was trained on")
    parser.add_argument("--out", required=True, help="experiment folder (runs/main/frontier puts it in that run's report)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="AFT seeds (default: 0 1 2)")
    parser.add_argument("--steps", type=int, default=300, help="AFT steps per branch (default: 300)")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--probe-size", type=int, default=200)
    parser.add_argument("--test-examples", type=int, default=0, help="first N test examples (0 = the whole split)")
    parser.add_argument("--only", action="append", choices=sorted(SETTINGS), help="run only these settings")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.monotonic()
    eval_cfg = EvalConfig(data=args.data, test_examples=args.test_examples)
    settings = {k: v for k, v in SETTINGS.items() if not args.only or k in args.only}
    runs: dict[str, list[dict[str, Any]]] = {}
    for name, overrides in settings.items():
        runs[name] = []
        for seed in args.seeds:
            folder = out / "branches" / f"{slug(name)}-seed{seed}"
            cfg = AFTConfig(**{"sft_model": args.sft, "data": args.data, "steps": args.steps,
                               "checkpoint_every": args.checkpoint_every, "probe_size": args.probe_size,
                               "keep_checkpoints": 1, "seed": seed, **overrides})
            result = run_branch(cfg, folder, progress=sys.stderr.isatty())
            result = {**result, **verdict_fields(judge_branch(folder))}
            per_example = evaluate_branch(folder, args.sft, eval_cfg)
            runs[name].append({"seed": seed, "result": result, "per_example": per_example})
            print(json.dumps({"setting": name, "seed": seed, "status": result["status"], "steps": result["steps"],
                              "healthy_until": result.get("healthy_until"), "primary_step": result["primary_step"],
                              "final_label": result["final_label"],
                              "elapsed_min": round((time.monotonic() - started) / 60, 1)}), flush=True)
    if not (out / "sft" / "per_example.parquet").exists():
        evaluate_systems({"SFT": {"model": args.sft}}, eval_cfg, out / "sft")
    sft = pd.read_parquet(out / "sft" / "per_example.parquet")
    rows = summarize(sft, runs)
    results = [run["result"] for seeds in runs.values() for run in seeds]
    meta = {"seeds": args.seeds, "branches": len(results), "test_examples": int(len(sft)),
            "venue_turns": int(sft["venue_turn"].sum()) if "venue_turn" in sft else 0,
            "sft_entity_accuracy": float(sft.loc[sft["venue_turn"], "entity_correct"].mean()) if "venue_turn" in sft else float("nan"),
            "sft_bertscore": float(sft["bertscore"].mean()), "sft_avg_len": float(sft["length"].mean()),
            "steps_planned": sum(settings[n].get("steps", args.steps) for n, seeds in runs.items() for _ in seeds), "steps_run": sum(r["steps"] for r in results),
            "steps_saved": sum(r.get("steps_saved", 0) for r in results), "seconds": time.monotonic() - started,
            "settings": settings, "branch_steps": args.steps, "probe_size": args.probe_size}
    write_outputs(out, rows, meta, {f"{slug(n)}-seed{r['seed']}": r["result"] for n, seeds in runs.items() for r in seeds})
    print((out / "frontier.md").read_text())
    return 0


def write_outputs(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any], branches: dict[str, Any]) -> None:
    """frontier.json (what `aft report` reads), frontier.md and frontier.png."""
    write_json_atomic(out / "frontier.json", {"meta": meta, "rows": rows, "answer": answer(rows), "branches": branches})
    write_text_atomic(out / "frontier.md", markdown(rows, meta))
    plot(rows, out / "frontier.png")


if __name__ == "__main__":
    sys.exit(main())
