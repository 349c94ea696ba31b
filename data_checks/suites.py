"""Great-expectations suites for a corpus, built in code, and a readable report of what failed.

Three tables are checked, each against its own suite:
    turns            one row per turn: non-empty text, known speakers that alternate, unique (dialogue, turn)
    dialogue_splits  one row per (dialogue, split) pair: no dialogue in two splits
    examples         one row per training example: unique ids, a non-empty current user turn that
                     nearly always fits the source budget (a rare longer one is legal: its left end is
                     cut), most sources fit it whole, target lengths sane, annotations present where
                     the format promises them (MultiWOZ 2.1 and 2.2 or SGD: belief states and slot spans)
The budgets are the SFT config's (the pipeline derives them; they are not declared twice); the
`mostly` shares let the rare legal row through while a corrupt corpus still fails.
Lengths are in whitespace words, an optimistic stand-in for tokens: the data checks run before a
tokenizer exists. `run_checks` returns a JSON-able report; `report_markdown` renders it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from aft_core.config import _check, check_shares, setting
from aft_core.data.corpus import Corpus

EXAMPLES_SHOWN = 5  # failing values quoted per expectation
# Formats whose system turns promise a belief state and whose turns promise slot spans: MultiWOZ 2.1's original
# schema, and MultiWOZ 2.2's / SGD's schema-guided layout (user-turn states, frame spans)
ANNOTATED_FORMATS = ("multiwoz", "schema-guided")


@dataclass
class DataCheckConfig:
    """Thresholds of the data-check suites (lengths in words)."""

    max_source_tokens: int = setting(192, "source budget of SFT/AFT (the pipeline takes sft.max_source_tokens)")
    current_turn_fits_mostly: float = setting(
        0.999,
        "share of current user turns that must fit the source budget "
        "(a longer one is cut on the left; DailyDialog has 1 in 49,188)",
    )
    source_fits_mostly: float = setting(0.5, "share of examples whose whole history must fit the budget")
    max_target_tokens: int = setting(
        48, "target budget of SFT (the pipeline takes sft.max_target_tokens); targets above it are cut"
    )
    target_fits_mostly: float = setting(0.95, "share of targets that must fit max_target_tokens")
    target_mean_words_min: float = setting(2.0, "lowest sane mean target length")
    target_mean_words_max: float = setting(60.0, "highest sane mean target length")
    annotated_mostly: float = setting(
        0.5, "share of examples with a belief state / slot spans, where the format has them"
    )

    def validate(self, where: str = "data checks") -> DataCheckConfig:
        check_shares(
            self,
            ("current_turn_fits_mostly", "source_fits_mostly", "target_fits_mostly", "annotated_mostly"),
            where,
            "use e.g. 0.5",
        )
        _check(
            self.max_source_tokens >= 2 and self.max_target_tokens >= 2,
            "max_source_tokens/max_target_tokens",
            "must be >= 2",
            "use the SFT budgets (e.g. 192 and 48)",
            where,
        )
        return self


def corpus_tables(corpus: Corpus) -> dict[str, pd.DataFrame]:
    """The three checked tables, rebuilt from the loaded examples (each dialogue from its last example)."""
    turns, examples = [], []
    last_example: dict[tuple[str, str], Any] = {}
    for split, exs in corpus.examples.items():
        for ex in exs:
            last_example[(split, ex.dialogue_id)] = ex
            history_words = sum(len(t.text.split()) + 1 for t in ex.history)  # +1: the speaker tag
            examples.append(
                {
                    "example_id": ex.example_id,
                    "split": split,
                    "target_words": len(ex.target.split()),
                    "source_words": history_words,
                    "current_turn_words": len(ex.history[-1].text.split()) + 1 if ex.history else 0,
                    "has_belief_state": bool(ex.belief_state),
                    "has_slot_values": any(t.slot_values for t in ex.history),
                }
            )
    for (split, dialogue_id), ex in last_example.items():
        for i, turn in enumerate([*ex.history, None]):
            speaker, text = ("system", ex.target) if turn is None else (turn.speaker, turn.text)
            turns.append(
                {
                    "split": split,
                    "dialogue_id": dialogue_id,
                    "turn_index": i,
                    "speaker": speaker,
                    "expected_speaker": "user" if i % 2 == 0 else "system",
                    "text": text,
                    "text_chars": len(text.strip()),
                }
            )
    splits = pd.DataFrame([{"dialogue_id": d, "split": s} for s, d in last_example]).drop_duplicates()
    return {"turns": pd.DataFrame(turns), "dialogue_splits": splits, "examples": pd.DataFrame(examples)}


def build_suites(cfg: DataCheckConfig, corpus_format: str) -> dict[str, list[Any]]:
    """Expectations per table. MultiWOZ-schema corpora promise annotations; unified ones may lack them."""
    import great_expectations as gx

    E = gx.expectations
    suites: dict[str, list[Any]] = {
        "turns": [
            E.ExpectColumnValuesToNotBeNull(column="text"),
            E.ExpectColumnValuesToBeBetween(column="text_chars", min_value=1),
            E.ExpectColumnValuesToBeInSet(column="speaker", value_set=["user", "system"]),
            E.ExpectColumnPairValuesToBeEqual(column_A="speaker", column_B="expected_speaker"),
            E.ExpectCompoundColumnsToBeUnique(column_list=["dialogue_id", "turn_index"]),
        ],
        "dialogue_splits": [
            E.ExpectColumnValuesToBeUnique(column="dialogue_id"),
            E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "validation", "test"]),
        ],
        "examples": [
            E.ExpectTableRowCountToBeBetween(min_value=1),
            E.ExpectColumnValuesToBeUnique(column="example_id"),
            E.ExpectColumnValuesToBeBetween(column="current_turn_words", min_value=2),
            E.ExpectColumnValuesToBeBetween(
                column="current_turn_words", max_value=cfg.max_source_tokens - 1, mostly=cfg.current_turn_fits_mostly
            ),
            E.ExpectColumnValuesToBeBetween(
                column="source_words", max_value=cfg.max_source_tokens - 1, mostly=cfg.source_fits_mostly
            ),
            E.ExpectColumnValuesToBeBetween(
                column="target_words", min_value=1, max_value=cfg.max_target_tokens - 1, mostly=cfg.target_fits_mostly
            ),
            E.ExpectColumnMeanToBeBetween(
                column="target_words", min_value=cfg.target_mean_words_min, max_value=cfg.target_mean_words_max
            ),
        ],
    }
    if corpus_format in ANNOTATED_FORMATS:
        suites["examples"] += [
            E.ExpectColumnValuesToBeInSet(column="has_belief_state", value_set=[True], mostly=cfg.annotated_mostly),
            E.ExpectColumnValuesToBeInSet(column="has_slot_values", value_set=[True], mostly=cfg.annotated_mostly),
        ]
    return suites


def run_checks(corpus: Corpus, cfg: DataCheckConfig | None = None) -> dict[str, Any]:
    """Validate the corpus tables; returns {success, suites: {name: {success, checked, failures}}}."""
    import great_expectations as gx

    cfg = (cfg or DataCheckConfig()).validate()
    tables = corpus_tables(corpus)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX sets one of its loggers to INFO itself ("Created temporary directory ... for ephemeral docs site" on
    # every run): its loggers are held at WARNING so the console keeps the flow's own lines.
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(
        globally=False
    )  # dozens of "Calculating Metrics" bars otherwise
    source = context.data_sources.add_pandas("aft_corpus")
    report: dict[str, Any] = {
        "success": True,
        "corpus": str(corpus.source),
        "format": corpus.format,
        "config": dataclasses.asdict(cfg),
        "suites": {},
    }
    for name, expectations in build_suites(cfg, corpus.format).items():
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        for expectation in expectations:
            suite.add_expectation(expectation)
        batch = (
            source.add_dataframe_asset(name)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": tables[name]})
        )
        result = batch.validate(
            suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES_SHOWN}
        )
        failures = [_failure(r) for r in result.results if not r.success]
        report["suites"][name] = {
            "success": bool(result.success),
            "rows": len(tables[name]),
            "checked": len(result.results),
            "failures": failures,
        }
        report["success"] &= bool(result.success)
    return report


def _failure(r: Any) -> dict[str, Any]:
    cfg = r.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",) and v is not None}
    res = r.result or {}
    if r.exception_info and r.exception_info.get("raised_exception"):
        res = {"error": r.exception_info.get("exception_message")}
    return {
        "expectation": cfg.type,
        "kwargs": json.loads(json.dumps(kwargs, default=str)),
        "unexpected_count": res.get("unexpected_count"),
        "element_count": res.get("element_count"),
        "observed_value": json.loads(json.dumps(res.get("observed_value"), default=str)),
        "examples": json.loads(json.dumps(res.get("partial_unexpected_list", [])[:EXAMPLES_SHOWN], default=str)),
        "error": res.get("error"),
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: one line per suite, then one block per failed expectation."""
    lines = [
        f"# Data checks: {'passed' if report['success'] else 'FAILED'}",
        "",
        f"Corpus `{report['corpus']}` ({report['format']} schema).",
        "",
        "| suite | rows | expectations | failed |",
        "|---|---|---|---|",
    ]
    for name, suite in report["suites"].items():
        lines.append(f"| {name} | {suite['rows']} | {suite['checked']} | {len(suite['failures'])} |")
    for name, suite in report["suites"].items():
        for f in suite["failures"]:
            where = ", ".join(f"{k}={v}" for k, v in f["kwargs"].items())
            lines += ["", f"**{name}: `{f['expectation']}`** ({where})"]
            if f["unexpected_count"] is not None:
                lines.append(f"- {f['unexpected_count']} of {f['element_count']} rows fail")
            if f["observed_value"] is not None:
                lines.append(f"- observed: {f['observed_value']}")
            if f["examples"]:
                lines.append(f"- examples: {f['examples']}")
            if f["error"]:
                lines.append(f"- error: {f['error']}")
    return "\n".join(lines) + "\n"


def failure_summary(report: dict[str, Any]) -> str:
    """One line naming every failed expectation, for exceptions and logs."""
    parts = []
    for name, suite in report["suites"].items():
        for f in suite["failures"]:
            count = (
                f" ({f['unexpected_count']} of {f['element_count']} rows)" if f["unexpected_count"] is not None else ""
            )
            column = f["kwargs"].get("column") or f["kwargs"].get("column_list") or f["kwargs"].get("column_A") or ""
            parts.append(f"{name}.{f['expectation']}[{column}]{count}")
    return "; ".join(parts)
