"""Decoder-only models (any `AutoModelForCausalLM`: Llama, Mistral, Qwen, GPT-2, …): AFT_SPEC §8.

- **Prompt.** The history as chat messages (user turns → `user`, system turns → `assistant`) rendered by the
  tokenizer's chat template with the generation prompt; without a template, the §1 serialisation, then the
  response cue `system:`, after a start token (the tokenizer's BOS, or its EOS as GPT-2 uses it). Histories
  are cut from the left by whole turns to the budget. Tokens the template adds (role headers, BOS, the cue)
  and the attention sink (position 0) are template tokens and belong to no I_x.
- **A.** A teacher-forced pass over [prompt; y]: the prompt once per prompt, its KV cache shared by its K
  responses (gradients flow through it). The logits of y_t come from the position before it (the last prompt
  token for y_1); those |y| query rows against the prompt's key
  columns give Â[t,j] (mean over heads and the selected layers). With m_t = Σ_{j∈P′} Â[t,j] over the prompt
  positions P′ that are not template tokens, A[t,j] = Â[t,j]/m_t on P′, and the lookback ratio is mean_t m_t.
- **Speed.** Attention runs through one registered attention function (`aft_rows`, transformers'
  AttentionInterface): SDPA for every layer's output, and, only in the layers whose weights are read, the
  softmax of the |y| query rows that predict response tokens, not of all (S+T)² positions. Sampling runs one
  prefill per prompt (left-padded), whose KV cache its K samples share, then one cached step per token.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from aft_core.data.batching import pad_batch
from aft_core.data.examples import serialise_history, slot_value_spans, touches_spans
from aft_core.errors import AftInputError
from aft_core.models.family import (
    IGNORE_INDEX,
    ModelFamily,
    cache_rows_keeper,
    checkpointing,
    decode_loop,
    first_id,
    mean_over_response,
    register_attention_function,
    repeat_cache_rows,
    response_mask,
    scored,
    standard_cache,
)

ATTENTION = "aft_rows"  # the attention implementation every decoder-only model runs with
RESPONSE_CUE = "system:"  # ends a template-free prompt (AFT_SPEC §8)
ROLES = {"user": "user", "system": "assistant"}


@dataclass
class RowRead:
    """Which attention weights a pass reads: `layers`, the query rows [N,T] and the first `columns` key columns."""

    layers: frozenset[int]
    rows: torch.Tensor  # [N,T] query positions
    columns: int
    total: list[torch.Tensor] = field(default_factory=list)  # running sum of head means [N,T,columns]
    reads: int = 0  # layers read in this pass (probe_layers: a layer that ran twice would be counted twice)
    seen: set[int] = field(default_factory=set)  # their indices

    def add(self, probs: torch.Tensor, layer: int) -> None:
        self.reads += 1
        self.seen.add(layer)
        if self.total:
            self.total[0] += probs
        else:
            self.total.append(probs)

    def mean(self) -> torch.Tensor:
        return self.total[0] / len(self.layers)


_READING: contextvars.ContextVar[RowRead | None] = contextvars.ContextVar("aft_rows_reading", default=None)


@contextmanager
def reading(read: RowRead | None) -> Iterator[None]:
    token = _READING.set(read)
    try:
        yield
    finally:
        _READING.reset(token)


def row_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA for the output; in a layer being read, also softmax(q_rows·kᵀ·scaling + mask) over the first columns.

    query [N,H,Q,d], key/value [N,Hkv,K,d], attention_mask additive [N,1,Q,K] (the eager mask).
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    read = _READING.get()
    layer = getattr(module, "layer_idx", None)
    if read is not None and layer in read.layers:
        with torch.no_grad():
            n, h, _, d = query.shape
            rows = read.rows  # [N,T]
            q = query.gather(2, rows[:, None, :, None].expand(n, h, rows.shape[1], d))  # [N,H,T,d]
            keys = repeat_kv(key, h // key.shape[1])  # [N,H,K,d]
            scale = scaling if scaling is not None else d**-0.5
            scores = (q @ keys.transpose(-1, -2)).float() * scale  # [N,H,T,K]
            if kwargs.get("softcap") is not None:
                scores = torch.tanh(scores / kwargs["softcap"]) * kwargs["softcap"]
            if attention_mask is not None:
                mask_rows = attention_mask.gather(
                    2, rows[:, None, :, None].expand(n, 1, rows.shape[1], attention_mask.shape[-1])
                )
                scores = scores + mask_rows[..., : scores.shape[-1]].float()
            probs = torch.softmax(scores, dim=-1)[..., : read.columns]  # [N,H,T,S]
            read.add(probs.mean(dim=1), layer)  # [N,T,S]
    kwargs.pop("softcap", None)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


register_attention_function(ATTENTION, row_attention)


@dataclass(frozen=True)
class LayerProbe:
    """What one short pass shows of a decoder's layers."""

    attended: tuple[int, ...]  # the layers that run AFT's row-reading attention, by their index in the model
    recurrent: bool  # its cache carries state through padding (a hybrid's recurrent or convolution layers)
    shared_prefill: bool  # its cache's rows can be repeated, so K samples or responses share one prompt pass


