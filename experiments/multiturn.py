"""Does training on its own conversations help? `corpus` AFT against `self_play` AFT under each reward option,
against SFT, in closed-loop conversations, under the claims protocol (issue 30, item 5).

On the main job's corpus (TownInfo, generated as the preset does), with the preset's SFT and branch settings
(default `towninfo-selfplay`: E3-20, 300 steps, checkpoints every 50, 20 probe conversations per checkpoint;
`--preset towninfo-causal` for the decoder-only family):

1. **SFT seeds.** One SFT model per `--sft-seeds`, trained as the preset's.
2. **Branches.** Every setting of SETTINGS × `--aft-seeds` from each SFT model, with attractor-aware early
   stopping; each is judged (★ chosen on the single-turn probe).
3. **Dev.** SFT and both points (★ and last) of every branch talk with the sharded user on the first
   `--dev-goals` validation goals (greedy). Per setting the point is chosen on dev by its mean Δsuccess against
   its own SFT model (★ first on a tie), and the setting is carried to test only when that Δ is above zero.
4. **Test, once.** Each SFT model and every carried setting at its chosen point talk with the full and the sharded
   user on the first `--test-goals` test goals; single-turn Table 1 on the first `--test-examples` test examples.
5. **Analysis.** Per carried setting: Δ = branch − its own SFT model on the same goals (or examples), tested across
   SFT models (aft_core.protocol.nested_effect: AFT seeds averaged within an SFT model), Holm-corrected over all
   settings on sharded success. Reported: Δsuccess (sharded, full), ΔInform, Δ of the full → sharded drop, mean
   focus by system turn, Δentity accuracy and ΔBERTScore; and the plain answer.

Resumable: finished SFT runs, branches, conversations and evaluations are kept. Writes `multiturn.json`,
`multiturn.md` and `multiturn.png` in OUT.

    python experiments/multiturn.py --out runs/multiturn
    python experiments/multiturn.py --out runs/multiturn-causal --preset towninfo-causal
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aft_core.io import write_json_atomic, write_text_atomic  # noqa: E402
from aft_core.protocol import CORRECTION, NESTED_TEST, holm, nested_effect  # noqa: E402
from aft_core.provenance import machine_provenance  # noqa: E402

_spec = importlib.util.spec_from_file_location("frontier", ROOT / "experiments" / "frontier.py")
frontier = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(frontier)

# name -> overrides of the preset's branch. Every setting names its rollout, so a preset whose branch is a corpus
# one (towninfo-causal) runs the same four.
SETTINGS: dict[str, dict[str, Any]] = {
    "corpus, turn HACA": {"rollout": "corpus"},
    "self-play, turn HACA": {"rollout": "self_play"},
    "self-play, + trajectory": {"rollout": "self_play", "reward_trajectory": 1.0},
    "self-play, + task": {"rollout": "self_play", "reward_task": 1.0},
}
PRESET = "towninfo-selfplay"
POINTS = ("star", "last")
ALPHA = 0.05


class Runner(Protocol):
    """What the protocol needs done; `ConversationRunner` trains and scores, tests substitute their own."""

    def sft(self, seed: int) -> str: ...
    def branch(self, sft_seed: int, setting: str, aft_seed: int) -> dict[str, Any]: ...
    def converse(self, split: str, key: tuple, systems: dict[str, dict[str, Any]], modes: tuple[str, ...]) -> Any:
        """Per-goal outcomes: a frame with columns system, reveal, dialogue_id, success, inform, turns; and the
        closed-loop table's rows (attrs["trajectory"]: {(system, reveal): focus by system turn})."""

    def score(self, split: str, key: tuple, systems: dict[str, dict[str, Any]]) -> pd.DataFrame:
        """Single-turn per-example scores (a `system` column naming each of `systems`)."""


def outcomes_of(frame: pd.DataFrame, system: str, reveal: str) -> pd.DataFrame:
    """One system's outcomes under one user, indexed by goal."""
    rows = frame[(frame["system"] == system) & (frame["reveal"] == reveal)]
    return rows.set_index("dialogue_id").sort_index()


def paired_outcome(sft: pd.DataFrame, system: pd.DataFrame, metric: str) -> np.ndarray:
    """Per goal: system − SFT on the same goal (and seed)."""
    system = system.loc[sft.index]
    return system[metric].astype(float).to_numpy() - sft[metric].astype(float).to_numpy()


