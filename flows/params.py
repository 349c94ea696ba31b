"""Flow parameters as pydantic models, so the Prefect UI shows a form with help on every field.

The per-stage settings are generated from the library's config dataclasses (one source of truth
for names, defaults and help). A setting several stages share is declared once: the source and
target budgets live in `sft` and flow to the data checks, every branch and the test evaluation
(`PipelineParams.check_config/sft_config/evaluation_config`, `branch_configs`). `check_parameters`
validates the whole set before any work: every error names the parameter path, the problem and
the fix. `PRESETS` hold named parameter sets; prefect.yaml's deployments use the same values
(tests/test_flows.py keeps them in sync).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from aft_core.attractors import THRESHOLD_SETS, AttractorThresholds, thresholds_from
from aft_core.config import AFTConfig, ConversationConfig, EvalConfig, SFTConfig, config_id, settings_of
from aft_core.errors import AftInputError
from data_checks.suites import DataCheckConfig

if TYPE_CHECKING:
    from aft_core.data.corpus import Corpus


def model_of(cls: type, name: str, exclude: tuple[str, ...] = (), **defaults: Any) -> type[BaseModel]:
    """A pydantic model with the fields (types, defaults, help) of a config dataclass."""
    fields = {}
    for f in settings_of(cls):
        if f.name in exclude:
            continue
        default = defaults.get(f.name, f.default)
        fields[f.name] = (type(f.default), Field(default, description=f.metadata.get("help", "")))
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


GRID_FIELDS = ("beta", "gamma", "eta_kl", "k")
SHARED_BUDGETS = ("max_source_tokens", "max_target_tokens")  # declared in sft, derived by every other stage
# Settings every branch shares; the sweep sets sft_model, data and the SFT source budget, the grid the swept ones.
BranchSettings = model_of(AFTConfig, "BranchSettings", exclude=("sft_model", "data", "max_source_tokens"))
SFTSettings = model_of(SFTConfig, "SFTSettings", exclude=("data",))
CheckSettings = model_of(DataCheckConfig, "CheckSettings", exclude=SHARED_BUDGETS)


def overrides_model_of(cls: type, name: str) -> type[BaseModel]:
    """A pydantic model whose every field (a setting of `cls`) is optional: None keeps the named set's value."""
    fields = {
        f.name: (
            type(f.default) | None,
            Field(None, description=f"{f.metadata.get('help', '')} (empty: the threshold set's value)"),
        )
        for f in dataclasses.fields(cls)
        if f.name != "basis"
    }
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


ThresholdOverrides = overrides_model_of(AttractorThresholds, "ThresholdOverrides")
EvalSettings = model_of(
    EvalConfig,
    "EvalSettings",
    exclude=("data", "ix_mode", "layers", "repeat_n", "max_source_tokens", "max_new_tokens", "bertscore_model"),
)

_ConversationFields = model_of(
    ConversationConfig, "ConversationFields", exclude=("data", "max_source_tokens", "max_new_tokens")
)


class ConversationSettings(_ConversationFields):  # type: ignore[misc, valid-type]
    """The closed-loop stage: SFT and each branch's ★ and last checkpoint in conversations with the simulator."""

    run: bool = Field(True, description="run the closed-loop conversation stage after the test evaluation")