def probe_layers(model: Any) -> LayerProbe:
    """One 4-token pass with the cache on, kept on the model. A transformer decoder attends in every layer; a
    hybrid in its attention layers only (its recurrent or state-space layers mix tokens with no attention matrix,
    so A is the mean over the layers that have one), and its cache holds recurrent state, which padding between a
    prompt and its response would corrupt (`CausalFamily.teacher_forced` then left-pads).

    Raises ValueError(problem) or ValueError(problem, fix) for a model AFT cannot serve: an attention layer that
    runs twice in one pass, or no cache returned."""
    from transformers.cache_utils import DynamicLayer, LinearAttentionCacheLayerMixin

    known = getattr(model, "_aft_layer_probe", None)
    if isinstance(known, LayerProbe):
        return known
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.arange(4, dtype=torch.long)[None, :] % vocab  # [1,4]
    read = RowRead(frozenset(range(int(model.config.num_hidden_layers))), rows=torch.tensor([[3]]), columns=4)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), reading(read):
            out = model(input_ids=ids.to(next(model.parameters()).device), use_cache=True)
    finally:
        model.train(was_training)
    name = type(model).__name__
    if read.reads != len(read.seen):
        raise ValueError(
            f"{name} runs one attention layer index more than once per pass ({read.reads} reads of "
            f"{len(read.seen)} layers), so A over its layers is not defined"
        )
    cache = getattr(out, "past_key_values", None)
    if cache is None or not getattr(cache, "layers", None):
        raise ValueError(
            f"{name} returns no transformers cache (past_key_values), so AFT's decoding cannot continue a prompt "
            "(it keeps its state inside the model)",
            "use a decoder whose forward returns past_key_values (a transformer, or a hybrid such as Jamba, "
            "Granite 4, Qwen3-Next, LFM2 or Falcon-H1)",
        )
    standard = standard_cache(cache)
    recurrent = not standard or any(  # a cache of the model's own may keep state beside its layers (MiniMax's)
        isinstance(layer, LinearAttentionCacheLayerMixin) or not isinstance(layer, DynamicLayer)
        for layer in cache.layers
    )
    probe = LayerProbe(tuple(sorted(read.seen)), recurrent, standard)
    model._aft_layer_probe = probe
    return probe