def run_protocol(
    runner: Runner, settings: dict[str, dict[str, Any]], sft_seeds: list[int], aft_seeds: list[int], log=print
) -> dict[str, Any]:
    """Train, select on dev conversations, test once for the carried settings, analyse. Returns multiturn.json."""
    sft_models = {s: runner.sft(s) for s in sft_seeds}
    branches = {(name, i, j): runner.branch(i, name, j) for name in settings for i in sft_seeds for j in aft_seeds}
    for key, b in branches.items():
        fields = ("status", "steps", "primary_step", "final_label")
        log(json.dumps({"setting": key[0], "sft_seed": key[1], "aft_seed": key[2], **{f: b[f] for f in fields}}))

    # Dev: sharded conversations of SFT and both points of every branch. Nothing below reads test until the choice.
    dev_sft_frames = {
        i: runner.converse("validation", ("SFT", i), {"SFT": {"model": m}}, ("sharded",)) for i, m in sft_models.items()
    }
    dev_sft = {i: outcomes_of(f, "SFT", "sharded") for i, f in dev_sft_frames.items()}
    dev_frames = {key: runner.converse("validation", key, b["points"], ("sharded",)) for key, b in branches.items()}
    rows = []
    for name in settings:
        dev: dict[str, float] = {}
        for point in POINTS:
            if not all(point in branches[(name, i, j)]["points"] for i in sft_seeds for j in aft_seeds):
                continue  # a point every branch has, or none
            dev[point] = float(
                np.mean(
                    [
                        paired_outcome(
                            dev_sft[i], outcomes_of(dev_frames[(name, i, j)], point, "sharded"), "success"
                        ).mean()
                        for i in sft_seeds
                        for j in aft_seeds
                    ]
                )
            )
        chosen = max(dev, key=lambda p: (dev[p], p == "star")) if dev else None
        rows.append(
            {
                "setting": name,
                "dev_delta_success": dev,
                "point": chosen,
                "carried_to_test": chosen is not None and dev[chosen] > 0,
                "config": branches[(name, sft_seeds[0], aft_seeds[0])]["setting"],
                "final_labels": [[branches[(name, i, j)]["final_label"] for j in aft_seeds] for i in sft_seeds],
                "star_steps": [[branches[(name, i, j)]["primary_step"] for j in aft_seeds] for i in sft_seeds],
                # the attention trajectory at the chosen point, on dev: readable whether or not test is
                "dev_focus_by_turn": _mean_by_turn(
                    [
                        dev_frames[(name, i, j)].attrs["trajectory"].get((chosen, "sharded"), [])
                        for i in sft_seeds
                        for j in aft_seeds
                    ]
                )
                if chosen
                else [],
            }
        )
    dev_sft_focus = _mean_by_turn([f.attrs["trajectory"].get(("SFT", "sharded"), []) for f in dev_sft_frames.values()])

    # Test, once: every SFT model (its own figures) and each carried setting at its chosen point.
    modes = ("full", "sharded")
    test_sft_frames = {
        i: runner.converse("test", ("SFT", i), {"SFT": {"model": m}}, modes) for i, m in sft_models.items()
    }
    test_sft = {i: {mode: outcomes_of(f, "SFT", mode) for mode in modes} for i, f in test_sft_frames.items()}
    carried = [r for r in rows if r["carried_to_test"]]
    single_sft = (
        {i: runner.score("test", ("SFT", i), {"SFT": {"model": m}}) for i, m in sft_models.items()} if carried else {}
    )
    for row in carried:
        name, point = row["setting"], row["point"]
        deltas: dict[str, list[list[np.ndarray]]] = {}
        focus_by_turn: list[list[float]] = []
        for i in sft_seeds:
            per_seed: dict[str, list[np.ndarray]] = {}
            for j in aft_seeds:
                system = {point: branches[(name, i, j)]["points"][point]}
                frame = runner.converse("test", (name, i, j, point), system, modes)
                full, sharded = outcomes_of(frame, point, "full"), outcomes_of(frame, point, "sharded")
                gap = (full["success"] - sharded["success"]) - (
                    test_sft[i]["full"]["success"] - test_sft[i]["sharded"]["success"]
                ).loc[full.index]
                single = frontier.system_frame(runner.score("test", (name, i, j, point), system), point)
                for metric, values in (
                    ("success_sharded", paired_outcome(test_sft[i]["sharded"], sharded, "success")),
                    ("success_full", paired_outcome(test_sft[i]["full"], full, "success")),
                    ("inform_sharded", paired_outcome(test_sft[i]["sharded"], sharded, "inform")),
                    ("sharding_drop", -gap.to_numpy(dtype=float)),  # > 0: the branch loses less to sharding
                    ("entity_accuracy", frontier.paired(single_sft[i], single, "entity_accuracy")),
                    ("bertscore", frontier.paired(single_sft[i], single, "bertscore")),
                ):
                    per_seed.setdefault(metric, []).append(values)
                focus_by_turn.append(frame.attrs["trajectory"].get((point, "sharded"), []))
            for metric, values in per_seed.items():
                deltas.setdefault(metric, []).append(values)
        row["test"] = {m: nested_effect(np.stack([np.stack(v) for v in d])) for m, d in deltas.items()}
        row["focus_by_turn"] = _mean_by_turn(focus_by_turn)
    adjusted = holm([r["test"]["success_sharded"]["p"] if r.get("test") else 1.0 for r in rows])
    for row, p_adj in zip(rows, adjusted, strict=True):
        row["p_holm"] = p_adj
        test = row.get("test")
        row["survives"] = bool(test and test["success_sharded"]["effect"] > 0 and p_adj < ALPHA)
    sft_focus = _mean_by_turn([f.attrs["trajectory"].get(("SFT", "sharded"), []) for f in test_sft_frames.values()])
    sft_summary = {
        f"success_{mode}": frontier.t_interval([float(t[mode]["success"].mean()) for t in test_sft.values()])
        for mode in modes
    }
    sft_summary["goals"] = int(len(next(iter(test_sft.values()))["sharded"]))
    sft_summary["focus_by_turn"] = sft_focus
    sft_summary["dev_focus_by_turn"] = dev_sft_focus
    return {
        "rows": rows,
        "sft_test": sft_summary,
        "answer": answer(rows, sft_summary),
        "sft_seeds": sft_seeds,
        "aft_seeds": aft_seeds,
        "test": NESTED_TEST,
        "correction": CORRECTION + " (on sharded success)",
        "branches": {
            f"{frontier.slug(k[0])}/sft{k[1]}-aft{k[2]}": {x: v for x, v in b.items() if x != "points"}
            for k, b in branches.items()
        },
    }


