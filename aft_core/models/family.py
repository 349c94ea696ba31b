"""The model-family interface: everything AFT does with a model, whatever its architecture.

A family is a strategy bound to a model's config (never to its weights: a policy and its reference share one),
chosen from that config (`aft_core.models.family_of`); the code above
it (SFT, AFT, the probe, evaluation, the demo) calls these methods and never asks which family it holds.

Shared conventions:
- prompts are right-padded [B,S] with their token map (`SourceBatch`); A is always [N,T,S] over those S
  prompt columns, so the position sets I_x (data/batching) mean the same for every family;
- sequences returned by `generate` are [N, P+T]: a family-defined prefix of P ids (the decoder start token,
  a forced BOS; a placeholder for decoder-only models), then the response, pad after its end token; the K
  samples of a prompt are adjacent (repeat_interleave order);
- `teacher_forced` returns labels [N,T], tgt_mask [N,T] (response tokens up to and including the end token),
  token_logp [N,T], logits [M,V] on the M response positions, A [N,T,S] (detached; rows sum to 1 over the
  prompt positions that count, AFT_SPEC §3 and §8) and lookback [N] (mean_t of the attention mass on those
  positions before renormalisation; 1 by construction for cross-attention).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NotRequired, TypedDict

import torch

from aft_core.data.batching import SourceBatch
from aft_core.loss import token_logprobs, unpack

IGNORE_INDEX = -100


class ModelFamily:
    """The interface; `Seq2SeqFamily` (aft_core.models.seq2seq) and `CausalFamily` (aft_core.models.causal)."""

    name = "abstract"
    auto_class = ""  # the transformers Auto class that loads this family

    def __init__(self, config: Any, generation_config: Any = None, tokenizer: Any = None) -> None:
        self.config = config  # the model's config: what a family reads its settings from
        self.generation_config = generation_config

    def attention_layers(self, model: Any) -> list[int]:
        """The layers A can be read from, by their index in the model (every decoder layer, or a hybrid's
        attention layers)."""
        raise NotImplementedError

    def eos_id(self) -> int:
        """The token that ends a response (EOS, or a chat template's end-of-turn token)."""
        raise NotImplementedError

    def pad_id(self) -> int:
        raise NotImplementedError

    def encode_prompts(
        self, histories: Sequence[Sequence[Any]], tokenizer: Any, max_tokens: int
    ) -> list[dict[str, list]]:
        """Prompt ids with their token map (src_turn, src_is_tag, src_is_salient, src_is_template) per history."""
        raise NotImplementedError

    def encode_targets(self, texts: Sequence[str], tokenizer: Any, max_tokens: int) -> list[list[int]]:
        """Target ids ending in the end token, cut from the right to `max_tokens`."""
        raise NotImplementedError

    def prompt_state(self, model: Any, src: SourceBatch, inference: bool = False) -> Any:
        """What sampling and the teacher-forced pass can share for a batch of prompts (None: nothing).
        `inference`: no gradient will flow through it, so a faster equivalent kernel may serve."""
        return None

    def generate(
        self,
        model: Any,
        src: SourceBatch,
        *,
        max_new_tokens: int,
        do_sample: bool,
        k: int = 1,
        temperature: float = 1.0,
        state: Any = None,
    ) -> torch.Tensor:
        """Greedy decoding or ancestral sampling of k responses per prompt -> sequences [B*k, P+T]."""
        raise NotImplementedError

    def teacher_forced(
        self,
        model: Any,
        src: SourceBatch,
        sequences: torch.Tensor,
        repeats: int,
        layers: Sequence[int] | None,
        state: Any = None,
    ) -> TeacherForced:
        """Score `sequences` teacher-forced (see the module docstring for what is returned)."""
        raise NotImplementedError

    def sft_batch(
        self,
        sources: Sequence[Sequence[int]],
        targets: Sequence[Sequence[int]],
        pad_id: int,
        device: torch.device | None = None,
    ) -> dict[str, torch.Tensor]:
        """Model inputs with `labels` (IGNORE_INDEX off the response) for supervised fine-tuning."""
        raise NotImplementedError

    def sft_logits(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B,T,V], labels [B,T]) aligned so that logits[:, t] predicts labels[:, t] (a family may return only
        the response positions, as [1,M,V] and [1,M])."""
        raise NotImplementedError

    def sft_loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy over the response tokens."""
        logits, labels = self.sft_logits(model, batch)
        return torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX
        )

    def check_lengths(self, model: Any, where: str, max_source_tokens: int, max_new_tokens: int) -> None:
        """Refuse budgets the model's position embeddings cannot hold (one-line error naming the fix)."""

    def use_sft_attention(self, model: Any) -> None:
        """Switch `model` to the fastest attention that gives SFT's loss and gradients (its weights are not read)."""