class SweepGrid(BaseModel):
    """The grid: one branch per combination of the listed values."""

    model_config = ConfigDict(extra="forbid")
    beta: list[float] = Field([1.0], description="β values (weight of focus in R)")
    gamma: list[float] = Field([0.5], description="γ values (weight of the repeat penalty)")
    eta_kl: list[float] = Field([0.05], description="η_kl values (weight of the KL anchor)")
    k: list[int] = Field([4], description="K values (samples per prompt)")
    other: dict[str, list[Any]] = Field(
        {}, description='any other branch setting to sweep, e.g. {"kl_estimator": ["paper", "k3"]}'
    )
    variants: list[dict[str, Any]] = Field(
        [{}],
        description="variants of the shared branch settings, each crossed with the grid (a variant's values win "
        'over the grid\'s), e.g. [{}, {"ix_mode": "salient", "beta": 0.0}]: the grid, plus '
        "the grid with the salient-coverage reward",
    )

    @field_validator("beta", "gamma", "eta_kl", "k")
    @classmethod
    def _non_empty(cls, values: list[Any]) -> list[Any]:
        if not values:
            raise ValueError("give at least one value (the grid would be empty)")
        return values

    @field_validator("other")
    @classmethod
    def _known_settings(cls, other: dict[str, list[Any]]) -> dict[str, list[Any]]:
        known = set(BranchSettings.model_fields) - set(GRID_FIELDS)
        for key, values in other.items():
            if key not in known:
                raise ValueError(f"grid.other: '{key}' is not a branch setting; use one of {sorted(known)}")
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.other.{key}: give a non-empty list of values")
        return other

    @field_validator("variants")
    @classmethod
    def _known_variant_settings(cls, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        known = set(BranchSettings.model_fields)
        if not variants:
            raise ValueError("give at least one variant ([{}] = the grid alone)")
        for i, variant in enumerate(variants):
            for key in variant:
                if key not in known:
                    raise ValueError(f"grid.variants[{i}]: '{key}' is not a branch setting; use one of {sorted(known)}")
        return variants

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values, crossed with every variant, in a stable order."""
        return [point for _, point in self.points_with_variant()]

    def points_with_variant(self) -> list[tuple[int, dict[str, Any]]]:
        """(variant index, grid point) pairs: which variant each point comes from, for error messages."""
        axes = {"beta": self.beta, "gamma": self.gamma, "eta_kl": self.eta_kl, "k": self.k, **self.other}
        points: list[dict[str, Any]] = [{}]
        for key, values in axes.items():
            points = [{**p, key: v} for p in points for v in values]
        return [(i, {**p, **variant}) for i, variant in enumerate(self.variants) for p in points]

    def source_of(self, setting: str, variant: int) -> str:
        """The parameter path a branch setting comes from: the variant, the grid, or the shared settings."""
        if setting in self.variants[variant]:
            return f"sweep.grid.variants[{variant}].{setting}"
        if setting in GRID_FIELDS or setting in self.other:
            return f"sweep.grid.{setting if setting in GRID_FIELDS else 'other.' + setting}"
        return f"sweep.branch.{setting}"


class SweepParams(BaseModel):
    """The sweep: a grid of branches over shared settings, and how branches are executed."""

    model_config = ConfigDict(extra="forbid")
    grid: SweepGrid = Field(default_factory=SweepGrid, description="the values swept")
    branch: BranchSettings = Field(default_factory=BranchSettings, description="settings every branch shares")
    threshold_set: Literal[tuple(THRESHOLD_SETS)] = Field(  # type: ignore[valid-type]
        "sft",
        description="attractor-classifier thresholds: sft (relative to each branch's step-0 SFT probe row) or "
        "paper (the paper's absolute values, which label a templated corpus's SFT model a Dam)",
    )
    thresholds: ThresholdOverrides = Field(
        default_factory=ThresholdOverrides, description="single thresholds overriding the set's values"
    )
    runner: Literal["in_process", "deployment"] = Field(
        "in_process",
        description="in_process: branches run in this flow run; deployment: one flow run of "
        "`branch_deployment` per branch, picked up by any worker of its pool",
    )
    branch_deployment: str = Field(
        "aft-branch/aft-branch", description="FLOW/DEPLOYMENT run per branch (runner=deployment)"
    )
    parallel_branches: int = Field(1, ge=1, description="branches run at once by the in-process runner")

    def resolved_thresholds(self) -> dict[str, Any]:
        """The threshold set with the overrides applied, as the plain dict tasks pass around."""
        overrides = {k: v for k, v in self.thresholds.model_dump().items() if v is not None}
        return dataclasses.asdict(thresholds_from(self.threshold_set, overrides, "sweep.thresholds"))


def branch_configs(sft_model: str, data: str, sweep: SweepParams, max_source_tokens: int) -> list[dict[str, Any]]:
    """Every grid point as a full, validated branch config with its id and Comet tags (duplicates dropped).

    A setting that fails validation is named by the parameter it came from (`sweep.grid.variants[1].k`)."""
    planned, seen = [], set()
    for variant, point in sweep.grid.points_with_variant():
        values = {
            **sweep.branch.model_dump(),
            **point,
            "sft_model": sft_model,
            "data": data,
            "max_source_tokens": max_source_tokens,
        }
        try:
            cfg = AFTConfig(**values).validate("sweep")
        except AftInputError as e:
            path = sweep.grid.source_of(e.field, variant) if e.field in values else f"sweep.{e.field}"
            raise AftInputError("parameters", path, e.problem, e.fix) from e
        branch_id = config_id(cfg)
        if branch_id in seen:
            continue
        seen.add(branch_id)
        planned.append(
            {
                "branch_id": branch_id,
                "grid": point,
                "config": dataclasses.asdict(cfg),
                "tags": [f"{k}={v}" for k, v in point.items()],
            }
        )
    return planned


class PipelineParams(BaseModel):
    """The whole pipeline: data → checks → SFT → sweep → classification → test evaluation → summary."""

    model_config = ConfigDict(extra="forbid")
    run_dir: str = Field("runs/main", description="run folder; every stage writes below it")
    data: str = Field(
        "",
        description="corpus path (MultiWOZ 2.x file or folder, MultiWOZ 2.2 or SGD folder, ConvLab unified data.zip, "
        "chat-messages .jsonl files, a folder of the hub's parquet copies of MultiWOZ 2.2, SGD, DailyDialog or a chat "
        "dataset); "
        "empty = generate the built-in TownInfo corpus in run_dir/data",
    )
    towninfo_dialogues: int = Field(3000, ge=10, description="TownInfo dialogues (when data is empty)")
    towninfo_seed: int = Field(0, description="TownInfo generator seed (when data is empty)")
    checks: CheckSettings = Field(default_factory=CheckSettings, description="data-check thresholds")
    sft: SFTSettings = Field(default_factory=SFTSettings, description="supervised fine-tuning")
    sweep: SweepParams = Field(default_factory=SweepParams, description="the AFT sweep")
    evaluation: EvalSettings = Field(default_factory=EvalSettings, description="final test evaluation")
    conversation: ConversationSettings = Field(
        default_factory=ConversationSettings, description="closed-loop conversations with the user simulator"
    )

    def check_config(self) -> DataCheckConfig:
        """The data checks, with the budgets of the SFT config."""
        return DataCheckConfig(**self.checks.model_dump(), **{k: getattr(self.sft, k) for k in SHARED_BUDGETS})

    def sft_config(self, data: str) -> SFTConfig:
        return SFTConfig(**{**self.sft.model_dump(), "data": data})

    def evaluation_config(self, data: str) -> EvalConfig:
        """The test evaluation, scoring as the branches do (I_x, layers, budgets, encoder)."""
        branch = self.sweep.branch
        return EvalConfig(
            **self.evaluation.model_dump(),
            data=data,
            ix_mode=branch.ix_mode,
            layers=branch.layers,
            repeat_n=branch.repeat_n,
            max_source_tokens=self.sft.max_source_tokens,
            max_new_tokens=branch.max_new_tokens,
            bertscore_model=branch.bertscore_model,
        )


def conversation_config(params: PipelineParams, data: str) -> ConversationConfig:
    """The closed-loop stage's config: the sources' budget of SFT, the generation budget of the branches."""
    settings = {k: v for k, v in params.conversation.model_dump().items() if k != "run"}
    return ConversationConfig(
        **settings,
        data=data,
        max_source_tokens=params.sft.max_source_tokens,
        max_new_tokens=params.sweep.branch.max_new_tokens,
    )


def _as_parameter(prefix: str, error: AftInputError) -> AftInputError:
    """A stage config's error, re-addressed to the pipeline parameter it came from (`sft.model`)."""
    return AftInputError("parameters", f"{prefix}.{error.field}", error.problem, error.fix)


def check_run_dir(run_dir: str) -> None:
    """The run folder is, or can be created as, a writable folder. Writes nothing (a probe folder is removed)."""
    path = Path(run_dir).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise AftInputError("parameters", "run_dir", f"{path} is a file, not a folder", "choose a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise AftInputError(
            "parameters",
            "run_dir",
            f"{existing} (on the way to {path}) is a file",
            "choose a run folder whose parents are folders",
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".aft-write-probe-", dir=existing))
    except OSError as e:
        raise AftInputError(
            "parameters",
            "run_dir",
            f"cannot create folders in {existing} ({e.strerror})",
            "choose a run folder in a writable place, e.g. runs/NAME",
        ) from e


