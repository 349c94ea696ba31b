"""Cross-attention A[B,T,S] from a teacher-forced pass (AFT_SPEC §3); the position sets I_x are data/batching's.

A[b,t,j] = mean over heads and the selected decoder layers of the cross-attention from target
position t to source position j. It is read from a teacher-forced pass over the response, never
from `generate`, and reduced as it is produced: forward hooks on the selected layers add each
layer's head mean into one [B,T,S] sum, so no per-layer attention tuple is ever gathered.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

from aft_core import decoding
from aft_core.loss import token_logprobs, unpack
from aft_core.modeling import encode

def parse_layers(spec: str, num_layers: int) -> list[int]:
    """`all`, `last`, or comma-separated decoder-layer indices (negative counts from the end)."""
    if spec == "all":
        return list(range(num_layers))
    if spec == "last":
        return [num_layers - 1]
    try:
        picked = [int(p) % num_layers if -num_layers <= int(p) < num_layers else None for p in spec.split(",")]
    except ValueError:
        picked = [None]
    if None in picked:
        raise ValueError(f"layers must be 'all', 'last' or indices in [-{num_layers}, {num_layers}), got {spec!r}")
    return sorted(set(picked))


def aggregate_cross_attention(cross_attentions: Sequence[torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
    """Mean over heads and the selected layers: L x [B,H,T,S] -> A [B,T,S]."""
    total = None
    for index in layers:
        per_layer = cross_attentions[index].mean(dim=1)  # [B,T,S]
        total = per_layer if total is None else total + per_layer
    return total / len(layers)


def cross_attention_modules(model: Any) -> list[torch.nn.Module]:
    """The decoder's cross-attention modules, one per layer (T5 and BART-style decoders)."""
    decoder = model.get_decoder()
    if hasattr(decoder, "block"):  # T5, mT5, Flan-T5
        return [block.layer[1].EncDecAttention for block in decoder.block]
    if hasattr(decoder, "layers") and all(hasattr(layer, "encoder_attn") for layer in decoder.layers):  # BART, Marian, Pegasus
        return [layer.encoder_attn for layer in decoder.layers]
    raise ValueError(f"cannot find the cross-attention layers of {type(model).__name__}; "
                     "AFT reads them from T5- or BART-style decoders")


@contextmanager
def reduced_cross_attention(model: Any, layers: Sequence[int]) -> Iterator[list[torch.Tensor]]:
    """Collect A = mean over heads and `layers` of the cross-attention while a forward pass runs.

    Forward hooks on the selected layers add each layer's head mean [B,T,S] into one running sum
    as the layer runs, so the per-layer [B,H,T,S] tensors are never gathered into an output tuple
    (autograd keeps them only where the backward pass needs them). Yields a list that holds A,
    detached, once the pass has run. Needs the eager attention, which returns the weights.
    """
    total: list[torch.Tensor] = []

    def add(module: torch.nn.Module, args: Any, output: tuple) -> None:
        weights = output[-1]  # T5: (out, position_bias, weights); BART: (out, weights)
        if weights is None:
            raise RuntimeError("the attention returned no weights; load the model with attn_implementation='eager'")
        head_mean = weights.detach().mean(dim=1)  # [B,H,T,S] -> [B,T,S]
        if total:
            total[0] += head_mean
        else:
            total.append(head_mean)

    modules = cross_attention_modules(model)
    handles = [modules[i].register_forward_hook(add) for i in layers]
    result: list[torch.Tensor] = []
    try:
        yield result
    finally:
        for handle in handles:
            handle.remove()
    if total:
        result.append(total[0] / len(layers))


def response_mask(labels: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True on response tokens up to and including the first EOS: [N,T] -> [N,T] bool.

    Position-based, so a sampled pad id inside a response is still counted as a token.
    """
    is_eos = labels == eos_id
    eos_before = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # an EOS strictly before t
    return ~eos_before


def teacher_forced_pass(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, sequences: torch.Tensor,
                        repeats: int, eos_id: int, layers: Sequence[int] | None,
                        encoded: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
    """Score responses teacher-forced: one encoder pass per prompt, reused for its `repeats` responses.

    input_ids/attention_mask [B,S]; sequences [B*repeats, 1+T] starting with the decoder start token
    (as `generate_ids` returns them); `encoded` [B,S,D], the prompts' encoder states when already
    computed. Returns labels [N,T], tgt_mask [N,T], token_logp [N,T] (log p(y_t | y_<t, x), 0 off
    the response), logits [M,V] for the M response positions only (tgt_mask's true entries in
    row-major order: padding after EOS is trimmed before the vocabulary projection) and, when
    `layers` is given, A [N,T,S] (detached, reduced while the pass runs).
    """
    labels = sequences[:, 1:]
    tgt_mask = response_mask(labels, eos_id)  # [N,T]
    if encoded is None:
        encoded = encode(model, input_ids, attention_mask)  # [B,S,D]
    if decoding.supports(model):
        hidden, attn = decoding.teacher_forced_hidden(model, encoded, attention_mask, sequences[:, :-1], list(layers or []))
        logits = model.lm_head(hidden[tgt_mask])  # [M,V]
    else:
        decoder_mask = torch.ones_like(labels)
        decoder_mask[:, 1:] = tgt_mask[:, :-1]  # position 0 is the decoder start token: keep it
        with reduced_cross_attention(model, layers or []) as collected:
            out = model(encoder_outputs=(encoded.repeat_interleave(repeats, dim=0),),
                        attention_mask=attention_mask.repeat_interleave(repeats, dim=0),
                        decoder_input_ids=sequences[:, :-1], decoder_attention_mask=decoder_mask, use_cache=False)
        logits = out.logits[tgt_mask]  # [M,V]
        attn = collected[0] if layers else None
    token_logp = unpack(token_logprobs(logits, labels[tgt_mask]), tgt_mask)  # [N,T]
    return {"logits": logits, "token_logp": token_logp, "labels": labels, "tgt_mask": tgt_mask, "attn": attn}