def _mean_by_turn(curves: list[list[float]]) -> list[float]:
    """Mean over curves of focus by system turn, up to the last turn every curve reaches."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    depth = min(len(c) for c in curves)
    return [float(np.mean([c[t] for c in curves])) for t in range(depth)]


def answer(rows: list[dict[str, Any]], sft: dict[str, Any]) -> str:
    """The plain answer, read off the table."""
    base = f"SFT succeeds in {sft['success_sharded'][0]:.2f} of sharded-user conversations on test"
    survivors = [r for r in rows if r["survives"]]
    if survivors:
        best = max(survivors, key=lambda r: r["test"]["success_sharded"]["effect"])
        e = best["test"]["success_sharded"]
        return (
            f"Yes: **{best['setting']}** ({best['point']}) raises closed-loop success with the sharded user by "
            f"{e['effect']:+.3f} [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}] across {e['n_sft']} SFT models × "
            f"{e['n_aft']} AFT seeds (Holm-adjusted p = {best['p_holm']:.3f}); {base}."
        )
    tested = [r for r in rows if r.get("test")]
    if not tested:
        dev = ", ".join(f"{r['setting']} {r['dev_delta_success'].get(r['point'], float('nan')):+.3f}" for r in rows)
        return (
            "No. No setting raised closed-loop success on dev (mean Δsuccess against its own SFT model, sharded user, "
            f"at its better point: {dev}), so none was carried to test; {base}."
        )
    best = max(tested, key=lambda r: r["test"]["success_sharded"]["effect"])
    e = best["test"]["success_sharded"]
    return (
        f"No. The closest is **{best['setting']}** ({best['point']}): Δsuccess {e['effect']:+.3f} "
        f"[{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}] with the sharded user across {e['n_sft']} SFT models × "
        f"{e['n_aft']} AFT seeds, but Holm-adjusted p = {best['p_holm']:.3f} (SFT models' own effects: "
        + ", ".join(f"{v:+.3f}" for v in e["per_sft_effect"])
        + f"); {base}."
    )


def _ci(effect: dict[str, Any] | None) -> str:
    return frontier._ci(effect) if effect else "–"


def markdown(result: dict[str, Any]) -> str:
    meta, sft = result["meta"], result["sft_test"]
    lines = [
        f"# Training on its own conversations: {len(result['rows'])} settings × {len(result['sft_seeds'])} SFT "
        f"models × {len(result['aft_seeds'])} AFT seeds ({meta['preset']})",
        "",
        f"Selection on the sharded user's conversations on the first {meta['dev_goals']} validation goals; test "
        f"scored once ({sft['goals']} test goals, full and sharded users; single-turn on "
        f"{meta['test_examples'] or 'all'} test examples) for the settings carried from dev. Test: {result['test']}. "
        f"Correction: {result['correction']}. Δ = branch − its own SFT model on the same goals, mean over SFT "
        "models [95% t-interval over SFT models]. Sharding drop: the branch's (full − sharded) success gap below "
        "SFT's (> 0: it loses less when the user reveals its goal piece by piece).",
        "",
        f"SFT on test: success {_ci_tuple(sft['success_full'])} (full user), {_ci_tuple(sft['success_sharded'])} "
        "(sharded user), over SFT models.",
        "",
        "| setting | terminal labels | dev Δsuccess (★ / last) | point | test Δsuccess sharded | Holm p | "
        "test Δsuccess full | ΔInform sharded | sharding drop | Δentity acc. | ΔBERTScore | claim |",
        "|" + "---|" * 12,
    ]
    for r in result["rows"]:
        dev = " / ".join(f"{r['dev_delta_success'][p]:+.3f}" if p in r["dev_delta_success"] else "–" for p in POINTS)
        labels = ", ".join(sorted({label for seed in r["final_labels"] for label in seed}))
        point = {"star": "★", "last": "last", None: "–"}[r["point"]]
        t = r.get("test") or {}
        cells = (
            [
                _ci(t["success_sharded"]),
                f"{r['p_holm']:.3f}",
                _ci(t["success_full"]),
                _ci(t["inform_sharded"]),
                _ci(t["sharding_drop"]),
                _ci(t["entity_accuracy"]),
                _ci(t["bertscore"]),
                "**holds**" if r["survives"] else "does not hold",
            ]
            if t
            else ["not tested (dropped on dev)", f"{r['p_holm']:.3f}", "–", "–", "–", "–", "–", "does not hold"]
        )
        lines.append(f"| {r['setting']} | {labels} | {dev} | {point} | " + " | ".join(cells) + " |")
    tested = any(r.get("focus_by_turn") for r in result["rows"])
    key, split = ("focus_by_turn", "test") if tested else ("dev_focus_by_turn", "dev")
    curves = [("SFT", sft.get(key, []))]
    curves += [(f"{r['setting']} ({r['point']})", r.get(key) or []) for r in result["rows"]]
    turns = [t for t in (1, 2, 4, 8, 12) if any(len(c) >= t for _, c in curves)]
    lines += [
        "",
        f"Mean focus (−entropy over the source, nats) by system turn, {split} conversations with the sharded user:",
        "",
        "| system | " + " | ".join(f"turn {t}" for t in turns) + " |",
        "|" + "---|" * (len(turns) + 1),
        *(
            f"| {name} | " + " | ".join(f"{c[t - 1]:.3f}" if len(c) >= t else "–" for t in turns) + " |"
            for name, c in curves
        ),
    ]
    lines += [
        "",
        "## Answer",
        "",
        result["answer"],
        "",
        frontier.wall_time(meta),
    ]
    return "\n".join(lines) + "\n"


def _ci_tuple(values: list[float]) -> str:
    mean, low, high = values
    return f"{mean:.3f}" if low != low else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def plot(result: dict[str, Any], path: Path) -> None:
    """Focus by system turn (sharded user) of SFT and each setting at its point, on test for the carried settings (on
    dev when none was carried); and dev Δsuccess per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    tested = any(r.get("focus_by_turn") for r in result["rows"])
    split, key = ("test", "focus_by_turn") if tested else ("dev", "dev_focus_by_turn")  # dev when test was not read
    sft = result["sft_test"].get(key, [])
    axes[0].plot(range(1, len(sft) + 1), sft, color="k", lw=2, label="SFT")
    for r in result["rows"]:
        curve = r.get(key)
        if curve:
            axes[0].plot(range(1, len(curve) + 1), curve, marker="o", ms=3, label=f"{r['setting']} ({r['point']})")
    axes[0].set(title=f"{split}: mean focus by system turn (sharded user)", xlabel="system turn", ylabel="focus")
    axes[0].legend(fontsize=7)
    names = [r["setting"] for r in result["rows"]]
    for k, point in enumerate(POINTS):
        values = [r["dev_delta_success"].get(point, np.nan) for r in result["rows"]]
        axes[1].bar(np.arange(len(names)) + 0.4 * k - 0.2, values, width=0.4, label=point)
    axes[1].axhline(0, color="#868e96", lw=0.8)
    axes[1].set_xticks(range(len(names)), names, rotation=15, fontsize=7)
    axes[1].set(title="dev: Δsuccess vs own SFT (sharded user)", ylabel="Δsuccess")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class ConversationRunner(frontier.LocalRunner):
    """The frontier's runner (SFT models, branches, single-turn scores in OUT) that also holds conversations."""

    def __init__(
        self,
        out: Path,
        settings: dict[str, dict[str, Any]],
        preset_name: str,
        dev_goals: int,
        test_goals: int,
        test_examples: int,
    ) -> None:
        super().__init__(
            out, settings, dev_examples=1, test_examples=test_examples, progress=sys.stderr.isatty(),
            preset_name=preset_name,
        )  # fmt: skip
        self.goals = {"validation": dev_goals, "test": test_goals}

    def converse(self, split: str, key: tuple, systems: dict[str, dict[str, Any]], modes: tuple[str, ...]) -> Any:
        from aft_core.config import ConversationConfig
        from aft_core.dialogue.closed_loop import converse_systems
        from aft_core.layout import ConversationLayout

        folder = self.out / "conversations" / split / "-".join(frontier.slug(str(x)) for x in key)
        layout = ConversationLayout(folder)
        if not layout.table.exists():
            config = ConversationConfig(
                data=self.data,
                split=split,
                goals=self.goals[split],
                reveal="both" if len(modes) == 2 else modes[0],
                max_exchanges=self.params.conversation.max_exchanges,
                max_source_tokens=self.params.sft.max_source_tokens,
                samples=0,
                oracle=False,
            )
            converse_systems({k: {"model": v["model"], "weights": v.get("weights")} for k, v in systems.items()},
                             config, folder)  # fmt: skip
        table = layout.read_table()
        if "skipped" in table:
            raise SystemExit(f"conversations cannot be scored on {self.data}: {table['skipped']}")
        frame = pd.DataFrame(
            [
                {"system": r["system"], "reveal": r["reveal"], "dialogue_id": r["dialogue_id"], **r["outcome"]}
                for r in layout.read_transcripts()
            ]
        )
        frame.attrs["trajectory"] = {
            (row["system"], mode): [t["focus/all"] for t in row["trajectory"]]
            for mode, rows in table["rows"].items()
            for row in rows
        }
        return frame


