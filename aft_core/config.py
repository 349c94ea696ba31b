"""Configuration dataclasses shared by the library, with help on every field and validation.

Every setting is declared with `setting(default, help)`; `validate()` raises `AftInputError`
naming the field and what to do instead. `config_id()` hashes the full config: it names run
folders, sweep branches, Prefect cache keys and Comet experiments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from aft_core.errors import AftInputError


class ValidatedConfig(Protocol):
    """What `from_dict` builds: a dataclass with a `validate` method."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def validate(self) -> None: ...


T = TypeVar("T", bound=ValidatedConfig)
ROLLOUTS = ("corpus", "self_play")  # where an AFT branch's prompts come from
IX_MODES = ("all", "history", "salient")  # the source position sets I_x (AFT_SPEC §4)
REVEAL_MODES = ("full", "sharded", "agenda")  # how the simulated user reveals its constraints
CANDIDATES_EVERY = 50  # steps between the K candidates a branch writes to candidates/ (and the tracker)


def setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def config_id(cfg: Any, length: int = 12) -> str:
    """Stable short hash of a config's full content."""
    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def with_defaults(cls: type, stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config of `cls` as the current code reads it.

    A setting added since it was written takes its default (by this project's rule, the behaviour the stored run
    had); defaults derived from other settings are resolved as `cls` resolves them (SFT's learning rate). Keys
    that `cls` no longer has are kept, so they still count in a comparison.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    built = dataclasses.asdict(cls(**{k: v for k, v in stored.items() if k in known}))
    return {**built, **{k: v for k, v in stored.items() if k not in known}}


def same_settings(cls: type, a: Mapping[str, Any], b: Mapping[str, Any], ignore: Iterable[str] = ()) -> bool:
    """Whether two stored configs of `cls` describe the same settings, with defaults filled on both sides and the
    `ignore`d keys left out. Everything that compares stored configs goes through here (the summary's frontier
    match, the frontier's basis), so a field added with a default never makes old and new configs differ."""
    skip = set(ignore)

    def kept(config: Mapping[str, Any]) -> dict[str, Any]:
        return {
            k: v for k, v in json.loads(json.dumps(with_defaults(cls, config), default=str)).items() if k not in skip
        }

    return kept(a) == kept(b)


def settings_of(cls: type) -> list[dataclasses.Field[Any]]:
    """A config's fields in the order a form or --help shows them: its own, then the memory settings it shares."""
    shared = {f.name for f in dataclasses.fields(MemorySettings)} if issubclass(cls, MemorySettings) else set()
    fields = dataclasses.fields(cls)
    return [f for f in fields if f.name not in shared] + [f for f in fields if f.name in shared]


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build a config from a dict, refusing unknown keys (with the valid ones listed)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AftInputError(
            where, unknown[0], f"unknown setting for {cls.__name__}", f"remove it; valid settings are {sorted(known)}"
        )
    cfg = cls(**data)
    cfg.validate()
    return cfg


def _check(cond: bool, field_name: str, problem: str, fix: str, where: str = "config") -> None:
    if not cond:
        raise AftInputError(where, field_name, problem, fix)


def check_positive(cfg: Any, names: tuple[str, ...], where: str) -> None:
    """Every named setting of `cfg` is an integer >= 1."""
    for name in names:
        value = getattr(cfg, name)
        _check(value >= 1, name, f"must be >= 1, got {value}", "use a positive integer", where)


def check_shares(cfg: Any, names: tuple[str, ...], where: str, fix: str = "use a share in [0, 1]") -> None:
    """Every named setting of `cfg` is a share in [0, 1]."""
    for name in names:
        value = getattr(cfg, name)
        _check(0.0 <= value <= 1.0, name, f"must be a share in [0, 1], got {value}", fix, where)


@dataclass(frozen=True)
class ModelPreset:
    d_model: int
    d_ff: int
    num_layers: int  # T5: encoder layers (the decoder has as many); causal: decoder layers
    num_heads: int
    d_kv: int
    vocab_size: int  # size of the tokenizer trained on the corpus
    dropout: float  # 0 on the CPU presets: dropout's RNG was ~40% of a step, and epochs beat regularisation here
    help: str
    family: str = "seq2seq"  # seq2seq (T5) or causal (Llama-shaped)
    max_positions: int = 1024  # causal: rotary positions the prompt and the response must fit in


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(64, 128, 1, 2, 32, 800, 0.0, "0.2M params; seconds to train; for tests"),
    "small": ModelPreset(128, 512, 2, 4, 32, 2000, 0.0, "1.2M params; the default CPU run (ENV_NOTES calibration)"),
    "large": ModelPreset(
        1024, 4096, 24, 16, 64, 32128, 0.1, "T5-Large shape (~740M params); for GPU timing, not CPU training"
    ),
    "causal-tiny": ModelPreset(64, 128, 2, 2, 32, 800, 0.0, "0.2M params, Llama-shaped; for tests", family="causal"),
    "causal-small": ModelPreset(
        128, 512, 4, 4, 32, 2000, 0.0, "1.3M params, Llama-shaped: about `small`'s size", family="causal"
    ),
    "causal-large": ModelPreset(
        1536,
        4096,
        24,
        16,
        96,
        32128,
        0.0,
        "Llama-shaped, about T5-Large's size (~0.73B params); for GPU timing and memory plans, not CPU training",
        family="causal",
        max_positions=2048,
    ),
}


def _check_model_name(model: str, where: str) -> None:
    if model in PRESETS or model.startswith("hf:"):
        return
    path = Path(model)
    if "/" not in model and "\\" not in model and not path.exists():
        raise AftInputError(
            where,
            "model",
            f"unknown model size '{model}'",
            f"use one of {list(PRESETS)}, a saved model directory, or hf:<org>/<name>",
        )
    if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise AftInputError(
            model,
            "model",
            "does not exist or holds no saved model (no config.json)",
            "point at a folder written by `aft sft` or save_pretrained",
        )


ADAPTERS = ("none", "lora")
REFERENCE_DTYPES = ("float32", "bfloat16")


@dataclass
class MemorySettings:
    """How the trained weights are held (SFT and AFT alike): all of them, or a LoRA adapter over frozen ones."""

    adapter: str = setting(
        "none",
        "none: train every weight; lora: train a LoRA adapter (PEFT) over frozen weights; "
        "an AFT branch's π_ref is then the policy with its adapter disabled (no second model)",
    )
    lora_rank: int = setting(8, "LoRA rank r")
    lora_alpha: float = setting(16.0, "LoRA α (the update is scaled by α/r)")
    lora_dropout: float = setting(0.0, "dropout on the adapter's input (0 keeps AFT's scoring deterministic)")
    lora_targets: str = setting(
        "all-linear",
        "modules that get an adapter: all-linear (every attention and MLP "
        "projection of the architecture, not the output layer) or names "
        "like 'q,v' or 'q_proj,v_proj'",
    )
    gradient_checkpointing: bool = setting(
        False,
        "recompute each transformer block's activations in the backward pass "
        "instead of keeping them (less memory, about a third more compute)",
    )

    def validate_memory(self, where: str) -> None:
        _check(self.adapter in ADAPTERS, "adapter", f"unknown '{self.adapter}'", "use none or lora", where)
        _check(self.lora_rank >= 1, "lora_rank", f"must be >= 1, got {self.lora_rank}", "use e.g. 8", where)
        _check(self.lora_alpha > 0, "lora_alpha", f"must be > 0, got {self.lora_alpha}", "use e.g. 16", where)
        _check(
            0 <= self.lora_dropout < 1,
            "lora_dropout",
            f"must be in [0, 1), got {self.lora_dropout}",
            "use 0 or 0.05",
            where,
        )
        _check(
            bool(self.lora_targets.strip()),
            "lora_targets",
            "is empty",
            "use all-linear or module names like q,v",
            where,
        )


PRESET_SFT_LEARNING_RATE = 1e-3  # random init on the corpus tokenizer (ENV_NOTES calibration)
PRETRAINED_SFT_LEARNING_RATE = 1e-4


def default_sft_learning_rate(model: str) -> float:
    """SFT's peak rate when none is given: a model built from config learns from scratch, a pretrained one is
    fine-tuned at the rate usual for it."""
    return PRESET_SFT_LEARNING_RATE if model in PRESETS else PRETRAINED_SFT_LEARNING_RATE


@dataclass
class SFTConfig(MemorySettings):
    """Supervised fine-tuning on (history -> system turn) examples."""

    data: str = setting(
        "",
        "corpus path: MultiWOZ 2.x file/folder, MultiWOZ 2.2 or SGD folder, unified data.zip, chat-messages "
        ".jsonl files, the hub's parquet copies (MultiWOZ 2.2, SGD, DailyDialog, chat datasets), or a TownInfo folder",
    )
    model: str = setting("small", "a preset (tiny, small, large), a saved model folder, or hf:<org>/<name>")
    max_source_tokens: int = setting(192, "source budget; longer histories lose their oldest turns first")
    max_target_tokens: int = setting(48, "target budget, EOS included; longer targets are cut on the right")
    batch_size: int = setting(32, "examples per optimisation step (bucketed by source length)")
    learning_rate: float = setting(
        0.0,
        "peak AdamW learning rate; 0 = the default for the model: 1e-3 for a preset "
        "built from config (random init), 1e-4 for a pretrained model (folder or hf:), "
        "the usual rate for fine-tuning T5 with AdamW and for LoRA adapters",
    )
    weight_decay: float = setting(0.01, "AdamW weight decay")
    warmup_steps: int = setting(200, "linear warm-up steps before cosine decay")
    max_steps: int = setting(
        2500, "optimisation steps (the cosine schedule ends here); 2,500 fits 600 s for `small` on 2 cores"
    )
    grad_clip: float = setting(1.0, "gradient-norm clipping threshold")
    eval_every: int = setting(250, "steps between dev-loss evaluations (and checkpoints)")
    dev_examples: int = setting(500, "dev examples used for dev loss (the first N of the dev split)")
    patience: int = setting(4, "evaluations without dev-loss improvement before early stopping; 0 disables")
    keep_checkpoints: int = setting(2, "most recent checkpoints kept on disk")
    seed: int = setting(0, "seed for initialisation, data order and dropout")

    def __post_init__(self) -> None:
        # Resolved at once, so a config's hash, its run folder and its saved config hold the rate actually used.
        if self.learning_rate == 0.0:
            self.learning_rate = default_sft_learning_rate(self.model)

    def validate(self, where: str = "config") -> SFTConfig:
        _check(bool(self.data), "data", "no corpus given", "pass --data PATH", where)
        _check_model_name(self.model, where)
        for name in ("max_source_tokens", "max_target_tokens"):
            _check(getattr(self, name) >= 4, name, f"{getattr(self, name)} is too small", "use at least 4", where)
        check_positive(self, ("batch_size", "max_steps", "eval_every", "dev_examples", "keep_checkpoints"), where)
        _check(
            self.learning_rate > 0,
            "learning_rate",
            f"must be > 0, got {self.learning_rate}",
            "use e.g. 1e-4, or 0 for the model's default",
            where,
        )
        _check(
            self.warmup_steps >= 0 and self.patience >= 0,
            "warmup_steps/patience",
            "must be >= 0",
            "use 0 or more",
            where,
        )
        _check(self.grad_clip > 0, "grad_clip", f"must be > 0, got {self.grad_clip}", "use e.g. 1.0", where)
        self.validate_memory(where)
        return self


@dataclass
class AFTConfig(MemorySettings):
    """One AFT branch: post-training from an SFT model with the HACA reward (AFT_SPEC §4-6)."""

    sft_model: str = setting("", "the SFT model folder (also the frozen reference π_ref)")
    data: str = setting("", "corpus path (the same corpus as the SFT run)")
    alpha: float = setting(1.0, "α, weight of coverage in R")
    beta: float = setting(1.0, "β, weight of focus in R")
    gamma: float = setting(0.5, "γ, weight of the repeat penalty in R (subtracted)")
    eta: float = setting(1.0, "η, softmax temperature over normalised rewards")
    eta_kl: float = setting(0.05, "η_kl, weight of the KL-anchoring term")
    k: int = setting(4, "K, sampled responses per prompt")
    kl_estimator: str = setting("paper", "KL term: paper (as written), k3, or full (exact over the vocabulary)")
    kl_target: float = setting(
        0.0, "adaptive KL: per-token KL(π_θ‖π_ref) the controller steers η_kl toward (RL4LMs/OpenRLHF); 0 = fixed η_kl"
    )
    kl_horizon: int = setting(
        1000, "adaptive KL: sequences (B·K per step) over which η_kl moves by the full clipped error"
    )
    ix_mode: str = setting("all", "I_x: all (paper), history (earlier turns), salient (slot values)")
    layers: str = setting(
        "all",
        "decoder layers averaged into A: all, last, or indices like '0,1' (counting attention layers: "
        "a hybrid's recurrent layers have no A)",
    )
    reward_attention: str = setting(
        "renormalised",
        "decoder-only A in the reward (AFT_SPEC §8): renormalised over the "
        "prompt positions that count, or raw (as read; a policy can then "
        "lower its entropy by moving attention to the sink or its own "
        "response); the same for cross-attention. Probes and Table 1 "
        "always measure the renormalised A",
    )
    repeat_n: int = setting(3, "n of the repeat penalty's n-grams")
    logprob_reduction: str = setting("sum", "log π(y|x) over tokens: sum (paper) or mean")
    learning_rate: float = setting(
        1e-5,
        "AdamW learning rate (constant); 1e-5 is calibrated for the `small` "
        "preset (1e-4 falls into the Dam within 20 steps; README, Calibration)",
    )
    batch_size: int = setting(8, "prompts per step")
    steps: int = setting(300, "AFT steps")
    checkpoint_every: int = setting(50, "steps between checkpoints (each one is probed)")
    probe_size: int = setting(200, "fixed held-out probe examples (the first N of the dev split)")
    max_new_tokens: int = setting(48, "sampling and probe generation budget (paper: 128)")
    temperature: float = setting(1.0, "sampling temperature (ancestral sampling, no top-k/top-p)")
    max_source_tokens: int = setting(192, "source budget, as in SFT")
    grad_clip: float = setting(1.0, "gradient-norm clipping threshold")
    bertscore_model: str = setting("", "BERTScore encoder: empty = offline all-MiniLM-L6-v2, or a folder/hub name")
    keep_checkpoints: int = setting(2, "most recent resumable checkpoints kept on disk")
    max_nonfinite_steps: int = setting(10, "non-finite losses/gradients in a row that end the branch as diverged")
    early_stop_checkpoints: int = setting(
        2,
        "stop the branch once this many checkpoints in a row sit in a terminal "
        "attractor (Dam, Whirlpool, Underground River, Flash Flood); 0 = never",
    )
    seed: int = setting(0, "seed for sampling and prompt order")
    rollout: str = setting(
        "corpus",
        "where prompts come from: corpus (gold histories, the paper's) or self_play (histories the policy made "
        "talking to the user simulator on training-split goals; the conversation goes on with each prompt's "
        "highest-weighted candidate, and the buffer starts afresh every self_play_refresh_every steps)",
    )
    self_play_conversations: int = setting(
        32, "self_play: live conversations in the buffer (each step takes the next batch_size of them in turn)"
    )
    self_play_refresh_every: int = setting(
        50, "self_play: steps between fresh buffers (new conversations, goals drawn from the seed and the step)"
    )
    self_play_reveal: str = setting("agenda", "self_play: how the simulated user reveals its constraints")
    self_play_max_exchanges: int = setting(
        20, "self_play and probe conversations: exchanges after which the simulated user gives up"
    )
    probe_conversations: int = setting(
        0,
        "closed-loop probe: the first N validation-split goals talked through at every checkpoint (greedy, sharded "
        "user): success, repeated replies, timeouts and focus by turn, and the conversation-level Dam and "
        "Whirlpool; 0 = off",
    )
    reward_turn_haca: float = setting(1.0, "weight of the per-turn HACA reward R(h, y) (AFT_SPEC §4; today's AFT)")
    reward_trajectory: float = setting(
        0.0,
        "weight of the trajectory term (AFT_SPEC §9): mean focus over the conversation's last trajectory_window "
        "system turns, the candidate the newest; needs rollout self_play",
    )
    trajectory_window: int = setting(3, "w of the trajectory term: system turns averaged, the candidate included")
    reward_task: float = setting(
        0.0,
        "weight of the task term (AFT_SPEC §9, multiturn-aware as CollabLLM's): each candidate's conversation rolled "
        "forward greedily by the current policy for up to task_horizon system turns, scored "
        "task_discount^(turns after the candidate) if it ends in success, else 0; needs rollout self_play",
    )
    task_horizon: int = setting(4, "task term: system turns rolled forward, the candidate included")
    task_discount: float = setting(0.9, "task term: λ, the discount per system turn between the candidate and the end")
    reference_device: str = setting(
        "",
        "where a separate π_ref lives (adapter=none): empty = beside the policy, or cpu "
        "(frees its weights from the GPU; its pass then runs on the CPU)",
    )
    reference_dtype: str = setting(
        "float32", "a separate π_ref's weights (adapter=none): float32, or bfloat16 (half the memory; for a GPU)"
    )

    def validate(self, where: str = "config") -> AFTConfig:
        _check(
            bool(self.sft_model), "sft_model", "no SFT model given", "pass --sft-model DIR (an SFT run's model/)", where
        )
        _check_model_name(self.sft_model, where)
        _check(bool(self.data), "data", "no corpus given", "pass --data PATH", where)
        _check(self.k >= 2, "k", f"K must be >= 2 to compare candidates, got {self.k}", "use K >= 2 (paper: 4)", where)
        _check(self.eta > 0, "eta", f"η must be > 0, got {self.eta}", "use e.g. 1.0", where)
        _check(self.gamma >= 0, "gamma", f"γ must be >= 0, got {self.gamma}", "use e.g. 0.5", where)
        _check(self.eta_kl >= 0, "eta_kl", f"η_kl must be >= 0, got {self.eta_kl}", "use e.g. 0.05", where)
        _check(
            self.kl_target >= 0,
            "kl_target",
            f"must be >= 0, got {self.kl_target}",
            "use 0 for a fixed η_kl, or a per-token KL such as 0.05",
            where,
        )
        _check(
            not (self.kl_target > 0 and self.eta_kl == 0),
            "eta_kl",
            "the adaptive KL controller scales η_kl, which is 0",
            "start η_kl above 0 (e.g. 0.05) or set kl_target to 0",
            where,
        )
        _check(
            self.early_stop_checkpoints >= 0,
            "early_stop_checkpoints",
            f"must be >= 0, got {self.early_stop_checkpoints}",
            "use 0 (never stop early) or a number of checkpoints such as 2",
            where,
        )
        _check(
            self.max_new_tokens > 0, "max_new_tokens", f"must be > 0, got {self.max_new_tokens}", "use e.g. 48", where
        )
        _check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}", "use 1.0", where)
        _check(self.rollout in ROLLOUTS, "rollout", f"unknown '{self.rollout}'", "use corpus or self_play", where)
        _check(
            self.rollout != "self_play" or self.self_play_conversations >= self.batch_size,
            "self_play_conversations",
            f"{self.self_play_conversations} live conversations cannot fill a batch of {self.batch_size}",
            f"use at least batch_size ({self.batch_size})",
            where,
        )
        terms = {"reward_turn_haca": self.reward_turn_haca, "reward_trajectory": self.reward_trajectory}
        terms["reward_task"] = self.reward_task
        for name, weight in terms.items():
            _check(weight >= 0, name, f"must be >= 0, got {weight}", "use 0 to leave the term out", where)
        _check(
            sum(terms.values()) > 0,
            "reward_turn_haca",
            "every reward term has weight 0",
            "give reward_turn_haca (today's AFT), reward_trajectory or reward_task a weight above 0",
            where,
        )
        _check(
            self.reward_trajectory == 0 or self.rollout == "self_play",
            "reward_trajectory",
            "the trajectory term needs the policy's own earlier turns, and corpus prompts have gold ones",
            "set rollout to self_play, or reward_trajectory to 0",
            where,
        )
        _check(
            self.reward_task == 0 or self.rollout == "self_play",
            "reward_task",
            "the task term rolls a live conversation forward with the simulated user, and corpus prompts have none",
            "set rollout to self_play, or reward_task to 0",
            where,
        )
        _check(
            self.task_horizon >= 1,
            "task_horizon",
            f"must be >= 1, got {self.task_horizon}",
            "use e.g. 4 (system turns, the candidate included)",
            where,
        )
        _check(
            0 < self.task_discount <= 1,
            "task_discount",
            f"must be in (0, 1], got {self.task_discount}",
            "use e.g. 0.9",
            where,
        )
        _check(
            self.trajectory_window >= 1,
            "trajectory_window",
            f"must be >= 1, got {self.trajectory_window}",
            "use e.g. 3 (the candidate and the two system turns before it)",
            where,
        )
        _check(
            self.self_play_reveal in ("full", "sharded", "agenda"),
            "self_play_reveal",
            f"unknown '{self.self_play_reveal}'",
            "use full, sharded or agenda",
            where,
        )
        _check(
            self.probe_conversations >= 0,
            "probe_conversations",
            f"must be >= 0, got {self.probe_conversations}",
            "use 0 (off) or a number of goals such as 20",
            where,
        )
        _check(
            self.self_play_refresh_every >= 1,
            "self_play_refresh_every",
            f"must be >= 1, got {self.self_play_refresh_every}",
            "use e.g. 50",
            where,
        )
        _check(
            self.self_play_max_exchanges >= 1,
            "self_play_max_exchanges",
            f"must be >= 1, got {self.self_play_max_exchanges}",
            "use e.g. 20",
            where,
        )
        _check(
            self.kl_estimator in ("paper", "k3", "full"),
            "kl_estimator",
            f"unknown '{self.kl_estimator}'",
            "use paper, k3 or full",
            where,
        )
        _check(
            self.ix_mode in IX_MODES,
            "ix_mode",
            f"unknown '{self.ix_mode}'",
            "use all, history or salient",
            where,
        )
        _check(
            self.reward_attention in ("renormalised", "raw"),
            "reward_attention",
            f"unknown '{self.reward_attention}'",
            "use renormalised or raw",
            where,
        )
        _check(
            self.logprob_reduction in ("sum", "mean"),
            "logprob_reduction",
            f"unknown '{self.logprob_reduction}'",
            "use sum or mean",
            where,
        )
        check_positive(
            self,
            (
                "batch_size",
                "steps",
                "checkpoint_every",
                "probe_size",
                "repeat_n",
                "keep_checkpoints",
                "max_nonfinite_steps",
                "kl_horizon",
            ),
            where,
        )
        _check(
            self.learning_rate > 0 and self.grad_clip > 0,
            "learning_rate/grad_clip",
            "must be > 0",
            "use e.g. 1e-4 and 1.0",
            where,
        )
        self.validate_memory(where)
        _check(
            self.reference_device in ("", "cpu"),
            "reference_device",
            f"unknown '{self.reference_device}'",
            "leave it empty or use cpu",
            where,
        )
        _check(
            self.reference_dtype in REFERENCE_DTYPES,
            "reference_dtype",
            f"unknown '{self.reference_dtype}'",
            "use float32 or bfloat16",
            where,
        )
        separate = (self.reference_device, self.reference_dtype) != ("", "float32")
        _check(
            not (self.adapter == "lora" and separate),
            "reference_device/reference_dtype",
            "with adapter=lora π_ref is the policy with its adapter disabled, not a separate model",
            "leave reference_device empty and reference_dtype float32, or use adapter=none",
            where,
        )
        return self