class CausalFamily(ModelFamily):
    name = "causal"
    auto_class = "AutoModelForCausalLM"

    def __init__(self, config: Any, generation_config: Any = None, tokenizer: Any = None) -> None:
        super().__init__(config, generation_config, tokenizer)
        end = end_of_turn_id(tokenizer) if tokenizer is not None else first_id(config.eos_token_id)
        if end is None:
            raise AftInputError(
                getattr(config, "_name_or_path", "") or "config.json",
                "eos_token_id",
                "the model names no end-of-response token",
                "set eos_token_id in its config.json",
            )
        self._end: int = end
        self._alternate = tokenizer is not None and needs_alternation(tokenizer)
        self._pad = _pad_id(tokenizer, config, self._end)

    def attention_layers(self, model):
        return list(probe_layers(model).attended)

    def eos_id(self) -> int:
        return self._end

    def pad_id(self) -> int:
        return self._pad

    def encode_prompts(self, histories, tokenizer, max_tokens):
        """Every prompt rendered whole and tokenised in one call; only those over `max_tokens` are cut (`_left_cut`).
        One call for all: a tokenizer call costs about 0.6 ms of Python per text on a slow CPU, and a decoder-only
        branch encodes the 17,419 training prompts at its start (35 s of it with one call per prompt)."""
        histories = [list(history) for history in histories]
        drafts = [_draft(history, 0, tokenizer, self._alternate) for history in histories]
        if not drafts:
            return []
        enc = tokenizer([d.text for d in drafts], add_special_tokens=False, return_offsets_mapping=True)
        return [
            _mapped(draft, ids, offsets, tokenizer)
            if len(draft.start_ids) + len(ids) <= max_tokens
            else self._left_cut(history, tokenizer, max_tokens)
            for history, draft, ids, offsets in zip(
                histories, drafts, enc["input_ids"], enc["offset_mapping"], strict=True
            )
        ]

    def _left_cut(self, turns: list[Any], tokenizer: Any, max_tokens: int) -> dict[str, list]:
        """A history too long for `max_tokens`, cut from the left: the fewest leading whole turns dropped, then (if the
        current turn alone is too long) its left tokens.

        Dropping a leading turn never lengthens a prompt, so the first turn kept is found by bisection over the prompt
        lengths (about log2(turns) renders, not one render per dropped turn: conversations re-encode every history
        each round, and a 20-exchange history drops 30 turns), and only the prompt kept gets its token map."""
        alternate = self._alternate
        lo, hi = 1, len(turns) - 1  # the first turn kept is in [lo, hi]; hi, the current turn alone, at worst
        while lo < hi:
            mid = (lo + hi) // 2
            if _render(turns[mid:], mid, tokenizer, alternate, with_map=False)["length"] > max_tokens:
                lo = mid + 1
            else:
                hi = mid
        encoded = _render(turns[max(hi, 0) :], max(hi, 0), tokenizer, alternate)
        cut = 0
        while len(encoded["input_ids"]) > max_tokens:  # the current turn alone is too long: cut its left tokens
            cut += len(encoded["input_ids"]) - max_tokens
            last = turns[-1]
            pieces = tokenizer(last.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            if cut >= len(pieces):
                raise AftInputError(
                    "max_source_tokens",
                    "max_source_tokens",
                    f"{max_tokens} cannot hold the prompt template",
                    "raise --max-source-tokens",
                )
            short = type(last)(last.speaker, last.text[pieces[cut][0] :], last.slot_values)
            encoded = _render([short], len(turns) - 1, tokenizer, self._alternate)
        return encoded

    def encode_targets(self, texts, tokenizer, max_tokens):
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [t[: max_tokens - 1] + [self._end] for t in ids]

    @torch.no_grad()
    def generate(self, model, src, *, max_new_tokens, do_sample, k=1, temperature=1.0, state=None):
        lengths = src.attention_mask.sum(dim=1)  # [B]
        b = src.input_ids.shape[0]
        ids, mask = _left_padded(src.input_ids, lengths, self._pad)
        if k > 1 and not probe_layers(model).shared_prefill:  # a cache of the model's own: one prefill per sample
            ids, mask, lengths = (x.repeat_interleave(k, dim=0) for x in (ids, mask, lengths))
            b, k = b * k, 1
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=_positions(mask),
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        if k > 1:
            repeat_cache_rows(cache, b, k, ids.device)  # the K samples continue one prefill
        state = {"mask": mask.repeat_interleave(k, dim=0), "position": lengths.repeat_interleave(k)}

        def step(tokens: torch.Tensor) -> torch.Tensor:
            state["mask"] = torch.cat([state["mask"], state["mask"].new_ones(tokens.shape[0], 1)], dim=1)
            logits = model(
                input_ids=tokens[:, None],
                attention_mask=state["mask"],
                position_ids=state["position"][:, None],
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1, :]
            state["position"] = state["position"] + 1
            return logits

        first = out.logits[:, -1, :].repeat_interleave(k, dim=0)  # [N,V]
        prefix = torch.full((b * k, 1), self._pad, dtype=torch.long, device=ids.device)  # a placeholder column
        return decode_loop(
            first,
            step,
            prefix=prefix,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            eos_id=self._end,
            pad_id=self._pad,
            keep=cache_rows_keeper(cache, state),
        )

    def teacher_forced(self, model, src, sequences, repeats, layers, state=None):
        """The prompt once per prompt, its KV cache repeated for its K responses, then the responses (under
        gradient checkpointing: one uncached pass per response, the same numbers).

        y_1 is predicted by the prompt's last position, y_t (t > 1) by the response token before it; A's rows are
        read at exactly those query positions, over the prompt's S key columns.
        """
        labels = sequences[:, 1:]  # [N,T]
        tgt_mask = response_mask(labels, self._end)
        lengths = src.attention_mask.sum(dim=1)  # [B]
        probe = probe_layers(model)
        # A recomputed block cannot write a cache; a cache of the model's own cannot be repeated per response; and
        # a linear-attention cache updates its state in place, which autograd refuses once the state is in the graph
        # (Qwen3-Next's gated delta rule): those score each [prompt; y] in one pass.
        uncached = checkpointing(model) or not probe.shared_prefill or (probe.recurrent and torch.is_grad_enabled())
        pass_ = _uncached_pass if uncached else _shared_prompt_pass
        if probe.recurrent:
            # A recurrent layer would carry a right-padded prompt's padding into the response's state: the prompt
            # is left-padded instead (as in `generate`), its positions given, and Â's columns moved back below.
            ids, mask = _left_padded(src.input_ids, lengths, self._pad)
            last, positions = torch.full_like(lengths, ids.shape[1] - 1), _positions(mask)
        else:
            ids = src.input_ids.masked_fill(src.attention_mask == 0, self._pad)
            mask, last, positions = src.attention_mask, lengths - 1, None
        hidden, raw = pass_(
            _base(model), ids, mask, lengths, labels, repeats, layers, last=last, positions=positions
        )  # [N,T,D], Â [N,T,S]
        if probe.recurrent and raw is not None:
            raw = _right_aligned(raw, (ids.shape[1] - lengths).repeat_interleave(repeats))
        logits = _output_logits(model, hidden[tgt_mask])  # [M,V]
        attn = lookback = None
        if raw is not None:
            prompt_mask = src.attention_mask.repeat_interleave(repeats, dim=0)  # [N,S]
            raw = raw * prompt_mask[:, None, :]  # prompt columns only
            counted = (prompt_mask.bool() & ~src.src_is_template.repeat_interleave(repeats, dim=0))[:, None, :]  # P′
            raw = raw * counted  # Â on P′
            mass = raw.sum(dim=-1)  # m_t [N,T]
            attn = raw / mass.clamp(min=torch.finfo(raw.dtype).tiny)[..., None]  # rows sum to 1 over P′
            lookback = mean_over_response(mass, tgt_mask)
        return scored(logits, labels, tgt_mask, attn, lookback, attn_raw=raw)

    def sft_batch(self, sources, targets, pad_id, device=None):
        ids, attention_mask = pad_batch([list(s) + list(y) for s, y in zip(sources, targets, strict=True)], pad_id)
        labels = torch.full_like(ids, IGNORE_INDEX)
        for i, (s, y) in enumerate(zip(sources, targets, strict=True)):
            labels[i, len(s) : len(s) + len(y)] = torch.tensor(y, dtype=torch.long)  # prompt positions masked
        batch = {"input_ids": ids, "attention_mask": attention_mask, "labels": labels}
        return {key: value.to(device) for key, value in batch.items()} if device is not None else batch

    def sft_logits(self, model, batch):
        """Logits of the response positions only ([1,M,V]): the LM head never runs over the prompt."""
        hidden = _base(model)(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        labels = batch["labels"][:, 1:]  # position i predicts token i+1
        read = labels != IGNORE_INDEX  # [B,L-1]
        return _output_logits(model, hidden[:, :-1][read])[None], labels[read][None]

    def check_lengths(self, model, where, max_source_tokens, max_new_tokens):
        limit = getattr(model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and max_source_tokens + max_new_tokens > limit:
            raise AftInputError(
                where,
                "max_source_tokens",
                f"{max_source_tokens} prompt + {max_new_tokens} response tokens exceed the model's {limit} positions",
                f"use --max-source-tokens {max(limit - max_new_tokens, 1)} or less",
            )
        window = sliding_window(model.config)
        if window is not None and max_source_tokens + max_new_tokens > window:
            # A sliding-window layer never sees the start of a longer prompt, and its cache keeps only the last
            # `window` keys, so A could not be read over the whole prompt in every layer.
            raise AftInputError(
                where,
                "max_source_tokens",
                f"{max_source_tokens} prompt + {max_new_tokens} response tokens "
                f"exceed the model's sliding attention window of {window} tokens",
                f"use --max-source-tokens {max(window - max_new_tokens, 1)} or less",
            )


def sliding_window(config: Any) -> int | None:
    """The attention window of a model whose layers include sliding-window attention (Gemma 2/3, Mistral v0.1,
    …, as transformers' `layer_types` or `use_sliding_window` say), else None."""
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return window if "sliding_attention" in layer_types else None
    return window if getattr(config, "use_sliding_window", True) else None


def _shared_prompt_pass(
    base: Any,
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    lengths: torch.Tensor,
    labels: torch.Tensor,
    repeats: int,
    layers: Sequence[int],
    *,
    last: torch.Tensor,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt once per prompt, its KV cache repeated for its K responses (gradients flow through it), then the
    responses: hidden states [N,T,D] at the positions that predict y_1..y_T, and Â [N,T,S] read there (or None).

    lengths [B]: prompt tokens; last [B]: the column of each prompt's last token; positions [B,S]: the prompt's
    position ids where they are not its columns (a left-padded prompt)."""
    b, s = ids.shape
    n, t = labels.shape
    last = last[:, None]  # [B,1] the position that predicts y_1
    first_read = RowRead(frozenset(layers), last, s) if layers else None
    with reading(first_read):
        out = base(input_ids=ids, attention_mask=attention_mask, position_ids=positions, use_cache=True)
    width = out.last_hidden_state.shape[-1]
    hidden = [out.last_hidden_state.gather(1, last[..., None].expand(b, 1, width)).repeat_interleave(repeats, dim=0)]
    rest_read = None
    if t > 1:
        cache = out.past_key_values
        repeat_cache_rows(cache, b, repeats, ids.device)  # K responses continue one prompt pass
        mask = torch.cat(
            [attention_mask.repeat_interleave(repeats, dim=0), attention_mask.new_ones(n, t - 1)], dim=1
        )  # [N,S+T-1]: prompt padding masked
        steps = torch.arange(t - 1, device=labels.device)
        positions = lengths.repeat_interleave(repeats)[:, None] + steps[None, :]  # [N,T-1] y_1..y_{T-1}
        rest_read = RowRead(frozenset(layers), steps[None, :].expand(n, t - 1), s) if layers else None
        with reading(rest_read):
            hidden.append(
                base(
                    input_ids=labels[:, :-1],
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                ).last_hidden_state
            )  # [N,T-1,D]
    if first_read is None:
        return torch.cat(hidden, dim=1), None
    rows = [first_read.mean().repeat_interleave(repeats, dim=0)] + ([rest_read.mean()] if rest_read else [])
    return torch.cat(hidden, dim=1), torch.cat(rows, dim=1)


def _uncached_pass(
    base: Any,
    ids: torch.Tensor,
    attention_mask: torch.Tensor,
    lengths: torch.Tensor,
    labels: torch.Tensor,
    repeats: int,
    layers: Sequence[int],
    *,
    last: torch.Tensor,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`_shared_prompt_pass` as one pass over [prompt; y] per response, no cache (what gradient checkpointing can
    recompute): the same positions, masks and rows, so the same hidden states and Â."""
    s = ids.shape[1]
    n, t = labels.shape
    lengths = lengths.repeat_interleave(repeats)  # [N]
    last = last.repeat_interleave(repeats)  # [N]
    prompt_mask = attention_mask.repeat_interleave(repeats, dim=0)  # [N,S]
    prompt_positions = (
        torch.arange(s, device=ids.device).expand(n, s)
        if positions is None
        else positions.repeat_interleave(repeats, 0)
    )  # [N,S]
    steps = torch.arange(t - 1, device=labels.device)
    full_ids = torch.cat([ids.repeat_interleave(repeats, dim=0), labels[:, :-1]], dim=1)  # [N,S+T-1]
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(n, t - 1)], dim=1)
    positions = torch.cat([prompt_positions, lengths[:, None] + steps[None, :]], dim=1)
    rows = torch.cat([last[:, None], s + steps[None, :].expand(n, t - 1)], dim=1)  # [N,T] query positions
    read = RowRead(frozenset(layers), rows, s) if layers else None
    with reading(read):
        out = base(input_ids=full_ids, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
    hidden = out.gather(1, rows[..., None].expand(n, t, out.shape[-1]))  # [N,T,D]
    return hidden, (read.mean() if read is not None else None)


def _left_padded(ids: torch.Tensor, lengths: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompts [B,S] moved to the right edge: a row's tokens end at column S-1, so every row's next
    position is column S. Returns the ids and the attention mask [B,S]."""
    s = ids.shape[1]
    shift = s - lengths  # [B]
    index = torch.arange(s, device=lengths.device)[None, :] - shift[:, None]  # [B,S]
    valid = index >= 0
    return ids.gather(1, index.clamp(min=0)).masked_fill(~valid, pad), valid.long()


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch [B,S]: 0 at each row's first token (pads get 0)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def _right_aligned(raw: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Â [N,T,S] read over left-padded prompt columns, moved back to the right-padded columns the token map uses:
    column j of row n is left column j + shift[n] (zero beyond the prompt)."""
    s = raw.shape[-1]
    index = torch.arange(s, device=raw.device)[None, :] + shift[:, None]  # [N,S]
    inside = index < s
    moved = raw.gather(2, index.clamp(max=s - 1)[:, None, :].expand_as(raw))  # [N,T,S]
    return moved * inside[:, None, :]


def needs_alternation(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template refuses histories that do not alternate user/assistant from a user turn
    (Gemma's, Mistral's and Llama 2's templates raise on them). Read once per tokenizer by rendering two such
    histories: one that starts with an assistant turn and one with two user turns in a row."""
    import jinja2

    if not getattr(tokenizer, "chat_template", None):
        return False
    for roles in (("assistant", "user"), ("user", "user")):
        try:
            tokenizer.apply_chat_template(
                [{"role": r, "content": "hello"} for r in roles], tokenize=False, add_generation_prompt=True
            )
        except jinja2.TemplateError:
            return True
    return False


def alternating(turns: Sequence[Any], first_index: int) -> tuple[list[dict[str, str]], list[tuple[int, Any]]]:
    """Chat messages that alternate user/assistant from a user turn, for templates that insist on it.

    A history cut from the left can begin with a system turn: leading system turns are dropped (their tokens are
    not in the prompt, as if the cut had taken them too). Consecutive turns of one speaker are joined into one
    message, their texts separated by a newline, each still verbatim so the token map finds it. Returns the
    messages and the (turn index, turn) pairs that are in the prompt.
    """
    kept = list(enumerate(turns, start=first_index))
    while len(kept) > 1 and kept[0][1].speaker != "user":
        kept.pop(0)
    messages: list[dict[str, str]] = []
    for _, turn in kept:
        role = ROLES[turn.speaker]
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + turn.text
        else:
            messages.append({"role": role, "content": turn.text})
    return messages, kept


@dataclass
class _Draft:
    """A prompt's text before tokenisation, with what its token map needs."""

    text: str
    start_ids: list[int]  # ids before the text's (a template-free prompt's attention sink)
    turns: list[Any]  # the turns it shows (a template that insists on alternation drops or joins some)
    first_index: int  # the index of turns[0] in the whole history
    spans: list[tuple[int, int, int, bool]] | None = None  # a template-free text's (start, end, turn, is_tag)
    slot_spans: list[tuple[int, int]] | None = None  # and its slot values' character spans
    alternate: bool = False  # its chat messages were made to alternate (`alternating`)


def _messages(turns: Sequence[Any], alternate: bool) -> list[dict[str, str]]:
    """The chat messages of `turns` (made to alternate roles where the template insists)."""
    if alternate:
        return alternating(turns, 0)[0]
    return [{"role": ROLES[t.speaker], "content": t.text} for t in turns]


def _glue(draft: _Draft, tokenizer: Any) -> tuple[int, ...]:
    """How many characters the chat template writes before each turn's text, counted from the end of the turn before
    (from the start for the first): the same messages rendered with a marker for each text, so a default system
    prompt (Qwen2.5's "… You are a helpful assistant.") or a role header (`<|im_start|>user`) is known to be the
    template's, even where a turn's text ("help", "start") also occurs in it. It depends on the speakers alone, so
    it is rendered once per template and sequence of speakers (histories are re-encoded every conversation round)."""
    speakers = tuple(t.speaker for t in draft.turns)
    return _glue_of(tokenizer, tokenizer.chat_template, speakers, draft.alternate)


@functools.lru_cache(maxsize=4096)
def _glue_of(tokenizer: Any, template: str, speakers: tuple[str, ...], alternate: bool) -> tuple[int, ...]:
    """`_glue` for one template (`template` keys the cache: a tokenizer's template can be replaced)."""
    markers = [SimpleNamespace(speaker=s, text=f"AFTTURNMARKER{i}X") for i, s in enumerate(speakers)]
    text = tokenizer.apply_chat_template(_messages(markers, alternate), tokenize=False, add_generation_prompt=True)
    glue, cursor = [], 0
    for marker in markers:
        at = text.find(marker.text, cursor)
        glue.append(at - cursor if at >= 0 else -1)  # -1: the template does not show it verbatim
        cursor = at + len(marker.text) if at >= 0 else cursor
    return tuple(glue)


def _draft(turns: Sequence[Any], first_index: int, tokenizer: Any, alternate: bool) -> _Draft:
    """The prompt text of `turns`; turn indices count from `first_index` (the turns cut off before it).
    `alternate`: the template insists on alternating roles (`needs_alternation`), so the messages are made to."""
    if getattr(tokenizer, "chat_template", None):
        if alternate:
            kept = alternating(turns, first_index)[1]
            turns, first_index = [turn for _, turn in kept], kept[0][0]
        text = tokenizer.apply_chat_template(_messages(turns, alternate), tokenize=False, add_generation_prompt=True)
        return _Draft(text, [], list(turns), first_index, alternate=alternate)
    text, history_spans, slot_spans = serialise_history(turns)
    spans = [(sp.start, sp.end, first_index + sp.turn, sp.is_tag) for sp in history_spans]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return _Draft(f"{text} {RESPONSE_CUE}", [start], list(turns), first_index, spans, slot_spans)


def _render(
    turns: Sequence[Any], first_index: int, tokenizer: Any, alternate: bool = False, with_map: bool = True
) -> dict[str, Any]:
    """One prompt's ids and token map (`_draft`, tokenised, `_mapped`).
    `with_map=False`: only {"length": the prompt's token count}, for the left cut's search."""
    draft = _draft(turns, first_index, tokenizer, alternate)
    enc = tokenizer(draft.text, add_special_tokens=False, return_offsets_mapping=with_map)
    if not with_map:
        return {"length": len(draft.start_ids) + len(enc["input_ids"])}
    return _mapped(draft, enc["input_ids"], enc["offset_mapping"], tokenizer)


def _mapped(draft: _Draft, ids: Sequence[int], offsets: Sequence[tuple[int, int]], tokenizer: Any) -> dict[str, list]:
    """The prompt row: ids with each token's turn, speaker tag, slot value and template flags."""
    text, first_index = draft.text, draft.first_index
    if draft.spans is not None and draft.slot_spans is not None:
        spans, slot_spans = draft.spans, draft.slot_spans
    else:
        spans, slot_spans, cursor = [], [], 0
        for i, (turn, glue) in enumerate(zip(draft.turns, _glue(draft, tokenizer), strict=True)):
            content = turn.text.strip()
            # where the template puts the text (a template may trim it, so also past its leading whitespace);
            # else the first occurrence after the turn before, for templates that rewrite what a marker shows
            expected = (cursor + glue, cursor + glue + len(turn.text) - len(turn.text.lstrip())) if glue >= 0 else ()
            at = next((a for a in expected if text.startswith(content, a)), None)
            at = text.find(content, cursor) if at is None else at
            if at < 0:
                raise AftInputError(
                    getattr(tokenizer, "name_or_path", "tokenizer"),
                    "chat_template",
                    "does not show each turn's text verbatim, so tokens cannot be mapped to turns",
                    "use a chat template that renders message contents unchanged",
                )
            spans.append((at, at + len(content), first_index + i, False))
            slot_spans += slot_value_spans(content, turn.slot_values, at)
            cursor = at + len(content)
    turn_of, tag_of, salient_of = token_map(offsets, spans, slot_spans)
    n = len(draft.start_ids)
    template_of = [True] * n + [k < 0 for k in turn_of]
    template_of[0] = True  # the attention sink
    return {
        "input_ids": draft.start_ids + list(ids),
        "src_turn": [-1] * n + turn_of,
        "src_is_tag": [False] * n + tag_of,
        "src_is_salient": [False] * n + salient_of,
        "src_is_template": template_of,
    }


def token_map(
    offsets: Sequence[tuple[int, int]],
    spans: Sequence[tuple[int, int, int, bool]],
    slot_spans: Sequence[tuple[int, int]],
) -> tuple[list[int], list[bool], list[bool]]:
    """Per token: its turn (-1 outside every turn: a template token), whether it is a speaker tag, and whether it
    touches a slot value. A token's last character decides its span, as for encoder sources; an empty token is in
    none. `spans` (start, end, turn, is_tag) are in text order and do not overlap. Vectorised: conversations
    re-encode every history each round (a per-token scan over the spans was 30% of a decoder-only conversation)."""
    bounds = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)  # [n,2] character start, end
    if not spans:
        return [-1] * len(bounds), [False] * len(bounds), [False] * len(bounds)
    starts, ends, turns = (np.asarray([sp[i] for sp in spans], dtype=np.int64) for i in range(3))  # [spans] each
    is_tag = np.asarray([sp[3] for sp in spans], dtype=bool)
    last = np.maximum(bounds[:, 0], bounds[:, 1] - 1)  # [n]
    k = np.searchsorted(starts, last, side="right") - 1  # the last span starting at or before it   [n]
    at = np.maximum(k, 0)
    inside = (k >= 0) & (bounds[:, 1] > bounds[:, 0]) & (last < ends[at])
    turn = np.where(inside, turns[at], -1)
    tag = inside & is_tag[at]
    salient = inside & ~tag & touches_spans(bounds, slot_spans)
    return turn.tolist(), tag.tolist(), salient.tolist()


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that ends an assistant turn: the first special token the chat template puts after one (e.g.
    <|eot_id|>, <|im_end|>), or EOS without a template."""
    if not getattr(tokenizer, "chat_template", None):
        return tokenizer.eos_token_id
    marker = "AFTENDMARKER"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    after = tokenizer(text[text.rindex(marker) + len(marker) :], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return next((i for i in after if i in special), tokenizer.eos_token_id)


def _pad_id(tokenizer: Any, config: Any, end: int) -> int:
    """Pad: the tokenizer's, else the end token (what follows a response's end is never read)."""
    pad = tokenizer.pad_token_id if tokenizer is not None else getattr(config, "pad_token_id", None)
    return pad if pad is not None else end


def _base(model: Any) -> Any:
    """The transformer under the LM head (what returns last_hidden_state): the module its `base_model_prefix` names,
    or, where a class names one it does not have (Llama 4's text model: prefix `language_model`, module `model`),
    its `model`, as transformers' causal LMs call it, or the decoder it hands out."""
    for base in (getattr(model, model.base_model_prefix, None), getattr(model, "model", None)):
        if isinstance(base, torch.nn.Module):
            return base
    decoder = model.get_decoder()
    if decoder is model or not isinstance(decoder, torch.nn.Module):
        raise AftInputError(
            getattr(model.config, "_name_or_path", "") or type(model).__name__,
            "architectures",
            f"{type(model).__name__} has no transformer under its LM head ('{model.base_model_prefix}', 'model')",
            "use a causal LM class whose model holds its transformer (Llama, Qwen, Mistral, Gemma, …)",
        )
    return decoder


def _output_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """lm_head, with the final soft-capping a config may ask for (Gemma 2)   [M,D] -> [M,V]"""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits
