"""The one owner of the run folder: the typed path of every artefact, and the readers and writers of
those that more than one module reads. No other module spells a file name of the run folder.

    RUN_DIR/
        pipeline.json      the parameters of the latest pipeline run           (flows.pipeline)
        data/              the built-in TownInfo corpus, or the hold-out of a single-split MultiWOZ file
        checks/            report.json, report.md: the great-expectations data checks
        sft/               SFTLayout: the SFT run
        branches/<id>/     BranchLayout: one AFT branch per sweep point (completions/, candidates/: what it said)
        sweep.json         every branch's grid point and training outcome        (flows.sweep)
        evaluation/        EvaluationLayout: per_example.parquet, table.json, table1.md
        conversations/     ConversationLayout: closed-loop conversations with the user simulator
        provenance.json    machine, libraries and seeds of each pipeline start   (aft_core.provenance)
        summary.json, summary.md, report.html, comet/ (offline Comet archives), frontier/, decoder_only/, multiturn/,
        .prefect-results/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aft_core.errors import AftInputError
from aft_core.io import atomic_path, write_json_atomic


def _read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True)
class SFTLayout:
    """An SFT run folder (aft_core.sft)."""

    root: Path

    @property
    def config(self) -> Path:  # the config; a different config in the same folder is refused
        return self.root / "sft_config.json"

    @property
    def result(self) -> Path:  # written last: the run is complete
        return self.root / "sft_result.json"

    @property
    def tokenizer(self) -> Path:  # the corpus tokenizer (preset models)
        return self.root / "tokenizer"

    @property
    def best(self) -> Path:  # the best model so far by dev loss
        return self.root / "best"

    @property
    def model(self) -> Path:  # the final model (= best by dev loss) with its tokenizer
        return self.root / "model"

    @property
    def base(self) -> Path:  # adapter=lora on a model no name rebuilds (a preset): the frozen model under the adapter
        return self.root / "base"

    @property
    def metrics(self) -> Path:  # one line per step / evaluation
        return self.root / "metrics.jsonl"

    @property
    def provenance(self) -> Path:  # machine, libraries and seeds of every start and resume (aft_core.provenance)
        return self.root / "provenance.json"

    def finished(self) -> bool:
        return self.result.exists()

    def read_config(self) -> dict[str, Any]:
        return _read_json(self.config)


@dataclass(frozen=True)
class BranchLayout:
    """An AFT branch folder (aft_core.aft trains it, aft_core.judging judges it)."""

    root: Path

    @property
    def config(self) -> Path:  # the branch config; a different config in the same folder is refused
        return self.root / "config.json"

    @property
    def checkpoints(self) -> Path:  # step-NNNNNNN/ resumable states; the last few are kept
        return self.root / "checkpoints"

    @property
    def steps_log(self) -> Path:  # one JSON line per step (only checkpointed steps are kept)
        return self.root / "steps.jsonl"

    @property
    def steps(self) -> Path:  # steps_log as a table, written when training ends
        return self.root / "steps.parquet"

    @property
    def probe(self) -> Path:  # one row per checkpoint (step 0 = the SFT model)
        return self.root / "probe.parquet"

    @property
    def result(self) -> Path:  # written last by training: the branch is complete (status, steps, time)
        return self.root / "result.json"

    @property
    def verdict(self) -> Path:  # written only by judging: labels per checkpoint, ★, final label
        return self.root / "attractors.json"

    @property
    def provenance(self) -> Path:  # machine, libraries and seeds of every start and resume (aft_core.provenance)
        return self.root / "provenance.json"

    def weights(self, step: int) -> Path:
        """The policy's weights at checkpoint `step` (kept for every checkpoint, for ★ and last evaluation)."""
        return self.root / "weights" / f"step-{step:07d}.safetensors"

    def completions(self, step: int) -> Path:
        """Checkpoint `step`'s greedy completions of the probe: prompt, reference, response and their scores."""
        return self.root / "completions" / f"step-{step:07d}.parquet"

    def candidates(self, step: int) -> Path:
        """AFT step `step`'s K candidates for its first prompt, with reward parts and weights."""
        return self.root / "candidates" / f"step-{step:07d}.parquet"

    def write_table(self, path: Path, rows: list[dict[str, Any]]) -> Path:
        with atomic_path(path) as tmp:
            pd.DataFrame(rows).to_parquet(tmp)
        return path

    def finished(self) -> bool:
        return self.result.exists()

    def read_config(self) -> dict[str, Any]:
        return _read_json(self.config)

    def read_result(self) -> dict[str, Any]:
        return _read_json(self.result)

    def read_probe_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = pd.read_parquet(self.probe).to_dict("records")
        return rows

    def write_probe_rows(self, rows: list[dict[str, Any]]) -> None:
        with atomic_path(self.probe) as tmp:
            pd.DataFrame(rows).to_parquet(tmp)

    def read_steps(self) -> pd.DataFrame | None:
        return pd.read_parquet(self.steps) if self.steps.exists() else None

    def read_verdict(self) -> dict[str, Any]:
        """The branch's verdict (★, labels); a finished branch that was never judged is named with the fix."""
        if not self.verdict.exists():
            raise AftInputError(
                self.root,
                self.verdict.name,
                "the branch has not been judged",
                f"run `aft classify {self.root}` (or rerun the pipeline)",
            )
        return _read_json(self.verdict)

    def write_verdict(self, verdict: dict[str, Any]) -> None:
        write_json_atomic(self.verdict, verdict)