def check_parameters(params: PipelineParams) -> None:
    """Validate every stage's settings, the corpus, the venue databases, the models and the run folder before
    any work, so a bad parameter costs seconds rather than an SFT run. Raises AftInputError naming the
    parameter path, the problem and the fix; writes nothing."""
    from aft_core.data.corpus import load_corpus
    from aft_core.data.venues import VenueDB

    check_run_dir(params.run_dir)
    has_venue_db = True  # the built-in TownInfo corpus has one (and slot annotations, and multi-turn histories)
    corpus = None
    if params.data:
        try:
            corpus = load_corpus(params.data)
        except AftInputError as e:
            raise AftInputError(
                "parameters",
                "data",
                f"{e.where} ({e.field}): {e.problem}",
                f"{e.fix}; the corpus is set by --set data=PATH (a MultiWOZ file or folder, "
                "a MultiWOZ 2.2 or SGD folder, a ConvLab unified data.zip, chat-messages .jsonl files, or a folder "
                "of the hub's parquet copies)",
            ) from e
        splits = set(corpus.examples)
        hold_out = len(splits) == 1  # divided by dialogue (corpus.hold_out_splits)
        missing = {"train", "validation", params.evaluation.split} - splits
        if missing and not hold_out:
            raise AftInputError(
                "parameters",
                "data",
                f"{params.data} has splits {sorted(splits)}, no {sorted(missing)}",
                "give a corpus with train, validation and test splits, or one with a single split (it is then "
                "divided by dialogue)",
            )
        if corpus.db_dir:
            try:
                VenueDB.load(corpus.db_dir)
            except AftInputError as e:
                raise AftInputError(
                    "parameters", "data", f"venue databases: {e}", "fix or remove the db/ folder beside the corpus"
                ) from e
        has_venue_db = corpus.db_dir is not None
    data = params.data or "<built-in TownInfo>"
    stages = (
        ("checks", params.check_config),
        ("sft", lambda: params.sft_config(data)),
        # The SFT model does not exist yet: a preset name stands in for it (its folder is checked when SFT ends).
        ("sweep.branch", lambda: AFTConfig(**{**params.sweep.branch.model_dump(), "sft_model": "tiny", "data": data})),
        ("evaluation", lambda: params.evaluation_config(data)),
        ("conversation", lambda: conversation_config(params, data)),
    )
    for prefix, make in stages:
        try:
            make().validate(prefix)
        except AftInputError as e:
            raise _as_parameter(prefix, e) from e
    configs = branch_configs("tiny", data, params.sweep, params.sft.max_source_tokens)
    if corpus is not None:
        check_ix_modes(params, corpus)
    conversational = [p["config"] for p in configs if p["config"]["rollout"] == "self_play"]
    conversational += [p["config"] for p in configs if p["config"]["probe_conversations"] > 0]
    if params.data and conversational:
        from aft_core.data.corpus import hold_out_splits
        from aft_core.dialogue.closed_loop import reader_gate

        # The built-in TownInfo always has goals a reader can follow. A single split is gated as the run will hold it
        # out (links and lists in a temporary folder: no copy), so its goals are the hold-out's test dialogues'.
        with tempfile.TemporaryDirectory() as held:
            if hold_out:
                hold_out_splits(params.data, held)
            reason, _ = reader_gate(held if hold_out else params.data, "test")
        if reason is not None:
            field = "rollout" if conversational[0]["rollout"] == "self_play" else "probe_conversations"
            raise AftInputError(
                "parameters",
                f"sweep.branch.{field}",
                f"self_play and probe conversations need a simulated user, but {reason}",
                "use rollout corpus and probe_conversations 0 on this corpus",
            )
    try:
        thresholds = params.sweep.resolved_thresholds()
    except AftInputError as e:
        raise _as_parameter("sweep.thresholds", e) from e
    if thresholds["primary_min_delta_entity_accuracy"] > -1.0 and not has_venue_db:
        raise AftInputError(
            "parameters",
            "sweep.thresholds.primary_min_delta_entity_accuracy",
            "the ★ entity-accuracy rule needs venue databases, and the corpus has no db/ folder",
            "leave the threshold empty (no rule) or use a corpus with db/<domain>_db.json",
        )
    bertscore = params.sweep.branch.bertscore_model
    if bertscore.startswith(("/", "./", "../", "~")) and not Path(bertscore).expanduser().is_dir():
        raise AftInputError(
            "parameters",
            "sweep.branch.bertscore_model",
            f"folder {bertscore} does not exist",
            "leave it empty for the offline MiniLM encoder, or name an existing encoder folder",
        )


