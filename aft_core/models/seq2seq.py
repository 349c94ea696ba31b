"""Encoder–decoder models (any `AutoModelForSeq2SeqLM`: T5, Flan-T5, mT5, BART, Pegasus, Marian, …), AFT_SPEC §2–3.

The prompt is the §1 serialisation of the history, encoded once per prompt; its encoder states serve the K
samples and the teacher-forced pass. A is the decoder's cross-attention, averaged over heads and the selected
layers. T5-family models run through `t5_decoding` (a prompt's K samples share its cross-attention keys and
values); every other model through its own forward, with forward hooks that reduce A as each layer runs.

What differs between encoder–decoder configs is read from the config here and nowhere else: the layer count
(`num_decoder_layers`, `decoder_layers`), the decoder prefix (the decoder start token, then a forced BOS as
BART's generation config asks), and learned position limits (`max_position_embeddings`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from aft_core.data.batching import pad_batch
from aft_core.data.examples import encode_sources
from aft_core.errors import AftInputError
from aft_core.models import t5_decoding
from aft_core.models.family import (
    IGNORE_INDEX,
    ModelFamily,
    cache_rows_keeper,
    decode_loop,
    first_id,
    mean_over_response,
    register_attention_function,
    response_mask,
    scored,
)


class Seq2SeqFamily(ModelFamily):
    name = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"

    def attention_layers(self, model: Any) -> list[int]:
        config = model.config
        for key in ("num_decoder_layers", "decoder_layers"):
            if isinstance(getattr(config, key, None), int):
                return list(range(getattr(config, key)))
        return list(range(len(cross_attention_modules(model))))

    def encode_prompts(self, histories, tokenizer, max_tokens):
        return encode_sources(histories, tokenizer, max_tokens)

    def encode_targets(self, texts, tokenizer, max_tokens):
        """Response ids + EOS; a model whose generation forces a BOS (BART) learns it as its first target token."""
        forced = self.prefix()[1:]
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [forced + t[: max_tokens - 1 - len(forced)] + [self.eos_id()] for t in ids]

    def _setting(self, key: str) -> Any:
        """A generation setting: the generation config's when it has one, else the model config's."""
        value = getattr(self.generation_config, key, None) if self.generation_config is not None else None
        return value if value is not None else getattr(self.config, key, None)

    def prefix(self) -> list[int]:
        """The decoder's ids before the response: the start token, and a forced BOS where generation forces one."""
        start = self._setting("decoder_start_token_id")
        if start is None:
            raise AftInputError(
                getattr(self.config, "_name_or_path", "model"),
                "decoder_start_token_id",
                "the config names no decoder start token",
                "set decoder_start_token_id in config.json",
            )
        bos = self._setting("forced_bos_token_id")
        return [start] + ([bos] if bos is not None else [])

    def eos_id(self) -> int:
        end = first_id(self._setting("eos_token_id"))
        if end is None:
            raise AftInputError(
                getattr(self.config, "_name_or_path", "") or "config.json",
                "eos_token_id",
                "the model names no end-of-response token",
                "set eos_token_id in its config.json",
            )
        return end

    def pad_id(self) -> int:
        pad = self._setting("pad_token_id")
        return pad if pad is not None else 0

    def prompt_state(self, model, src, inference=False):
        """The encoder's last hidden state [B,S,D]. With `inference` (no gradient: greedy evaluation, probes and
        conversations), a T5 encoder runs transformers' SDPA attention, which takes the relative position bias as
        its float mask: about 0.7x the eager pass at 128 x 192 tokens, equal to float rounding. Training and
        pi_ref keep the eager arithmetic, so a branch trains exactly as before."""
        encoder = model.get_encoder()
        if not (inference and t5_decoding.supports(model) and not torch.is_grad_enabled()):
            return encoder(input_ids=src.input_ids, attention_mask=src.attention_mask).last_hidden_state
        config = encoder.config
        before = config._attn_implementation
        config._attn_implementation = "sdpa"
        try:
            return encoder(input_ids=src.input_ids, attention_mask=src.attention_mask).last_hidden_state
        finally:
            config._attn_implementation = before

    @torch.no_grad()
    def generate(self, model, src, *, max_new_tokens, do_sample, k=1, temperature=1.0, state=None):
        encoded = (state if state is not None else self.prompt_state(model, src)).detach()  # [B,S,D]
        n = encoded.shape[0] * k
        prefix = torch.tensor(self.prefix(), device=encoded.device).expand(n, -1)  # [N,P]
        step, keep = _stepper(model, encoded, src.attention_mask, k, max_new_tokens + prefix.shape[1])
        for i in range(prefix.shape[1]):
            first = step(prefix[:, i])
        return decode_loop(
            first,
            step,
            prefix=prefix,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            eos_id=self.eos_id(),
            pad_id=self.pad_id(),
            keep=keep,
        )

    def teacher_forced(self, model, src, sequences, repeats, layers, state=None):
        """One encoder pass per prompt, reused for its `repeats` responses; A reduced while the pass runs."""
        p = len(self.prefix())
        labels = sequences[:, p:]  # [N,T]
        tgt_mask = response_mask(labels, self.eos_id())
        encoded = state if state is not None else self.prompt_state(model, src)  # [B,S,D]
        if t5_decoding.supports(model):
            hidden, attn = t5_decoding.teacher_forced_hidden(
                model, encoded, src.attention_mask, sequences[:, :-1], list(layers or [])
            )
            hidden = hidden[:, p - 1 :]  # [N,T,D]: the positions that predict response tokens
            logits = model.lm_head(hidden[tgt_mask])  # [M,V]
        else:
            decoder_mask = torch.ones(sequences[:, :-1].shape, dtype=torch.long, device=sequences.device)
            decoder_mask[:, p:] = tgt_mask[:, :-1]  # the prefix is always read
            # The encoder's output with every field a model reads by name (NLLB-MoE and Switch read router_logits)
            from transformers.modeling_outputs import MoEModelOutput

            with reduced_cross_attention(model, layers or []) as collected:
                out = model(
                    encoder_outputs=MoEModelOutput(last_hidden_state=encoded.repeat_interleave(repeats, dim=0)),
                    attention_mask=src.attention_mask.repeat_interleave(repeats, dim=0),
                    decoder_input_ids=sequences[:, :-1],
                    decoder_attention_mask=decoder_mask,
                    use_cache=False,
                )
            logits = out.logits[:, p - 1 :][tgt_mask]  # [M,V]
            attn = collected[0] if layers else None
        if attn is not None:
            attn = attn[:, p - 1 :]  # [N,T,S]
            mass = (attn * src.attention_mask.repeat_interleave(repeats, dim=0)[:, None, :]).sum(dim=-1)  # [N,T]
            lookback = mean_over_response(mass, tgt_mask)
        else:
            lookback = None
        return scored(logits, labels, tgt_mask, attn, lookback)

    def sft_batch(self, sources, targets, pad_id, device=None):
        input_ids, attention_mask = pad_batch(sources, pad_id)
        labels, label_mask = pad_batch(targets, pad_id)
        # The decoder inputs are the labels shifted right after the start token, as T5 and BART shift them; given
        # explicitly, since older models (FSMT) would otherwise decode from the source ids.
        start = torch.full_like(labels[:, :1], self.prefix()[0])  # [B,1]
        decoder_input_ids = torch.cat([start, labels[:, :-1]], dim=1)  # [B,T]
        labels[label_mask == 0] = IGNORE_INDEX
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "decoder_input_ids": decoder_input_ids,
            "labels": labels,
        }
        return {key: value.to(device) for key, value in batch.items()} if device is not None else batch

    def sft_logits(self, model, batch):
        """A T5's logits at the response positions only ([1,M,V]): the LM head and the loss never run over the padding
        of a batch's shorter targets (about 40% of the decoder's positions at batch 32 on TownInfo). Other models:
        their own forward's logits [B,T,V] (decoder inputs: the labels shifted right, from `sft_batch`)."""
        if not t5_decoding.supports(model):
            return model(**batch).logits, batch["labels"]
        labels = batch["labels"]  # [B,T]
        encoded = model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        hidden = model.get_decoder()(
            input_ids=model._shift_right(labels),
            encoder_hidden_states=encoded.last_hidden_state,
            encoder_attention_mask=batch["attention_mask"],
        ).last_hidden_state  # [B,T,D], final norm applied
        read = labels != IGNORE_INDEX  # [B,T]
        return model.lm_head(t5_decoding.output_scaling(model, hidden[read]))[None], labels[read][None]

    def use_sft_attention(self, model):
        """T5: `lean_attention` (the eager arithmetic in fewer passes). SDPA cannot serve: the learned relative
        position bias is an additive mask that needs a gradient, which only its math path gives."""
        if t5_decoding.supports(model):
            model.set_attn_implementation(LEAN_ATTENTION)

    def check_lengths(self, model, where, max_source_tokens, max_new_tokens):
        limit = getattr(model.config, "max_position_embeddings", None)
        if t5_decoding.supports(model) or not isinstance(limit, int):
            return  # relative position buckets: no limit
        if max_source_tokens > limit:
            raise AftInputError(
                where,
                "max_source_tokens",
                f"{max_source_tokens} exceeds the model's {limit} positions",
                f"use --max-source-tokens {limit} or less",
            )
        if max_new_tokens + len(self.prefix()) > limit:
            raise AftInputError(
                where,
                "max_new_tokens",
                f"{max_new_tokens} exceeds the model's {limit} decoder positions",
                f"use --max-new-tokens {limit - len(self.prefix())} or less",
            )


