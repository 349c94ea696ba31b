"""Test evaluation: greedy responses of several systems (SFT, each branch's ★ and last) on a test split.

Per system and example: the response, focus under the run's I_x, coverage under `all`, `history`
and `salient`, repeat, BERTScore F1, length in tokens, and, when the corpus has a venue database,
entity correctness (a venue named that satisfies the turn's belief state). Everything per example
goes to `per_example.parquet` so any figure can be recomputed; `table.json` holds every mean with its
95% bootstrap CI, distinct-1/2, entity accuracy, corpus BLEU (sacrebleu, signature recorded) and the
paired comparison with the first system (SFT); `table1.md` is the paper's Table 1 in markdown, with
the paper's own figures beside it.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from aft_core.bertscore import load_bertscore
from aft_core.config import EvalConfig
from aft_core.data.batching import IX_MODES, SourceBatch
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, encode_table
from aft_core.data.venues import VenueDB, entity_correct, names_venue
from aft_core.dialogue.context_to_response import REFERENCE, dialogue_success
from aft_core.errors import AftInputError
from aft_core.io import atomic_path, write_json_atomic, write_text_atomic
from aft_core.layout import BranchLayout, EvaluationLayout, RunLayout
from aft_core.models import family_of, load_model, parse_layers, torch_threads
from aft_core.models.adapters import load_policy_weights
from aft_core.monitor import score_greedy
from aft_core.stats import bootstrap_ci, distinct_n, paired_comparison


def load_system(model_dir: str | Path, weights: str | Path | None = None) -> tuple[Any, Any]:
    """A saved model, optionally with a branch checkpoint's weights (safetensors: full weights, or an adapter that
    is applied and merged) loaded over it."""
    model, tokenizer = load_model(model_dir)
    if weights:
        if not Path(weights).is_file():
            raise AftInputError(
                weights,
                "weights",
                "checkpoint weights file does not exist",
                "rerun the branch, or point at an existing weights/step-*.safetensors",
            )
        model = load_policy_weights(model, weights)
    return model.eval(), tokenizer


def branch_systems(sft_model: str, branch_dir: str | Path, name: str | None = None) -> dict[str, dict[str, Any]]:
    """The systems a judged branch contributes to Table 1: its ★ (when it has one) and its last checkpoint,
    as its verdict names them (aft_core.judging)."""
    branch = BranchLayout(Path(branch_dir))
    verdict = branch.read_verdict()
    name = name or branch.root.name
    last, star = verdict["last_step"], verdict["primary_step"]

    def system(step: int) -> dict[str, Any]:
        return {"model": sft_model, "weights": str(branch.weights(step))}

    if star == last:  # one checkpoint, evaluated once
        return {f"{name} ★ = last step {last}": system(last)}
    systems = {f"{name} ★ step {star}": system(star)} if star is not None else {}
    systems[f"{name} last step {last}"] = system(last)
    return systems


class EvalProgress:
    """Progress of an evaluation over all systems, with an ETA: a tqdm bar on a terminal, or a log line
    every `log_every` share of the work (Prefect's logs), through `report(line)`."""

    def __init__(self, total: int, report: Callable[[str], None] | None = None, log_every: float = 0.1) -> None:
        self.total, self.done, self.report, self.log_every = total, 0, report, log_every
        self.started, self.next_log = time.monotonic(), log_every
        self.bar = None if report else tqdm(total=total, desc="evaluate", unit="ex", dynamic_ncols=True)

    def update(self, system: str, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.set_postfix_str(system)
            self.bar.update(n)
        elif self.report is not None and (self.done / self.total >= self.next_log or self.done == self.total):
            self.next_log += self.log_every
            elapsed = max(time.monotonic() - self.started, 1e-9)  # a fast machine: never a division by zero
            self.report(
                f"evaluate {self.done}/{self.total} examples ({self.done / self.total:.0%}, "
                f"{self.done / elapsed:.1f} ex/s, ETA {elapsed / self.done * (self.total - self.done):.0f}s; {system})"
            )

    def close(self) -> float:
        """Ends the bar; returns examples per second over the whole evaluation."""
        if self.bar is not None:
            self.bar.close()
        return self.done / max(time.monotonic() - self.started, 1e-9)


def evaluate_systems(
    systems: dict[str, dict[str, Any]],
    cfg: EvalConfig,
    out_dir: str | Path,
    report_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate each system {name: {"model": dir, "weights": file or None}} on the same test examples.

    Writes per_example.parquet and table.json in `out_dir`; returns the table (one row per system).
    Progress: a bar with ETA, or progress lines with ETA through `report_progress` when given.
    """
    cfg.validate()
    out = EvaluationLayout(Path(out_dir))
    torch.set_num_threads(torch_threads())
    corpus = load_corpus(cfg.data)
    corpus.require_splits(cfg.split)
    tables = corpus_to_dataset(corpus)
    if (empty := corpus.empty_ix(cfg.ix_mode, cfg.split)) is not None:
        raise AftInputError(cfg.data, "ix_mode", *empty)
    table = tables[cfg.split]
    if cfg.test_examples:
        table = table.select(range(min(cfg.test_examples, len(table))))
    db = VenueDB.load(corpus.db_dir) if corpus.db_dir else None
    scorer = load_bertscore(cfg.bertscore_model)
    progress = EvalProgress(len(systems) * len(table), report_progress)
    frames = []
    encoded_by_model: dict[str, list[dict[str, Any]]] = {}
    for name, spec in systems.items():
        model, tokenizer = load_system(spec["model"], spec.get("weights"))
        family = family_of(model, tokenizer)
        family.check_lengths(model, spec["model"], cfg.max_source_tokens, cfg.max_new_tokens)
        if str(spec["model"]) not in encoded_by_model:  # the ★/last systems share SFT's tokenizer: encode once
            encoded_by_model[str(spec["model"])] = encode_table(
                table, tokenizer, family, cfg.max_source_tokens, 8
            ).to_list()
        encoded = encoded_by_model[str(spec["model"])]
        layers = parse_layers(cfg.layers, family.attention_layers(model))
        s = score_greedy(
            model,
            tokenizer,
            family,
            encoded,
            ix_modes=IX_MODES,
            layers=layers,
            max_new_tokens=cfg.max_new_tokens,
            repeat_n=cfg.repeat_n,
            batch_size=cfg.batch_size,
            on_batch=functools.partial(progress.update, name),
        )
        references = [r["target"] for r in encoded]
        frame = pd.DataFrame(
            {
                "system": name,
                "example_id": [r["example_id"] for r in encoded],
                "reference": references,
                "response": s["texts"],
                "focus": s[f"focus/{cfg.ix_mode}"],
                **{f"coverage_{m}": s[f"coverage/{m}"] for m in IX_MODES},
                "repeat": s["repeat"],
                "length": s["length"],
                "lookback": s["lookback"],
            }
        )
        if db is not None:
            states = [json.loads(r["belief_state"]) for r in encoded]
            frame["venue_turn"] = [names_venue(db, ref) for ref in references]
            frame["entity_correct"] = [
                entity_correct(db, resp, st) for resp, st in zip(s["texts"], states, strict=True)
            ]
        frame["model"], frame["weights"] = str(spec["model"]), str(spec.get("weights") or "")
        frames.append(frame)
    per_example = pd.concat(frames, ignore_index=True)
    # Every system's pairs at once: the references, and responses systems share, are embedded once (BertScore.f1);
    # at 5 systems x 1,000 examples 3.6x less time than a call per system, the same F1s to float rounding.
    per_example.insert(
        per_example.columns.get_loc("length"),
        "bertscore",
        scorer.f1(per_example["response"].tolist(), per_example["reference"].tolist()),
    )
    examples_per_second = progress.close()
    with atomic_path(out.per_example) as tmp:
        per_example.to_parquet(tmp)
    result: dict[str, Any] = {
        "split": cfg.split,
        "examples": len(table),
        "ix_mode": cfg.ix_mode,
        "examples_per_second": round(examples_per_second, 2),  # system-examples scored per second, BERTScore included
        "bertscore_encoder": scorer.encoder,
        "bertscore_layer": scorer.layer,
        "venue_tables": sorted(db.venues) if db else [],
        "venue_tables_skipped": db.skipped if db else {},
        "rows": table_rows(per_example, baseline=next(iter(systems)), ix_mode=cfg.ix_mode),
    }
    success = dialogue_success(per_example, cfg.data, cfg.split)
    result["dialogue_success"] = {k: v for k, v in success.items() if k != "systems"}
    if "systems" in success:
        result["dialogue_success"]["reference"] = success["systems"][REFERENCE]
        for row in result["rows"]:
            for key in ("inform", "success"):
                mean, low, high = success["systems"][row["system"]][key]
                row[key], row[f"{key}_ci"] = mean, [low, high]
    out.qualitative.unlink(missing_ok=True)  # chosen from the previous table: stale now
    write_json_atomic(out.table, result)
    write_text_atomic(out.table1, table1_markdown(result))
    return result


def attention_maps(
    system: dict[str, Any],
    examples: Any,
    example_ids: list[str],
    max_source_tokens: int,
    max_new_tokens: int,
    ix_mode: str,
) -> list[dict[str, Any]]:
    """Greedy responses of one system to `examples` (a `datasets` table) in the order of `example_ids`, each with
    its A[T,S], response and source tokens, turn map, I_x mask and dialogue history: the report's heatmaps."""
    model, tokenizer = load_system(system["model"], system.get("weights") or None)
    family = family_of(model, tokenizer)
    rows = encode_table(examples, tokenizer, family, max_source_tokens, 8).to_list()
    rows.sort(key=lambda r: example_ids.index(r["example_id"]))
    scored = score_greedy(
        model,
        tokenizer,
        family,
        rows,
        ix_modes=(ix_mode,),
        layers=parse_layers("all", family.attention_layers(model)),
        max_new_tokens=max_new_tokens,
        repeat_n=3,
        keep_attention=True,
    )
    maps = []
    for i, row in enumerate(rows):
        src = SourceBatch.from_rows([row], family.pad_id())
        maps.append(
            {
                "tokens": tokenizer.convert_ids_to_tokens(scored["target_ids"][i]),
                "source_tokens": tokenizer.convert_ids_to_tokens(row["input_ids"]),
                "attention": scored["attention"][i].numpy(),
                "turns": list(row["src_turn"]),
                "ix": src.mask(ix_mode)[0].tolist(),
                "history": row["history_texts"],
                "speakers": row["history_speakers"],
            }
        )
    return maps


QUALITATIVE_PAIRS = 4
QUALITATIVE_RULE = (
    f"the {QUALITATIVE_PAIRS} test examples with the largest per-example focus gain of the best "
    "branch's ★ over SFT (best branch: largest ΔFocus at ★ on the probe), ties broken by example id"
)


def qualitative_pairs(
    per_example: pd.DataFrame, table: dict[str, Any], branches: list[dict[str, Any]]
) -> tuple[str | None, pd.DataFrame]:
    """The examples chosen by QUALITATIVE_RULE, with SFT's and ★'s responses side by side."""
    ranked = sorted(
        (b for b in branches if b.get("primary_delta_focus") is not None),
        key=lambda b: (-b["primary_delta_focus"], b["branch_id"]),
    )
    star = next(
        (r["system"] for b in ranked for r in table["rows"] if r["system"].startswith(f"{b['branch_id']} ★")), None
    )
    if star is None:
        return None, pd.DataFrame()
    sft = per_example[per_example["system"] == "SFT"].set_index("example_id")
    best = per_example[per_example["system"] == star].set_index("example_id").loc[sft.index]
    pairs = pd.DataFrame(
        {
            "example_id": sft.index,
            "gain": best["focus"].to_numpy() - sft["focus"].to_numpy(),
            "reference": sft["reference"].to_numpy(),
            "sft": sft["response"].to_numpy(),
            "star": best["response"].to_numpy(),
            "sft_focus": sft["focus"].to_numpy(),
            "star_focus": best["focus"].to_numpy(),
        }
    )
    for name, frame in (("sft", sft), ("star", best)):
        pairs[f"{name}_correct"] = frame["entity_correct"].to_numpy() if "entity_correct" in frame else None
    pairs = pairs.sort_values(["gain", "example_id"], ascending=[False, True]).head(QUALITATIVE_PAIRS)
    return star, pairs.reset_index(drop=True)


def qualitative_comparison(run: RunLayout) -> dict[str, Any]:
    """Choose the qualitative pairs of a run by QUALITATIVE_RULE and compute SFT's and ★'s cross-attention on
    them; written to evaluation/qualitative.json (the report renders it without loading a model)."""
    table = run.evaluation.read_table()
    star, pairs = qualitative_pairs(run.evaluation.read_per_example(), table, run.branch_rows())
    result: dict[str, Any] = {"rule": QUALITATIVE_RULE, "star": star, "pairs": []}
    if star is not None:
        systems = {r["system"]: r for r in table["rows"]}
        sft_config = run.sft.read_config()
        settings = run.read_parameters().get("sweep", {}).get("branch", {})
        ids = pairs["example_id"].tolist()
        wanted = set(ids)
        examples = corpus_to_dataset(load_corpus(sft_config["data"]))["test"].filter(
            lambda r: r["example_id"] in wanted
        )
        maps = {
            who: attention_maps(
                systems[name],
                examples,
                ids,
                max_source_tokens=sft_config["max_source_tokens"],
                max_new_tokens=settings.get("max_new_tokens", 48),
                ix_mode=table["ix_mode"],
            )
            for who, name in (("SFT", "SFT"), ("star", star))
        }
        for i, pair in enumerate(pairs.to_dict("records")):
            pair = {
                k: (None if v is None or v != v else v.item() if hasattr(v, "item") else v) for k, v in pair.items()
            }
            pair["maps"] = {who: {**m[i], "attention": m[i]["attention"].round(5).tolist()} for who, m in maps.items()}
            result["pairs"].append(pair)
    write_json_atomic(run.evaluation.qualitative, result)
    return result


METRICS = ("focus", "repeat", "bertscore", "length", "coverage_history", "coverage_salient", "lookback")
COLUMN = {"length": "avg_len"}  # per-example column -> table column
TABLE1_COLUMNS = (
    ("focus", "Focus"),
    ("repeat", "Repeat"),
    ("bertscore", "BERTScore"),
    ("bleu", "BLEU"),
    ("avg_len", "Avg Len"),
    ("coverage_history", "Cov(history)"),
    ("coverage_salient", "Cov(salient)"),
    ("entity_accuracy", "Entity acc."),
    ("lookback", "Lookback"),
    ("inform", "Inform"),
    ("success", "Success"),
)  # table column -> heading, in Table 1's order
NO_VENUE_DATABASE = (
    "Entity accuracy: not computed, the corpus has no venue database (db/<domain>_db.json, or <domain>_db.json "
    "beside data.json)."
)
PAPER_TABLE1 = (  # T5-Large on MultiWOZ 2.1 (AFT_SPEC §7), bert-score's default encoder
    ("Base T5-Large", -3.333, 0.146, 0.672, 113.3),
    ("T5-Large SFT", -3.656, 0.024, 0.804, 37.3),
    ("AFT step 250 ★", -3.318, 0.042, 0.777, 41.4),
    ("AFT step 500", -4.381, 0.081, 0.612, 114.0),
)


def references_are_tokenised(references: Sequence[str]) -> bool:
    """Whether the references are already tokenised (punctuation split off by spaces, as TownInfo's and
    DailyDialog's are): most of those that end in . ? or ! have a space before it."""
    ending = [r.rstrip() for r in references if r.rstrip()[-1:] in (".", "?", "!")]
    return bool(ending) and sum(r[-2:-1] == " " for r in ending) > len(ending) / 2


def corpus_bleu(responses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """Corpus BLEU (exp smoothing) of responses against one reference each, and sacrebleu's signature (what
    makes the figure reproducible). Pre-tokenised references are scored as they are (`tok:none`: a second
    tokenisation would split them again, and sacrebleu warns about it); raw text gets sacrebleu's 13a.
    Responses are lexicalised (venue names, phone numbers, ...), as are the references, so this is not the
    delexicalised BLEU of MultiWOZ leaderboards."""
    from sacrebleu.metrics import BLEU

    tokenised = references_are_tokenised(references)
    # force: the input is known to be tokenised, so sacrebleu's "forgot to detokenize?" check does not apply
    bleu = BLEU(tokenize="none", force=True) if tokenised else BLEU(tokenize="13a")
    return float(bleu.corpus_score(list(responses), [list(references)]).score), str(bleu.get_signature())


def table_rows(per_example: pd.DataFrame, baseline: str, ix_mode: str = "all") -> list[dict[str, Any]]:
    """One row per system: every mean with its 95% bootstrap CI, distinct-1/2, entity accuracy, corpus BLEU,
    and the paired comparison against `baseline` on the same examples (with coverage under the run's I_x,
    when that is not `all`: under `all` coverage is 1/|x| whatever the model does)."""
    base = per_example[per_example["system"] == baseline].set_index("example_id")
    rows = []
    for name, frame in per_example.groupby("system", sort=False):
        row: dict[str, Any] = {
            "system": name,
            "model": frame["model"].iloc[0],
            "weights": frame["weights"].iloc[0],
            "examples": int(len(frame)),
        }
        for key in METRICS:
            mean, low, high = bootstrap_ci(frame[key].to_numpy())
            row[COLUMN.get(key, key)], row[f"{COLUMN.get(key, key)}_ci"] = mean, [low, high]
        row["bleu"], row["bleu_signature"] = corpus_bleu(frame["response"].tolist(), frame["reference"].tolist())
        row["distinct_1"] = distinct_n(frame["response"].tolist(), 1)
        row["distinct_2"] = distinct_n(frame["response"].tolist(), 2)
        if "venue_turn" in frame:
            venue = frame.loc[frame["venue_turn"], "entity_correct"].astype(float).to_numpy()
            mean, low, high = bootstrap_ci(venue)
            row.update(
                entity_accuracy=mean if venue.size else None,
                entity_accuracy_ci=[low, high] if venue.size else None,
                venue_turns=int(venue.size),
            )
        if name != baseline:
            aligned = frame.set_index("example_id").loc[base.index]
            focus_cmp = paired_comparison(aligned["focus"].to_numpy(), base["focus"].to_numpy())
            bs_cmp = paired_comparison(aligned["bertscore"].to_numpy(), base["bertscore"].to_numpy())
            length_cmp = paired_comparison(aligned["length"].to_numpy(), base["length"].to_numpy())
            row["vs_baseline"] = {
                "baseline": baseline,
                "focus_improved_share": focus_cmp["share_improved"],
                "focus_p_value": focus_cmp["p_value"],
                "median_delta_bertscore": bs_cmp["median_delta"],
                "mean_delta_bertscore": bs_cmp["mean_delta"],
                "bertscore_p_value": bs_cmp["p_value"],
                "mean_delta_length": length_cmp["mean_delta"],
                "length_p_value": length_cmp["p_value"],
            }
            if ix_mode != "all":
                column = f"coverage_{ix_mode}"
                cov_cmp = paired_comparison(aligned[column].to_numpy(), base[column].to_numpy())
                row["vs_baseline"].update(
                    ix_mode=ix_mode,
                    relative_delta_coverage=cov_cmp["mean_delta"] / base[column].mean()
                    if base[column].mean()
                    else None,
                    coverage_p_value=cov_cmp["p_value"],
                )
            if "venue_turn" in frame:
                venue = base.index[base["venue_turn"].to_numpy(dtype=bool)]
                entity_cmp = paired_comparison(
                    aligned.loc[venue, "entity_correct"].to_numpy(dtype=float),
                    base.loc[venue, "entity_correct"].to_numpy(dtype=float),
                )
                row["vs_baseline"].update(
                    delta_entity_accuracy=entity_cmp["mean_delta"],
                    entity_p_value=entity_cmp["p_value"],
                    entity_gained=int(round(entity_cmp["share_improved"] * len(venue))),
                    entity_lost=int(round(entity_cmp["share_worse"] * len(venue))),
                )
        rows.append(row)
    return rows


def paired_changes(row: dict[str, Any]) -> str:
    """One sentence: what a system changed against the baseline in entity accuracy, length and BERTScore.

    Paired tests."""
    cmp = row.get("vs_baseline")
    if not cmp:
        return ""

    def p(value: float) -> str:
        return "p<0.001" if value < 0.001 else f"p={value:.3f}"  # a bootstrap of 2,000 resamples resolves no finer

    parts = []
    if cmp.get("delta_entity_accuracy") is not None:
        parts.append(
            f"entity accuracy {cmp['delta_entity_accuracy']:+.3f} ({p(cmp['entity_p_value'])}; "
            f"{cmp['entity_gained']} venue turns gained, {cmp['entity_lost']} lost)"
        )
    if cmp.get("relative_delta_coverage") is not None:
        parts.append(
            f"coverage under I_x = {cmp['ix_mode']} {cmp['relative_delta_coverage']:+.1%} "
            f"({p(cmp['coverage_p_value'])})"
        )
    parts.append(f"length {cmp['mean_delta_length']:+.1f} tokens ({p(cmp['length_p_value'])})")
    parts.append(f"BERTScore {cmp['mean_delta_bertscore']:+.3f} ({p(cmp['bertscore_p_value'])})")
    return f"{row['system']} vs {cmp['baseline']}: " + ", ".join(parts) + "."


def table1_systems(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Table 1's rows, and after them the corpus's own system turns as the `reference` row (Inform and Success only,
    the anchor the literature reports) where Inform and Success were read."""
    reference = (table.get("dialogue_success") or {}).get("reference")
    if not reference:
        return list(table["rows"])
    row: dict[str, Any] = {"system": REFERENCE}
    for key in ("inform", "success"):
        mean, low, high = reference[key]
        row[key], row[f"{key}_ci"] = mean, [low, high]
    return [*table["rows"], row]


def table1_cells(table: dict[str, Any]) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """Table 1's header and, per system, (value, 95% CI) texts of its cells: the one formatting of Table 1,
    rendered as markdown by `table1_markdown` and as HTML by the report."""

    def cell(row: dict[str, Any], key: str) -> tuple[str, str]:
        if row.get(key) is None:
            return "–", ""
        low, high = row.get(f"{key}_ci") or (None, None)
        fmt = "{:.1f}" if key in ("avg_len", "bleu") else "{:.4f}" if key.startswith("coverage") else "{:.3f}"
        return fmt.format(row[key]), (f"[{fmt.format(low)}, {fmt.format(high)}]" if low is not None else "")

    header = [
        "System",
        *[name for _, name in TABLE1_COLUMNS],
        "distinct-1 / 2",
        "Focus ↑ vs SFT",
        "median ΔBERTScore (p)",
    ]
    rows = []
    for row in table1_systems(table):
        cmp = row.get("vs_baseline")
        paired = (
            (
                f"{cmp['focus_improved_share']:.0%} (p={cmp['focus_p_value']:.3f})",
                f"{cmp['median_delta_bertscore']:+.3f} (p={cmp['bertscore_p_value']:.3f})",
            )
            if cmp
            else ("–", "–")
        )
        rows.append(
            [
                (row["system"], ""),
                *[cell(row, key) for key, _ in TABLE1_COLUMNS],
                (f"{row['distinct_1']:.3f} / {row['distinct_2']:.3f}" if "distinct_1" in row else "–", ""),
                (paired[0], ""),
                (paired[1], ""),
            ]
        )
    return header, rows


def table1_markdown(table: dict[str, Any]) -> str:
    """Table 1 in markdown: means with 95% CIs, entity accuracy, the paired comparison, and the paper's figures."""
    header, rows = table1_cells(table)
    lines = [
        f"Table 1: {table['examples']} {table['split']} examples, greedy decoding; mean [95% bootstrap CI]. "
        f"BERTScore F1 with {table['bertscore_encoder']} (layer {table['bertscore_layer']}); Focus under "
        f"I_x = {table['ix_mode']}; BLEU: sacrebleu corpus BLEU on lexicalised responses "
        f"({table['rows'][0].get('bleu_signature', '')}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(f"{value} {ci}".strip() for value, ci in row) + " |" for row in rows]
    if table.get("venue_tables"):
        skipped = "; ".join(f"{d} ({why})" for d, why in table.get("venue_tables_skipped", {}).items())
        lines += [
            "",
            f"Entity accuracy reads the venue tables {', '.join(table['venue_tables'])}"
            + (f"; skipped: {skipped}." if skipped else "."),
        ]
    else:
        lines += ["", NO_VENUE_DATABASE]
    success = table.get("dialogue_success") or {}
    if "reference" in success:
        ref = success["reference"]
        lines += [
            "",
            f"Inform and Success: mwzeval's definitions over the {success['dialogues']} test dialogues "
            "evaluated whole, the responses of every system turn read by a matcher (aft_core.dialogue.reader, "
            f"F1 {success['reader_f1']:.3f} against the gold system acts naming venues, addresses, phones, postcodes "
            "and references); lexicalised, not the delexicalised "
            f"leaderboard setting. The corpus's own system turns: Inform {ref['inform'][0]:.3f}, Success "
            f"{ref['success'][0]:.3f} (MultiWOZ 2.2's reference in mwzeval: 93.7 and 90.9).",
        ]
    elif "skipped" in success:
        lines += ["", f"Inform and Success: not computed ({success['skipped']})."]
    changes = [paired_changes(row) for row in table["rows"] if row.get("vs_baseline")]
    if changes:
        lines += [
            "",
            "Paired against SFT on the same examples (means of per-example differences, paired bootstrap "
            "p-values; entity accuracy on the venue turns):",
            "",
        ] + [f"- {c}" for c in changes]
    lines += [
        "",
        "The paper's figures (T5-Large, MultiWOZ 2.1, bert-score's default encoder; not comparable "
        "across encoders or corpora):",
        "",
        "| Model | Focus | Repeat | BERTScore | Avg Len |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {m} | {f:.3f} | {r:.3f} | {b:.3f} | {n:.1f} |" for m, f, r, b, n in PAPER_TABLE1]
    return "\n".join(lines) + "\n"