def check_ix_modes(params: PipelineParams, corpus: Corpus) -> None:
    """Refuse an I_x (a branch's, or sweep.branch's, which the evaluation's Focus column reads) that is empty on
    every example of the corpus: `salient` without slot annotations, `history` on single exchanges (Corpus.empty_ix)."""
    grid, shared = params.sweep.grid, params.sweep.branch.ix_mode
    uses = [("sweep.branch.ix_mode", shared)]
    uses += [(grid.source_of("ix_mode", v), p.get("ix_mode", shared)) for v, p in grid.points_with_variant()]
    for path, ix_mode in dict.fromkeys(uses):
        if (empty := corpus.empty_ix(ix_mode)) is not None:
            raise AftInputError("parameters", path, f"{params.data}: {empty[0]}", empty[1])


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = (
            deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


# The two branches of the CPU presets, at the calibrated lr 1e-5: the paper's E3-20 (300 steps) and 200 steps of the
# salient-coverage reward (α=1, β=0, I_x=salient). Presets are never mutated (`preset` deep-copies), so they share it.
E3_20 = {"beta": [1.0], "gamma": [0.5], "eta_kl": [0.05], "k": [4]}  # the paper's winning setting, as a grid point
E3_20_AND_SALIENT_COVERAGE: dict[str, Any] = {
    "grid": {
        **E3_20,
        "variants": [{}, {"ix_mode": "salient", "alpha": 1.0, "beta": 0.0, "steps": 200}],
    },
    "branch": {"steps": 300, "checkpoint_every": 50, "probe_size": 200},
}

# Named parameter sets (overrides of the defaults). prefect.yaml's deployments carry the same values.
PRESETS: dict[str, dict[str, Any]] = {
    # The README main job (≤ 15 min on 2 CPU cores): the built-in corpus, the small model and two branches at the
    # calibrated lr 1e-5: the paper's E3-20 (a healthy window with a ★, then the Dam) and 200 steps of the
    # salient-coverage reward (α=1, β=0, I_x=salient; the frontier's best setting for entity accuracy);
    # 1,000 test examples.
    "towninfo-small": {
        "run_dir": "runs/main",
        "sft": {"model": "small", "max_steps": 2000},
        "sweep": {**E3_20_AND_SALIENT_COVERAGE, "parallel_branches": 2},  # each branch in a process, a core each
        "evaluation": {"test_examples": 1000},
        # Sized to the main job's budget: 50 goals, full and sharded users, greedy only; the user gives up after 12
        # turns (the oracle succeeds in 5 to 6). `aft converse` runs the defaults: 100 goals, 20 turns, 5 samples.
        "conversation": {"goals": 50, "max_exchanges": 12, "samples": 0},
    },
    # AFT on the policy's own conversations (AFT_SPEC §9, ≤ 15 min on 2 CPU cores): the main job's corpus and
    # closed-loop stage, with E3-20's branch taking its prompts from live conversations with the user simulator on
    # training goals (rollout self_play), once with the per-turn HACA alone and once with the trajectory term added;
    # every checkpoint also probes 20 conversations (the conversation-level Dam and Whirlpool).
    "towninfo-selfplay": {
        "run_dir": "runs/selfplay",
        # SFT 1,600 steps, not the main job's 2,000, and 500 test examples: a self-play branch costs about twice a
        # corpus one, and the job must hold its 15 minutes on the slowest CPU of this kind (16 min 11 s and 16 min
        # 26 s there with 2,000 steps and 1,000 examples). experiments/multiturn.py trains the frontier's SFT instead.
        "sft": {"model": "small", "max_steps": 1600},
        "sweep": {
            "grid": {
                **E3_20,
                "variants": [{}, {"reward_trajectory": 1.0}],
            },
            "branch": {
                "steps": 300,
                "checkpoint_every": 50,
                "probe_size": 200,
                "rollout": "self_play",
                "probe_conversations": 20,  # the monitor also reads conversations: the Dam and Whirlpool there
            },
            "parallel_branches": 2,
        },
        "evaluation": {"test_examples": 500},
        "conversation": {"goals": 50, "max_exchanges": 12, "samples": 0},
    },
    # MultiWOZ 2.1 (the paper's corpus) on this machine: the shared validation split is divided by dialogue into
    # train/validation/test (799/100/100 dialogues); a user with all of MultiWOZ sets `data` to its folder and it is
    # used as given. Venue databases from db/ feed entity accuracy. Branches as in towninfo-small; the whole test split.
    "multiwoz21": {
        "run_dir": "runs/multiwoz21",
        "data": "../shared/data/multiwoz21/val.json.zip",
        "sft": {"model": "small", "max_steps": 2000},
        "sweep": E3_20_AND_SALIENT_COVERAGE,
        "evaluation": {"test_examples": 0},
    },
    # DailyDialog (the paper's proposed next experiment): open-domain chit-chat, I_x = history so HACA's coverage
    # term rewards attending to the earlier turns; no venue database, so no entity accuracy. E3-20 with I_x = history,
    # and 200 steps of the coverage term alone (β=0).
    "dailydialog": {
        "run_dir": "runs/dailydialog",
        "data": "../shared/data/dailydialog/data.zip",
        "sft": {"model": "small", "max_steps": 2000},
        "sweep": {
            "grid": {
                **E3_20,
                "variants": [{}, {"alpha": 1.0, "beta": 0.0, "steps": 200}],
            },
            "branch": {"ix_mode": "history", "steps": 300, "checkpoint_every": 50, "probe_size": 200},
        },
        "evaluation": {"test_examples": 1000},
    },
    # The decoder-only counterpart of the main job (AFT_SPEC §8; ≤ 15 min on 2 CPU cores): causal-small (Llama-shaped,
    # about small's size) on the same corpus, the same two branches; A is the self-attention of the rows that predict
    # each response token, renormalised over the history (template tokens and the sink excluded). A decoder-only step
    # runs over prompt and response together, about twice a T5 step's time, so SFT takes 900 steps of 16 examples
    # (entity accuracy 0.18 on bench/sft_default.py's venue turns; 0.135 for 500 steps of 32 in about the same time;
    # 0.30 for 1,000 of 32, which the decoder-only experiments pin: experiments/frontier.py's PINNED), 500 test
    # examples and 30 conversation goals: 13 min 17 s on the slowest kind, 22 min 27 s there with 1,000 steps of 32,
    # 1,000 examples and 50 goals of 20 turns (docs/benchmarks.md). The AFT rate 1e-5 is calibrated for it too
    # (README, Calibration: 1e-4 falls into the Dam by step 100, 3e-6 gains less focus).
    "towninfo-causal": {
        "run_dir": "runs/causal",
        "sft": {"model": "causal-small", "max_steps": 900, "batch_size": 16},
        "sweep": {**E3_20_AND_SALIENT_COVERAGE, "parallel_branches": 2},  # as in the main job: a core each
        "evaluation": {"test_examples": 500},
        "conversation": {"goals": 30, "max_exchanges": 12, "samples": 0},  # greedy; the main job's 12 turns
    },
    # The paper's grid around E3-20 (β=1, γ=0.5, η_kl=0.05, K=4), 500 steps per branch: a GPU-sized job.
    "paper-e3-20": {
        "run_dir": "runs/paper-e3-20",
        "sft": {"model": "small"},
        "sweep": {
            "grid": {"beta": [0.5, 1.0, 2.0], "gamma": [0.25, 0.5, 1.0], "eta_kl": [0.05, 0.10], "k": [4, 8]},
            "branch": {"steps": 500, "checkpoint_every": 50, "probe_size": 200, "max_new_tokens": 128},
        },
    },
    # The paper's real run (a GPU job): T5-Large from the hub, SFT on the full MultiWOZ 2.1 (data.json with its
    # valListFile/testListFile and db/, downloaded by the user to data/multiwoz21), the 36-branch grid around
    # E3-20 at 500 steps, one flow run per branch on the work pool, and Table 1 on the whole test split (7,372
    # turns). The AFT learning rate is small's calibrated value: not yet calibrated for T5-Large. Check it offline
    # first: aft-pipeline --preset paper --check (the parameters and a projected cost; nothing is downloaded).
    "paper": {
        "run_dir": "runs/paper",
        "data": "data/multiwoz21",
        "sft": {
            "model": "hf:google-t5/t5-large",
            "learning_rate": 1e-4,
            "max_steps": 10000,
            "warmup_steps": 500,
            "eval_every": 1000,
            "max_source_tokens": 512,
            "max_target_tokens": 128,
        },
        "sweep": {
            "grid": {"beta": [0.5, 1.0, 2.0], "gamma": [0.25, 0.5, 1.0], "eta_kl": [0.05, 0.10], "k": [4, 8]},
            "branch": {"steps": 500, "checkpoint_every": 50, "probe_size": 200, "max_new_tokens": 128},
            "runner": "deployment",
        },
        "evaluation": {"test_examples": 0},
    },
    # Seconds per stage: for tests and smoke runs.
    "tiny": {
        "run_dir": "runs/tiny",
        "towninfo_dialogues": 60,
        "checks": {"source_fits_mostly": 0.0},
        "sft": {
            "model": "tiny",
            "max_steps": 40,
            "batch_size": 16,
            "warmup_steps": 5,
            "eval_every": 20,
            "dev_examples": 40,
            "max_source_tokens": 96,
            "max_target_tokens": 32,
        },
        "sweep": {
            "grid": {"beta": [1.0], "gamma": [0.5], "eta_kl": [0.05, 0.10], "k": [2]},
            "branch": {"steps": 4, "checkpoint_every": 2, "probe_size": 8, "batch_size": 2, "max_new_tokens": 8},
        },
        "evaluation": {"test_examples": 12},
        "conversation": {"goals": 4, "max_exchanges": 12, "samples": 0},
    },
}


# Hub names whose shape a preset reproduces, so a cost is projected without downloading the config.
HUB_SHAPES = {"google-t5/t5-large": "large", "t5-large": "large"}
ASSUMED_GPU_FLOPS = 989e12 * 0.3  # an H100/H200's dense bf16 peak at 30% utilisation


def projected_cost(params: PipelineParams) -> dict[str, Any]:
    """What the run will compute, counted from its parameters: tokens through the model in SFT, the sweep's
    sampling and teacher-forced passes, and evaluation, and their FLOPs (6·P per trained token, 2·P per token
    scored or sampled) for a model whose size is known offline. A lower bound on GPU time: sampling is bound by
    latency, not arithmetic."""
    import torch

    from aft_core.config import PRESETS as MODEL_PRESETS

    name = params.sft.model
    shape = name if name in MODEL_PRESETS else HUB_SHAPES.get(name.removeprefix("hf:"))
    parameters = None
    if shape is not None:
        with torch.device("meta"):
            from transformers import T5Config

            p = MODEL_PRESETS[shape]
            if p.family == "seq2seq":
                from transformers import T5ForConditionalGeneration

                config = T5Config(
                    vocab_size=p.vocab_size,
                    d_model=p.d_model,
                    d_ff=p.d_ff,
                    d_kv=p.d_kv,
                    num_layers=p.num_layers,
                    num_decoder_layers=p.num_layers,
                    num_heads=p.num_heads,
                )
                parameters = sum(x.numel() for x in T5ForConditionalGeneration(config).parameters())
    sft, sweep = params.sft, params.sweep
    branches = branch_configs("tiny", params.data or "<built-in TownInfo>", sweep, sft.max_source_tokens)
    sft_tokens = sft.max_steps * sft.batch_size * (sft.max_source_tokens + sft.max_target_tokens)
    sampled = scored = 0
    for b in branches:
        cfg = b["config"]
        per_step = cfg["batch_size"] * cfg["k"] * cfg["max_new_tokens"]
        sampled += cfg["steps"] * per_step
        scored += cfg["steps"] * (2 * per_step + cfg["batch_size"] * cfg["max_source_tokens"])  # policy and π_ref
        probes = cfg["steps"] // cfg["checkpoint_every"] + 1
        sampled += probes * cfg["probe_size"] * cfg["max_new_tokens"]
    cost: dict[str, Any] = {
        "model": name,
        "parameters": parameters,
        "branches": len(branches),
        "aft_steps": sum(b["config"]["steps"] for b in branches),
        "sft_tokens": sft_tokens,
        "aft_sampled_tokens": sampled,
        "aft_scored_tokens": scored,
    }
    if parameters:
        flops = 6 * parameters * (sft_tokens + scored // 2) + 2 * parameters * (sampled + scored // 2)
        cost.update(
            flops=float(flops),
            gpu_hours_lower_bound=round(flops / ASSUMED_GPU_FLOPS / 3600, 1),
            assumption="989 TFLOP/s bf16 at 30% utilisation; sampling latency not counted",
        )
    return cost


def preset(name: str, overrides: dict[str, Any] | None = None) -> PipelineParams:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; use one of {sorted(PRESETS)}")
    return PipelineParams.model_validate(deep_merge(PRESETS[name], overrides or {}))


def parse_override(text: str) -> dict[str, Any]:
    """`a.b.c=VALUE` (VALUE as JSON, else a string) → {"a": {"b": {"c": VALUE}}}."""
    if "=" not in text:
        raise ValueError(f"--set expects KEY=VALUE (e.g. sweep.grid.beta=[0.5,1]), got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value