def _stepper(model: Any, encoded: torch.Tensor, attention_mask: torch.Tensor, k: int, max_steps: int):
    """A function from the last token ids [N] to the next logits [N,V], keeping the decoding state, and
    decode_loop's `keep` for that state."""
    if t5_decoding.supports(model):
        decoder = t5_decoding.T5IncrementalDecoder(model, encoded, attention_mask, k, max_steps)
        return decoder.step, decoder.keep
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache
    from transformers.modeling_outputs import MoEModelOutput

    encoded, mask = encoded.repeat_interleave(k, dim=0), attention_mask.repeat_interleave(k, dim=0)  # [N,S,D], [N,S]
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    state = {"encoded": encoded, "mask": mask}

    def step(ids: torch.Tensor) -> torch.Tensor:
        return model(
            encoder_outputs=MoEModelOutput(last_hidden_state=state["encoded"]),
            attention_mask=state["mask"],
            decoder_input_ids=ids[:, None],
            past_key_values=cache,
            use_cache=True,
        ).logits[:, -1, :]

    return step, cache_rows_keeper(cache, state)


LEAN_ATTENTION = "aft_lean"  # the eager attention's arithmetic in fewer passes (T5-family SFT)


def lean_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(scaling·q·kᵀ + position_bias + mask)·v, as transformers' eager T5 attention computes it, in fewer
    passes over the [B,H,Q,K] scores: the bias and the mask are added once, and q·kᵀ is written onto them by one
    baddbmm (the eager path writes q·kᵀ, multiplies it by T5's scaling 1.0, adds the bias, then the mask, each a
    pass, forward and backward). The learned relative position bias still gets its gradient. The SFT step of the
    `small` preset is bound by these passes and by its matmuls, not by Python (bench/sft_default.py).

    query [B,H,Q,d], key/value [B,H,K,d], position_bias [1|B,H,Q,K], attention_mask additive [B,1,1|Q,K]
    -> output [B,Q,H,d], weights [B,H,Q,K].
    """
    b, h, q_len, d = query.shape
    k_len = key.shape[-2]
    bias = position_bias
    if attention_mask is not None:
        mask = attention_mask[..., :k_len]
        bias = mask if bias is None else bias + mask  # [B,H,Q,K]
    q = query.reshape(b * h, q_len, d)
    k_t = key.reshape(b * h, k_len, d).transpose(1, 2)  # [BH,d,K]
    alpha = 1.0 if scaling is None else scaling
    if bias is None:
        scores = torch.bmm(q, k_t) if alpha == 1.0 else torch.bmm(q, k_t) * alpha
    else:
        scores = torch.baddbmm(bias.expand(b, h, q_len, k_len).reshape(b * h, q_len, k_len), q, k_t, alpha=alpha)
    probs = torch.softmax(scores, dim=-1)  # [BH,Q,K]
    if dropout > 0.0 and module.training:
        probs = torch.nn.functional.dropout(probs, p=dropout, training=True)
    out = torch.bmm(probs, value.reshape(b * h, k_len, d)).view(b, h, q_len, d).transpose(1, 2).contiguous()
    return out, probs.view(b, h, q_len, k_len)


register_attention_function(LEAN_ATTENTION, lean_attention)


def aggregate_cross_attention(cross_attentions: Sequence[torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
    """Mean over heads and the selected layers: L x [B,H,T,S] -> A [B,T,S]."""
    per_layer = [cross_attentions[index].mean(dim=1) for index in layers]  # L x [B,T,S]
    total = per_layer[0]
    for more in per_layer[1:]:
        total = total + more
    return total / len(layers)


def cross_attention_modules(model: Any) -> list[torch.nn.Module]:
    """The decoder's cross-attention modules, one per layer (T5 and BART-style decoders)."""
    decoder = model.get_decoder()
    if hasattr(decoder, "block"):  # T5, mT5, Flan-T5
        return [block.layer[1].EncDecAttention for block in decoder.block]
    for name in ("encoder_attn", "cross_attention", "cross_attn"):  # BART, Marian, Pegasus; NLLB-MoE; ProphetNet
        if hasattr(decoder, "layers") and all(hasattr(layer, name) for layer in decoder.layers):
            return [getattr(layer, name) for layer in decoder.layers]
    raise ValueError(
        f"cannot find the cross-attention layers of {type(model).__name__}; "
        "AFT reads them from T5- or BART-style decoders"
    )


