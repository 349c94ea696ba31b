"""Closed-loop evaluation: systems (SFT, branch checkpoints, the oracle) in whole conversations with the user
simulator, on the same goals and seeds, and the table that compares them.

Per system: Inform, Success, Book, Complete (aft_core.dialogue.metrics) with 95% bootstrap intervals, turns to
success, the timeout rate, the rate of offers that broke a constraint already given, repeated replies, and the
attention trajectory (focus, coverage, the share of attention on earlier turns rather than the latest user turn,
lookback) per system turn index. Paired over identical goals and seeds against SFT: McNemar's exact test on
success, a paired bootstrap on the rates. With `reveal: both`, each system plays `full` and `sharded` and the
degradation (full − sharded) / full of success is reported with its interval. With `samples` n, each model
also plays n sampled conversations per goal (temperature 1; sample j uses simulator and torch seed `seed + j`
for every system), and Laban et al. 2025's reliability is reported: mean P, aptitude A90, unreliability U90-10.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aft_core.config import ConversationConfig
from aft_core.data.corpus import venue_tables
from aft_core.data.venues import VenueDB
from aft_core.dialogue.goals import dialogues_file, load_goals, read_dialogues, venue_folder
from aft_core.dialogue.metrics import reliability, summarise
from aft_core.dialogue.multiwoz_words import corpus_user_words
from aft_core.dialogue.oracle import OracleSystem
from aft_core.dialogue.reader import Reader, micro_f1, reader_agreement
from aft_core.dialogue.rule_system import RuleSystem
from aft_core.dialogue.selfplay import ModelSystem, converse
from aft_core.io import atomic_path, write_json_atomic
from aft_core.layout import ConversationLayout
from aft_core.stats import paired_bootstrap_p

ORACLE = "oracle (TownInfo rule policy)"
RULE_SYSTEM = "rule system (venue databases)"  # the anchor on MultiWOZ (aft_core.dialogue.rule_system)
ANCHORS = (ORACLE, RULE_SYSTEM)
READER_MIN_F1 = 0.95  # below this agreement with the corpus's gold system acts, no outcome is reported


def reader_gate(
    data: str | Path, split: str, dialogues: dict[str, Any] | None = None, kinds: tuple[str, ...] | None = None
) -> tuple[str | None, float | None]:
    """(why outcomes cannot be read on this corpus, or None when they can; the reader's F1 against its gold system
    acts). They cannot when the corpus has no dialogue goals, or when the reader agrees with its gold acts at
    F1 < READER_MIN_F1 over the slot kinds the outcomes depend on: `kinds` (micro-averaged), every kind when None.
    A conversation depends on them all (the simulated user acts on requests and no-offers); corpus Inform and
    Success read only OUTCOME_KINDS (aft_core.dialogue.context_to_response)."""
    folder = Path(data)
    if folder.is_file() and venue_tables(folder.parent) is not None:  # the multiwoz21 preset's shared file, say
        return (
            f"{folder} is a single dialogue file: its goals are pursued on its held-out test dialogues, which a "
            f"hold-out folder names (write one with `aft data holdout {folder} --out DIR`, as aft-pipeline does, and "
            "pass DIR)"
        ), None
    if not (folder.is_dir() and dialogues_file(folder) is not None and venue_tables(folder) is not None):
        return (
            f"{folder} has no MultiWOZ-schema dialogue goals with venue databases (a folder with data.json and "
            "db/ or <domain>_db.json), so there is nothing for a user to pursue"
        ), None
    agreement = micro_f1(reader_agreement_on(folder, split, dialogues), kinds)
    if math.isnan(agreement):
        return (
            f"the {split} system turns of {folder} carry no dialogue acts to check the reader of system text "
            "against (MultiWOZ 2.0 keeps them in dialogue_acts.json beside data.json), so Inform and Success read "
            "by it could not be trusted"
        ), None
    if not agreement >= READER_MIN_F1:
        over = f" over {', '.join(kinds)}" if kinds else ""
        return (
            f"the reader of system text agrees with this corpus's gold {split} system acts{over} at F1 "
            f"{agreement:.3f} < {READER_MIN_F1}: Inform and Success read by it could not be trusted"
        ), agreement
    return None, agreement


def reader_agreement_on(
    folder: Path, split: str, dialogues: dict[str, Any] | None = None
) -> dict[str, dict[str, float]]:
    """The reader against the gold acts of every system turn of the split's dialogues (aft_core.dialogue.reader;
    `dialogues`: the corpus's data.json when already read)."""
    dialogues = dialogues if dialogues is not None else read_dialogues(folder)
    ids = {g.dialogue_id for g in load_goals(folder, split, dialogues)}
    turns = [
        (t.get("text", ""), t.get("dialog_act") or {})
        for i in ids
        for n, t in enumerate(dialogues[i].get("log", []))
        if n % 2 == 1
    ]
    return reader_agreement(Reader(VenueDB.load(venue_folder(folder))), turns)