def register_attention_function(name: str, function: Callable[..., Any]) -> None:
    """Make `function` the transformers attention implementation `name`, with the eager (additive) mask."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, eager_mask)


def parse_layers(spec: str, layers: Sequence[int] | int) -> list[int]:
    """`all`, `last`, or comma-separated indices (negative counts from the end) into `layers`, the model's attention
    layers by their index in the model (an int n: layers 0..n-1). In a hybrid with recurrent layers, index 0 is
    its first attention layer, whatever its place in the stack."""
    attending = list(range(layers)) if isinstance(layers, int) else sorted(layers)
    n = len(attending)
    if spec == "all":
        return attending
    if spec == "last":
        return attending[-1:]
    try:
        picked = [int(p) % n if -n <= int(p) < n else None for p in spec.split(",")]
    except ValueError:
        picked = [None]
    if None in picked:
        raise ValueError(f"layers must be 'all', 'last' or indices in [-{n}, {n}), got {spec!r}")
    return sorted({attending[p] for p in picked if p is not None})


def response_mask(labels: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True on response tokens up to and including the first end token: [N,T] -> [N,T] bool.

    Position-based, so a sampled pad id inside a response is still counted as a token.
    """
    is_eos = labels == eos_id
    eos_before = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # an end token strictly before t
    return ~eos_before


COMPACT_WHEN_ALIVE = 0.75  # decode_loop drops ended sequences from the decoding state once this share is left


def decode_loop(
    first_logits: torch.Tensor,
    step: Callable[[torch.Tensor], torch.Tensor],
    *,
    prefix: torch.Tensor,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    eos_id: int,
    pad_id: int,
    keep: Callable[[torch.Tensor], bool] | None = None,
) -> torch.Tensor:
    """Choose up to `max_new_tokens` tokens: logits [A,V] -> token -> step(token [A]) -> next logits [A,V], over the
    A sequences the decoding state holds.

    Returns [N, P+T]: `prefix` [N,P] then the chosen tokens, pad after a sequence's end token; stops once every
    sequence has ended. A sample draws one uniform number u per sequence and takes the first token whose
    cumulative probability exceeds u (inverse-CDF sampling: the distribution of `torch.multinomial`, which drew
    a random number per vocabulary entry, a third of the sampling time at V=2,000).

    With `keep(rows)` (the stepper drops every other row of its state, rows [A'] indexing its current A, and says
    whether it could), ended sequences leave the state once at most COMPACT_WHEN_ALIVE of its rows are still going,
    so a batch stops paying for replies that have ended; otherwise every sequence is stepped (fed pad) until the
    last one ends. The tokens are the same either way, and so are the random numbers: u is drawn for all N
    sequences at every step.
    """
    n = prefix.shape[0]
    tokens = [prefix]
    finished = torch.zeros(n, dtype=torch.bool, device=prefix.device)
    active = torch.arange(n, device=prefix.device)  # [A] the sequences the decoding state holds
    logits = first_logits
    for i in range(max_new_tokens):
        logits = logits.float()  # [A,V]
        if do_sample:
            cdf = torch.softmax(logits / temperature, dim=-1).cumsum(dim=-1)  # [A,V]
            u = torch.rand(n, 1, device=cdf.device)[active] * cdf[:, -1:]  # scaled: the last entry is 1 up to rounding
            chosen = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=cdf.shape[-1] - 1)
        else:
            chosen = logits.argmax(dim=-1)
        chosen = chosen.masked_fill(finished[active], pad_id)  # [A]
        tokens.append(
            torch.full((n, 1), pad_id, dtype=chosen.dtype, device=chosen.device).index_copy(0, active, chosen[:, None])
        )
        finished[active] |= chosen == eos_id
        if bool(finished.all()) or i == max_new_tokens - 1:
            break
        if keep is not None:
            going = (~finished[active]).nonzero().squeeze(1)  # [A'] rows of the state still going
            if len(going) <= COMPACT_WHEN_ALIVE * len(active):
                if keep(going):
                    active, chosen = active[going], chosen[going]
                else:
                    keep = None  # this state cannot drop rows: step every sequence
        logits = step(chosen)
    return torch.cat(tokens, dim=1)