def check_corpus_split(cfg: Any, fix_data: str, where: str) -> None:
    """A corpus is given (`data`) and `split` names one of its held-out splits."""
    _check(bool(cfg.data), "data", "no corpus given", fix_data, where)
    known = cfg.split in ("test", "validation")
    _check(known, "split", f"unknown split '{cfg.split}'", "use test or validation", where)


@dataclass
class EvalConfig:
    """Test evaluation of SFT and AFT checkpoints."""

    data: str = setting("", "corpus path (its test split is evaluated)")
    split: str = setting("test", "split to evaluate: test or validation")
    test_examples: int = setting(0, "evaluate the first N examples of the split (0 = all)")
    ix_mode: str = setting("all", "I_x of the Focus column (the branches' setting)")
    layers: str = setting("all", "decoder layers averaged into A")
    repeat_n: int = setting(3, "n of the repeat penalty")
    max_source_tokens: int = setting(192, "source budget, as in SFT")
    max_new_tokens: int = setting(48, "greedy generation budget")
    batch_size: int = setting(50, "examples per generation batch (batches are length-bucketed)")
    bertscore_model: str = setting("", "BERTScore encoder: empty = offline all-MiniLM-L6-v2")

    def validate(self, where: str = "evaluation") -> EvalConfig:
        check_corpus_split(self, "pass --data PATH", where)
        _check(self.test_examples >= 0, "test_examples", "must be >= 0", "use 0 for the whole split", where)
        _check(self.ix_mode in IX_MODES, "ix_mode", f"unknown '{self.ix_mode}'", "use all, history or salient", where)
        check_positive(self, ("max_new_tokens", "batch_size", "repeat_n", "max_source_tokens"), where)
        return self


@dataclass
class ConversationConfig:
    """Closed-loop conversations with the user simulator (`aft converse`, the pipeline's `conversation.*`)."""

    data: str = setting("", "corpus folder whose split's dialogue goals the user pursues (data.json + list files)")
    split: str = setting("test", "the split whose goals are used: test or validation")
    goals: int = setting(100, "the first N goals of the split (0 = all)")
    reveal: str = setting(
        "both", "how the user reveals constraints: full, sharded, agenda, or both (full and sharded: the degradation)"
    )
    seed: int = setting(0, "the simulator's seed (the user's words and, in agenda mode, how much it says per turn)")
    max_exchanges: int = setting(20, "user turns before the user gives up (a timeout)")
    max_source_tokens: int = setting(192, "source budget: the history is left-cut to it exactly as in training")
    max_new_tokens: int = setting(48, "greedy generation budget per system turn")
    batch_size: int = setting(64, "conversations per generation batch")
    samples: int = setting(
        5,
        "sampled conversations per goal (temperature 1) beside the greedy one, for reliability "
        "(Laban et al.: mean P, aptitude A90, unreliability U90-10); 0 = greedy only",
    )
    oracle: bool = setting(
        True,
        "add the anchor row: the oracle (TownInfo's rule policy) on TownInfo, the rule system over the venue "
        "databases on MultiWOZ",
    )

    def validate(self, where: str = "conversation") -> ConversationConfig:
        check_corpus_split(self, "pass --data PATH (a MultiWOZ-schema corpus folder)", where)
        _check(
            self.reveal in (*REVEAL_MODES, "both"),
            "reveal",
            f"unknown reveal mode '{self.reveal}'",
            "use full, sharded, agenda or both",
            where,
        )
        _check(self.goals >= 0, "goals", f"must be >= 0, got {self.goals}", "use 0 for every goal of the split", where)
        check_positive(self, ("max_exchanges", "max_source_tokens", "max_new_tokens", "batch_size"), where)
        _check(self.samples >= 0, "samples", f"must be >= 0, got {self.samples}", "use 0 for greedy only", where)
        return self

    @property
    def modes(self) -> tuple[str, ...]:
        return ("full", "sharded") if self.reveal == "both" else (self.reveal,)