_ASKS_FOR_WEIGHTS: dict[type, bool] = {}


def _asks_for_weights(module: torch.nn.Module) -> bool:
    """Whether this attention module's forward takes `output_attentions` (read once per class, not per pass)."""
    kind = type(module)
    if kind not in _ASKS_FOR_WEIGHTS:
        _ASKS_FOR_WEIGHTS[kind] = "output_attentions" in inspect.signature(module.forward).parameters
    return _ASKS_FOR_WEIGHTS[kind]


@contextmanager
def reduced_cross_attention(model: Any, layers: Sequence[int]) -> Iterator[list[torch.Tensor]]:
    """Collect A = mean over heads and `layers` of the cross-attention while a forward pass runs.

    Forward hooks on the selected layers add each layer's head mean [B,T,S] into one running sum as the layer
    runs, so the per-layer [B,H,T,S] tensors are never gathered into an output tuple. Yields a list that holds
    A, detached, once the pass has run. Needs the eager attention, which returns the weights.
    """
    total: list[torch.Tensor] = []

    def add(module: torch.nn.Module, args: Any, output: tuple) -> None:
        # T5: (out, position_bias, weights); BART: (out, weights); LED: (out, weights, cache or None)
        weights = output[-1] if torch.is_tensor(output[-1]) or len(output) < 3 else output[1]
        if weights is None:
            raise RuntimeError("the attention returned no weights; load the model with attn_implementation='eager'")
        head_mean = weights.detach().mean(dim=1)  # [B,H,T,S] -> [B,T,S]
        if total:
            total[0] += head_mean
        else:
            total.append(head_mean)

    def ask_for_weights(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return args, {**kwargs, "output_attentions": True}

    modules = cross_attention_modules(model)
    handles = [modules[i].register_forward_hook(add) for i in layers]
    # Older attention modules (LED's, FSMT's) return their weights only when asked; ask just the layers read.
    handles += [
        modules[i].register_forward_pre_hook(ask_for_weights, with_kwargs=True)
        for i in layers
        if _asks_for_weights(modules[i])
    ]
    result: list[torch.Tensor] = []
    try:
        yield result
    finally:
        for handle in handles:
            handle.remove()
    if total:
        result.append(total[0] / len(layers))