def standard_cache(cache: Any) -> bool:
    """Whether a cache is built from transformers.cache_utils' own classes only. A model's own cache class may keep
    state beside its layers that the generic row operations miss (MiniMax's and Falcon-H1's keep their recurrent
    state so): such a cache is never repeated or cut by row here."""
    halves = [getattr(cache, "self_attention_cache", None), getattr(cache, "cross_attention_cache", None)]
    parts: list[Any] = [part for part in halves if part is not None] or [cache]
    module = "transformers.cache_utils"
    return type(cache).__module__ == module and all(
        type(part).__module__ == module and all(type(layer).__module__ == module for layer in part.layers)
        for part in parts
    )


def repeat_cache_rows(cache: Any, rows: int, repeats: int, device: torch.device) -> None:
    """Each of a standard cache's `rows` rows `repeats` times, in place (row b becomes rows b·r .. b·r+r-1):
    `reorder_cache` where a layer holds linear-attention state (every layer kind implements it for beam search;
    `batch_repeat_interleave` of a hybrid layer repeats its keys and values only), else `batch_repeat_interleave`."""
    from transformers.cache_utils import LinearAttentionCacheLayerMixin

    if not standard_cache(cache):
        raise ValueError(f"{type(cache).__name__} is not a transformers cache whose rows can be repeated")
    if any(isinstance(layer, LinearAttentionCacheLayerMixin) for layer in cache.layers):
        cache.reorder_cache(torch.arange(rows, device=device).repeat_interleave(repeats))
    else:
        cache.batch_repeat_interleave(repeats)


def cache_rows_keeper(cache: Any, per_row: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], bool]:
    """decode_loop's `keep` for a transformers cache and the stepper's other per-row tensors (`per_row`, indexed in
    place by name): rows are dropped (`batch_select_indices`) when every cache layer is a plain dynamic one, whose
    only per-row state is its keys and values; any other (static, quantised, linear-attention, a model's own) cache
    is left whole."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer, EncoderDecoderCache

    def keep(rows: torch.Tensor) -> bool:
        parts = (
            [cache.self_attention_cache, cache.cross_attention_cache]
            if isinstance(cache, EncoderDecoderCache)
            else [cache]
        )
        layers = [layer for part in parts for layer in getattr(part, "layers", [None])]
        plain = (DynamicLayer, DynamicSlidingWindowLayer)
        if not layers or not standard_cache(cache) or any(type(layer) not in plain for layer in layers):
            return False
        cache.batch_select_indices(rows)
        for name, tensor in per_row.items():
            per_row[name] = tensor[rows]
        return True

    return keep


class TeacherForced(TypedDict):
    """The teacher-forced record of `ModelFamily.teacher_forced`.

    The attention keys are present only when the sequences were scored with `layers` (π_ref is scored without)."""

    logits: torch.Tensor  # [M,V] on the response positions
    token_logp: torch.Tensor  # [N,T]
    labels: torch.Tensor  # [N,T]
    tgt_mask: torch.Tensor  # [N,T]
    attn: NotRequired[torch.Tensor]  # A [N,T,S]
    attn_raw: NotRequired[torch.Tensor]  # Â on the counted positions (A itself where rows already sum to 1)
    lookback: NotRequired[torch.Tensor]  # [N] (decoder-only: mean_t m_t; encoder–decoder: its cross-attention share)


def scored(
    logits: torch.Tensor,
    labels: torch.Tensor,
    tgt_mask: torch.Tensor,
    attn: torch.Tensor | None,
    lookback: torch.Tensor | None,
    attn_raw: torch.Tensor | None = None,
) -> TeacherForced:
    """The teacher-forced record: logits [M,V] on the response positions, per-token log-probs [N,T], A, and A before
    renormalisation (`attn_raw`, Â on the counted positions; A itself where rows already sum to 1). Without attention
    (`attn` None) the record has no attention keys."""
    token_logp = unpack(token_logprobs(logits, labels[tgt_mask]), tgt_mask)  # [N,T]
    record = TeacherForced(logits=logits, token_logp=token_logp, labels=labels, tgt_mask=tgt_mask)
    if attn is not None:
        record["attn"] = attn
        record["attn_raw"] = attn if attn_raw is None else attn_raw
        if lookback is not None:
            record["lookback"] = lookback
    return record


def first_id(ids: int | Sequence[int] | None) -> int | None:
    """A config's token id, or the first of a list of them (generation configs may name several EOS ids)."""
    if ids is None or isinstance(ids, int):
        return ids
    return int(ids[0])


def mean_over_response(values: torch.Tensor, tgt_mask: torch.Tensor) -> torch.Tensor:
    """mean_t values[n,t] over response tokens   [N,T] -> [N]"""
    return (values * tgt_mask).sum(dim=1) / tgt_mask.sum(dim=1).clamp(min=1)


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute every transformer block's activations in the backward pass instead of keeping them.

    Each block (transformers' `GradientCheckpointingLayer`) runs under `torch.utils.checkpoint` (non-reentrant)
    whenever gradients are on, in eval mode too: AFT's policy trains in eval mode (no dropout), where transformers'
    own switch does nothing. As transformers does, a checkpointed block gets no KV cache (a recomputed block would
    write it twice): passes that share a cache with gradients (the decoder-only shared prompt) take their uncached
    form instead (`checkpointing(model)` tells them). Sampling (no gradients) is unchanged."""
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    if checkpointing(model):
        return
    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not blocks:
        from aft_core.errors import AftInputError

        raise AftInputError(
            type(model).__name__,
            "gradient_checkpointing",
            "this architecture has no checkpointable blocks (transformers' GradientCheckpointingLayer)",
            "set gradient_checkpointing to false",
        )
    for block in blocks:
        plain = block.forward

        def forward(*args: Any, _plain: Callable = plain, _block: Any = block, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return _plain(*args, **kwargs)
            if kwargs.get("use_cache"):
                kwargs["use_cache"] = False
            if not _block._can_checkpoint_with_cache:  # a recomputed block would write its cache twice
                for name in ("past_key_values", "past_key_value", "layer_past"):
                    if kwargs.get(name) is not None:
                        kwargs[name] = None
            return checkpoint(_plain, *args, use_reentrant=False, **kwargs)

        block.forward = forward
    model.aft_gradient_checkpointing = True


def checkpointing(model: Any) -> bool:
    """Whether `enable_gradient_checkpointing` was applied and gradients are on (a pass will be recomputed)."""
    return bool(getattr(model, "aft_gradient_checkpointing", False)) and torch.is_grad_enabled()