def main(
    argv: list[str] | None = None,
    settings: dict[str, dict[str, Any]] = SETTINGS,
    preset_name: str = PRESET,
    name: str = "multiturn",
    title: str = "Training on its own conversations",
    description: str | None = __doc__,
) -> int:
    """The experiment's command line; experiments/conversations.py calls it with the frontier's settings and its own
    `description` (its --help), writing `<name>.json`, `<name>.md` (headed `title`) and `<name>.png` in OUT."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="experiment folder (share it to share the SFT models)")
    parser.add_argument(
        "--preset", default=preset_name, help=f"the preset whose corpus, SFT and branch are used ({preset_name})"
    )
    parser.add_argument("--sft-seeds", type=int, nargs="+", default=[0, 1, 2], help="SFT seeds (default: 0 1 2)")
    parser.add_argument("--aft-seeds", type=int, nargs="+", default=[0, 1, 2], help="AFT seeds (default: 0 1 2)")
    parser.add_argument("--dev-goals", type=int, default=100, help="validation goals used for selection")
    parser.add_argument("--test-goals", type=int, default=0, help="first N test goals (0 = the whole split)")
    parser.add_argument("--test-examples", type=int, default=1000, help="single-turn test examples (0 = all)")
    parser.add_argument("--only", action="append", choices=sorted(settings), help="run only these settings")
    args = parser.parse_args(argv)
    if len(args.sft_seeds) < 3 or len(args.aft_seeds) < 3:
        print("note: the protocol asks for >= 3 SFT seeds and >= 3 AFT seeds before a claim is made", file=sys.stderr)
    out = Path(args.out)
    started = time.monotonic()
    settings = {k: v for k, v in settings.items() if not args.only or k in args.only}
    runner = ConversationRunner(out, settings, args.preset, args.dev_goals, args.test_goals, args.test_examples)
    result = run_protocol(runner, settings, args.sft_seeds, args.aft_seeds, log=lambda s: print(s, flush=True))
    result["meta"] = {
        "preset": args.preset,
        "dev_goals": args.dev_goals,
        "test_goals": args.test_goals,
        "test_examples": args.test_examples,
        "seconds": time.monotonic() - started,
        "branches": len(result["branches"]),
        **frontier.branch_times(result["branches"]),
        "provenance": machine_provenance(),
    }
    text = markdown(result).replace("# Training on its own conversations:", f"# {title}:", 1)
    write_json_atomic(out / f"{name}.json", result)
    write_text_atomic(out / f"{name}.md", text)
    plot(result, out / f"{name}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
