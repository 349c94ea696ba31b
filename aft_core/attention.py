"""Cross-attention A[B,T,S] from a teacher-forced pass, and the position sets I_x (AFT_SPEC §3-4).

A[b,t,j] = mean over heads and the selected decoder layers of the cross-attention from target
position t to source position j. It is read from a teacher-forced pass over the response, never
from `generate`, and reduced as it is produced (layers summed one at a time).
"""
from __future__ import annotations

from typing import Sequence

import torch

IX_MODES = ("all", "history", "salient")


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


def position_mask(mode: str, attention_mask: torch.Tensor, src_turn: torch.Tensor, src_is_tag: torch.Tensor,
                  src_is_salient: torch.Tensor) -> torch.Tensor:
    """I_x as a bool mask [B,S].

    all:      every non-pad source position (then sum_j A[t,j] = 1 and coverage = 1/|I_x|);
    history:  tokens of earlier turns only: not the current (last) user turn, not speaker tags, not EOS;
    salient:  tokens inside annotated slot values / entity mentions of any source turn.
    """
    real = attention_mask.bool()  # [B,S]
    if mode == "all":
        return real
    if mode == "history":
        current = src_turn.masked_fill(~real, -1).max(dim=1, keepdim=True).values  # [B,1]
        return real & (src_turn >= 0) & (src_turn < current) & ~src_is_tag.bool()
    if mode == "salient":
        return real & src_is_salient.bool()
    raise ValueError(f"unknown I_x mode {mode!r}; use one of {IX_MODES}")


def response_mask(labels: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True on response tokens up to and including the first EOS: [N,T] -> [N,T] bool.

    Position-based, so a sampled pad id inside a response is still counted as a token.
    """
    is_eos = labels == eos_id
    eos_before = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # an EOS strictly before t
    return ~eos_before


def teacher_forced_pass(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, sequences: torch.Tensor,
                        repeats: int, eos_id: int, layers: Sequence[int] | None) -> dict[str, torch.Tensor | None]:
    """Score responses teacher-forced: one encoder pass per prompt, reused for its `repeats` responses.

    input_ids/attention_mask [B,S]; sequences [B*repeats, 1+T] starting with the decoder start token
    (as `generate` returns them). Returns logits [N,T,V], labels [N,T], tgt_mask [N,T] and, when
    `layers` is given, A [N,T,S] (detached).
    """
    labels = sequences[:, 1:]
    tgt_mask = response_mask(labels, eos_id)  # [N,T]
    decoder_mask = torch.ones_like(labels)
    decoder_mask[:, 1:] = tgt_mask[:, :-1]  # position 0 is the decoder start token (= pad id): keep it
    encoded = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B,S,D]
    out = model(encoder_outputs=(encoded.repeat_interleave(repeats, dim=0),),
                attention_mask=attention_mask.repeat_interleave(repeats, dim=0),
                decoder_input_ids=sequences[:, :-1], decoder_attention_mask=decoder_mask,
                output_attentions=layers is not None, use_cache=False)
    attn = aggregate_cross_attention(out.cross_attentions, layers).detach() if layers is not None else None
    return {"logits": out.logits, "labels": labels, "tgt_mask": tgt_mask, "attn": attn}