def mcnemar_p(a: list[float], b: list[float]) -> float:
    """McNemar's exact test on paired binary outcomes: two-sided binomial p over the discordant pairs."""
    from scipy.stats import binomtest

    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    return 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def trajectory(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean attention figures per system turn index (0 = the first system turn), with how many turns each has."""
    by_index: dict[int, list[dict[str, float]]] = {}
    for record in records:
        system_turns = [t for t in record["turns"] if t["speaker"] == "system" and t.get("attention")]
        for index, turn in enumerate(system_turns):
            by_index.setdefault(index, []).append(turn["attention"])
    rows = []
    for index in sorted(by_index):
        figures = by_index[index]
        rows.append(
            {"turn": index, "n": len(figures), **{k: float(np.nanmean([f[k] for f in figures])) for k in figures[0]}}
        )
    return rows


def _row(name: str, records: list[dict[str, Any]], baseline: list[dict[str, Any]] | None) -> dict[str, Any]:
    outcomes = [r["outcome"] for r in records]
    row: dict[str, Any] = {"system": name, **summarise(outcomes), "trajectory": trajectory(records)}
    if baseline is not None and baseline is not records:
        base = [r["outcome"] for r in baseline]
        row["vs_sft"] = {
            "success_mcnemar_p": mcnemar_p([o["success"] for o in outcomes], [o["success"] for o in base]),
            "success_delta": float(np.mean([o["success"] - b["success"] for o, b in zip(outcomes, base, strict=True)])),
            "inform_p": paired_bootstrap_p([o["inform"] - b["inform"] for o, b in zip(outcomes, base, strict=True)]),
            "inform_delta": float(np.mean([o["inform"] - b["inform"] for o, b in zip(outcomes, base, strict=True)])),
        }
    return row


def degradation(full: list[dict[str, Any]], sharded: list[dict[str, Any]], seed: int = 0) -> dict[str, float]:
    """(full − sharded) / full of success over paired goals, with a percentile bootstrap interval over goals."""
    a = np.array([r["outcome"]["success"] for r in full])
    b = np.array([r["outcome"]["success"] for r in sharded])
    if a.size == 0 or a.mean() == 0:
        return {"degradation": float("nan"), "low": float("nan"), "high": float("nan")}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, a.size, size=(2000, a.size))
    means_a, means_b = a[picks].mean(axis=1), b[picks].mean(axis=1)
    ok = means_a > 0
    ratios = (means_a[ok] - means_b[ok]) / means_a[ok]
    low, high = np.quantile(ratios, [0.025, 0.975])
    return {"degradation": float((a.mean() - b.mean()) / a.mean()), "low": float(low), "high": float(high)}


def converse_systems(
    systems: dict[str, dict[str, Any]],
    config: ConversationConfig,
    out_dir: str | Path,
    load: Callable[[str, str | None], tuple[Any, Any]] | None = None,
    on_system: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every system of `systems` ({name: {"model": dir, "weights": file or None}}, SFT first) in conversation with
    the simulator on the same goals and seeds; writes the transcripts and the table (ConversationLayout) and
    returns the table."""
    from aft_core.evaluation import load_system
    from aft_core.models import torch_threads

    config.validate()
    torch.set_num_threads(torch_threads())  # AFT_THREADS, as evaluation and training read it
    load = load or load_system
    layout = ConversationLayout(Path(out_dir))
    folder = Path(config.data)
    dialogues = read_dialogues(folder) if folder.is_dir() and dialogues_file(folder) else None  # read once here
    reason, reader_f1 = reader_gate(config.data, config.split, dialogues)
    if reason is not None:
        skipped = {"skipped": reason, "data": config.data, "split": config.split}
        write_json_atomic(layout.table, skipped)
        return skipped
    goals = load_goals(config.data, config.split, dialogues)
    goals = goals[: config.goals] if config.goals else goals
    db = VenueDB.load(venue_folder(Path(config.data)))
    reader = Reader(db)
    towninfo = (Path(config.data) / "towninfo.json").exists()
    words = corpus_user_words(config.data, dialogues)  # a MultiWOZ user speaks its own words
    players: dict[str, Any] = {}
    if config.oracle:
        anchor = OracleSystem if towninfo else RuleSystem
        players[ORACLE if towninfo else RULE_SYSTEM] = lambda: anchor(db)
    for name, spec in systems.items():
        players[name] = lambda spec=spec: ModelSystem(
            *load(spec["model"], spec.get("weights")),
            max_source_tokens=config.max_source_tokens,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
        )
    records: dict[str, dict[str, list[dict[str, Any]]]] = {}
    reliabilities: dict[str, dict[str, dict[str, float]]] = {}
    for name, make in players.items():
        if on_system is not None:
            on_system(name)
        system = make()
        records[name] = {
            mode: converse(
                system, goals, reader, reveal=mode, seed=config.seed, max_exchanges=config.max_exchanges, words=words
            )
            for mode in config.modes
        }
        if config.samples and isinstance(system, ModelSystem):
            system.temperature = 1.0
            reliabilities[name] = {}
            for mode in config.modes:
                by_goal: list[list[float]] = [[] for _ in goals]
                for j in range(
                    1, config.samples + 1
                ):  # sample j: simulator seed and torch seed seed + j, for every system
                    torch.manual_seed(config.seed + j)
                    for g, record in enumerate(
                        converse(
                            system,
                            goals,
                            reader,
                            reveal=mode,
                            seed=config.seed + j,
                            max_exchanges=config.max_exchanges,
                            words=words,
                        )
                    ):
                        by_goal[g].append(record["outcome"]["success"])
                reliabilities[name][mode] = {**reliability(by_goal), "samples": config.samples}
            system.temperature = None
    first_model = next(iter(systems), None)
    table: dict[str, Any] = {
        "goals": len(goals),
        "split": config.split,
        "data": config.data,
        "modes": list(config.modes),
        "seed": config.seed,
        "max_exchanges": config.max_exchanges,
        "rows": {},
        "reader_f1": reader_f1,
    }
    if words is not None:  # how often the corpus's own user utterances ran out (TownInfo's words said it instead)
        table["user_words"] = {"retrieved": words.retrieved, "fallbacks": words.fallbacks}
    for mode in config.modes:
        baseline = records[first_model][mode] if first_model else None
        table["rows"][mode] = [
            {
                **_row(name, by_mode[mode], baseline),
                **({"reliability": reliabilities[name][mode]} if name in reliabilities else {}),
            }
            for name, by_mode in records.items()
        ]
    if config.modes == ("full", "sharded"):
        table["degradation"] = {
            name: degradation(by_mode["full"], by_mode["sharded"]) for name, by_mode in records.items()
        }
    with atomic_path(layout.transcripts) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for name, by_mode in records.items():
                for recs in by_mode.values():
                    for record in recs:
                        f.write(json.dumps({"system": name, **record}) + "\n")
    write_json_atomic(layout.table, table)
    return table


CONVERSATION_HEADER = [
    "system",
    "Inform",
    "Success",
    "Book",
    "Complete",
    "turns to success",
    "timeout",
    "violating offers",
    "repeated replies",
    "Δ success vs SFT (p)",
]


def conversation_caption(table: dict[str, Any]) -> str:
    words = table.get("user_words")
    said = ""
    if words:  # how much of the user's speech was the corpus's own (the rest: TownInfo's phrases)
        total = words["retrieved"] + words["fallbacks"]
        said = (
            f" The user said {words['retrieved']} of {total} utterances in the corpus's own words (retrieved by "
            "dialogue act), the rest in TownInfo's phrases."
        )
    return (
        f"Closed-loop conversations: {table['goals']} {table['split']} goals, seed {table['seed']}, the user gives "
        f"up after {table['max_exchanges']} turns.{said} Outcomes read from the system's words by a matcher "
        f"(aft_core.dialogue.reader; F1 {table['reader_f1']:.3f} against the gold system acts of these dialogues); "
        "lexicalised, not the delexicalised leaderboard setting; mean [95% bootstrap CI]; p: McNemar (success), "
        "paired bootstrap (inform) against SFT."
    )


def conversation_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One reveal mode's success table as text cells (CONVERSATION_HEADER's order): the one formatting of it,
    rendered as markdown by `conversation_markdown` and as HTML by the report."""

    def ci(v: Any) -> str:
        return "–" if v is None else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"

    def num(v: Any, fmt: str) -> str:
        return "–" if v is None else fmt.format(v)

    cells = []
    for row in rows:
        vs = row.get("vs_sft")
        delta = f"{vs['success_delta']:+.3f} (p={vs['success_mcnemar_p']:.3f})" if vs else "–"
        cells.append(
            [
                row["system"],
                ci(row["inform"]),
                ci(row["success"]),
                ci(row["book"]),
                ci(row["complete"]),
                num(row["turns_to_success"], "{:.1f}"),
                f"{row['timeout'][0]:.3f}",
                num(row["violating_offer_rate"], "{:.3f}"),
                f"{row['repeated_reply_rate']:.3f}",
                delta,
            ]
        )
    return cells


def conversation_notes(table: dict[str, Any]) -> list[str]:
    """The reliability and degradation lines under the tables, in the table's system order."""
    lines = []
    for mode, rows in table["rows"].items():
        for row in rows:
            if "reliability" in row:
                r = row["reliability"]
                lines.append(
                    f"reliability over {r['samples']} sampled conversations per goal (temperature 1), "
                    f"{mode} user, {row['system']}: P {r['P']:.3f}, A90 {r['A90']:.3f}, U90-10 {r['U90_10']:.3f}"
                )
    degradations = table.get("degradation") or {}
    for name in [r["system"] for r in next(iter(table["rows"].values()))]:  # the table's order (JSON sorts keys)
        if name in degradations:
            d = degradations[name]
            if math.isnan(d["degradation"]):  # a relative drop from no success is undefined, not a figure
                lines.append(f"degradation of success, full → sharded, {name}: none to measure (no full-user success)")
                continue
            lines.append(
                f"degradation of success, full → sharded, {name}: {d['degradation']:+.3f} "
                f"[{d['low']:+.3f}, {d['high']:+.3f}]"
            )
    return lines


def conversation_markdown(table: dict[str, Any]) -> str:
    """The success table: one block per reveal mode, rates as mean [95% CI], paired tests against SFT."""
    if "skipped" in table:
        return f"Closed-loop conversations: not run ({table['skipped']}).\n"
    lines = [conversation_caption(table), ""]
    for mode, rows in table["rows"].items():
        lines += [
            f"**reveal: {mode}**",
            "",
            "| " + " | ".join(CONVERSATION_HEADER) + " |",
            "|" + "---|" * len(CONVERSATION_HEADER),
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in conversation_cells(rows)]
        lines.append("")
    lines += [f"- {line}" for line in conversation_notes(table)]
    return "\n".join(lines) + "\n"