@dataclass(frozen=True)
class EvaluationLayout:
    """A test evaluation folder (aft_core.evaluation)."""

    root: Path

    @property
    def per_example(self) -> Path:
        return self.root / "per_example.parquet"

    @property
    def table(self) -> Path:
        return self.root / "table.json"

    @property
    def table1(self) -> Path:
        return self.root / "table1.md"

    @property
    def qualitative(self) -> Path:  # the qualitative pairs with their attention maps (what the report shows)
        return self.root / "qualitative.json"

    def read_qualitative(self) -> dict[str, Any] | None:
        return _read_json(self.qualitative) if self.qualitative.exists() else None

    def read_table(self) -> dict[str, Any]:
        if not self.table.exists():
            raise AftInputError(
                self.root,
                self.table.name,
                "the run has no test evaluation yet",
                "run the pipeline (or `aft evaluate --out RUN_DIR/evaluation`) first",
            )
        return _read_json(self.table)

    def read_per_example(self) -> pd.DataFrame:
        return pd.read_parquet(self.per_example)


@dataclass(frozen=True)
class ConversationLayout:
    """A closed-loop evaluation folder (aft_core.dialogue.closed_loop): every conversation and the table."""

    root: Path

    @property
    def transcripts(self) -> Path:  # one JSON line per conversation: system, reveal mode, seed, turns, outcome
        return self.root / "conversations.jsonl"

    @property
    def table(self) -> Path:  # per system: outcome means with intervals, paired tests against SFT, trajectory
        return self.root / "table.json"

    def read_table(self) -> dict[str, Any]:
        if not self.table.exists():
            raise AftInputError(
                self.root,
                self.table.name,
                "no closed-loop evaluation here yet",
                "run `aft converse` (or the pipeline's converse stage) first",
            )
        return _read_json(self.table)

    def read_transcripts(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.transcripts.read_text(encoding="utf-8").splitlines() if line]


@dataclass(frozen=True)
class RunLayout:
    """A pipeline run folder."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def parameters(self) -> Path:
        return self.root / "pipeline.json"

    @property
    def provenance(self) -> Path:  # machine, libraries and seeds of every start and resume (aft_core.provenance)
        return self.root / "provenance.json"

    @property
    def data(self) -> Path:  # a corpus the run generated (TownInfo)
        return self.root / "data"

    @property
    def held_out_data(self) -> Path:  # the hold-out of a single-split corpus
        return self.root / "data" / "held-out"

    @property
    def checks(self) -> Path:
        return self.root / "checks"

    @property
    def sft(self) -> SFTLayout:
        return SFTLayout(self.root / "sft")

    @property
    def branches(self) -> Path:
        return self.root / "branches"

    def branch(self, branch_id: str) -> BranchLayout:
        return BranchLayout(self.branches / branch_id)

    @property
    def sweep(self) -> Path:
        return self.root / "sweep.json"

    @property
    def evaluation(self) -> EvaluationLayout:
        return EvaluationLayout(self.root / "evaluation")

    @property
    def conversations(self) -> ConversationLayout:
        return ConversationLayout(self.root / "conversations")

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def summary_markdown(self) -> Path:
        return self.root / "summary.md"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def comet(self) -> Path:  # offline Comet archives
        return self.root / "comet"

    @property
    def frontier(self) -> Path:  # experiments/frontier.py --out RUN_DIR/frontier
        return self.root / "frontier"

    @property
    def decoder_only(self) -> Path:  # experiments/decoder_only.py --out RUN_DIR/decoder_only
        return self.root / "decoder_only"

    @property
    def multiturn(self) -> Path:  # experiments/multiturn.py and conversations.py --out RUN_DIR/multiturn
        return self.root / "multiturn"

    @property
    def task_results(self) -> Path:  # Prefect's persisted task results (the cache travels with the run)
        return self.root / ".prefect-results"

    def read_parameters(self) -> dict[str, Any]:
        return _read_json(self.parameters) if self.parameters.exists() else {}

    def read_sweep(self) -> dict[str, Any]:
        return _read_json(self.sweep)

    def write_sweep(self, sweep: dict[str, Any]) -> None:
        write_json_atomic(self.sweep, sweep)

    def branch_rows(self) -> list[dict[str, Any]]:
        """Every branch of the sweep with its grid point, training outcome and current verdict (read from
        its verdict file, so a re-judged branch shows its new ★ everywhere)."""
        if not self.sweep.exists():
            return []
        rows = []
        for row in self.read_sweep()["branches"]:
            branch = self.branch(row["branch_id"])
            if row.get("status") != "failed" and branch.verdict.exists():
                row = {**row, **verdict_fields(branch.read_verdict())}
            rows.append(row)
        return rows


def verdict_fields(verdict: dict[str, Any]) -> dict[str, Any]:
    """A verdict without its per-checkpoint labels: what a table row of the branch shows."""
    return {k: v for k, v in verdict.items() if k != "checkpoints"}
