"""The T5 decoder for AFT's two decoder passes: incremental decoding and the teacher-forced pass.

Both do the arithmetic of the Hugging Face T5 decoder (checked against it by
tests/test_fast_step.py) with the K responses of a prompt sharing that prompt's encoder states:
the cross-attention keys and values are projected once per *prompt* and a prompt's K query
sequences are batched against them, instead of copying the encoder states K times and
projecting every copy. In the teacher-forced pass that removes K-1 of every K cross-attention
key/value activations kept for the backward pass.

Incremental decoding of a small model on a CPU is bound by per-step overhead, not arithmetic (a
KV-cached step through the Hugging Face forward of the `small` preset, 32 rows, spent about 4.7 ms,
most of it in Python and dispatch; this decoder's step about 3 ms, sampling included), so
the incremental decoder also keeps self-attention keys and values in preallocated buffers,
computes every step's relative position bias once, and rebuilds no masks, cache objects or
output records between steps. Dropout is not applied (AFT scores and samples in eval mode).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from aft_core.models.family import checkpointing


def supports(model: Any) -> bool:
    """Whether this decoder can run `model` (a T5, mT5 or Flan-T5 encoder-decoder)."""
    return getattr(model.config, "model_type", None) in ("t5", "mt5") and hasattr(model.get_decoder(), "block")


class T5IncrementalDecoder:
    """Decoder state for N = B·K sequences over B encoded prompts; `step(ids)` returns the next logits."""

    def __init__(self, model: Any, encoded: torch.Tensor, attention_mask: torch.Tensor, k: int, max_steps: int):
        decoder = model.get_decoder()
        self.model, self.decoder, self.k, self.max_steps = model, decoder, k, max_steps
        self.b = encoded.shape[0]  # encoded: [B,S,D]
        self.n = self.b * k
        first = decoder.block[0].layer[0].SelfAttention
        self.heads, self.d_kv = first.n_heads, first.key_value_proj_dim
        self.cross_mask = _source_bias(attention_mask, encoded.dtype)  # [B,1,1,S]
        self.cross_kv = [_cross_keys_values(block.layer[1].EncDecAttention, encoded) for block in decoder.block]
        shape = (self.n, self.heads, max_steps, self.d_kv)
        self.self_kv = [(encoded.new_empty(shape), encoded.new_empty(shape)) for _ in decoder.block]
        self.position_bias = first.compute_bias(max_steps, max_steps, device=encoded.device)  # [1,H,T,T]
        self.t = 0

    def keep(self, rows: torch.Tensor) -> bool:
        """Keep only `rows` [N'] of the state (decode_loop's `keep`); with K > 1 a prompt's K rows share its cross
        keys and values, so the state is left whole."""
        if self.k != 1:
            return False
        self.b = self.n = len(rows)
        self.cross_mask = self.cross_mask[rows]
        self.cross_kv = [(k[rows], v[rows]) for k, v in self.cross_kv]
        self.self_kv = [(k[rows], v[rows]) for k, v in self.self_kv]
        return True

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed token ids [N] at position t; returns logits [N,V] for position t+1."""
        if self.t >= self.max_steps:
            raise RuntimeError(f"the decoder was sized for {self.max_steps} steps")
        t, n, h, dk = self.t, self.n, self.heads, self.d_kv
        hidden = self.decoder.embed_tokens(ids)[:, None, :]  # [N,1,D]
        bias = self.position_bias[:, :, t : t + 1, : t + 1]  # [1,H,1,t+1]
        for block, (cross_k, cross_v), (cache_k, cache_v) in zip(
            self.decoder.block, self.cross_kv, self.self_kv, strict=True
        ):
            self_layer, cross_layer = block.layer[0], block.layer[1]
            attn = self_layer.SelfAttention
            x = self_layer.layer_norm(hidden)
            q = attn.q(x).view(n, 1, h, dk).transpose(1, 2)  # [N,H,1,dk]
            cache_k[:, :, t : t + 1] = attn.k(x).view(n, 1, h, dk).transpose(1, 2)
            cache_v[:, :, t : t + 1] = attn.v(x).view(n, 1, h, dk).transpose(1, 2)
            context, _ = _attend(
                q, cache_k[:, :, : t + 1], cache_v[:, :, : t + 1], bias, need_weights=False
            )  # [N,H,1,dk]
            hidden = hidden + attn.o(context.transpose(1, 2).reshape(n, 1, h * dk))

            attn = cross_layer.EncDecAttention
            x = cross_layer.layer_norm(hidden)
            q = attn.q(x).view(self.b, self.k, h, dk).transpose(1, 2)  # [B,H,K,dk]: a prompt's K queries together
            context, _ = _attend(q, cross_k, cross_v, self.cross_mask, need_weights=False)  # [B,H,K,dk]
            hidden = hidden + attn.o(context.transpose(1, 2).reshape(n, 1, h * dk))

            hidden = block.layer[-1](hidden)  # feed-forward with its own norm and residual
        self.t += 1
        return self.model.lm_head(_output_states(self.model, hidden))[:, 0, :]


def teacher_forced_hidden(
    model: Any, encoded: torch.Tensor, attention_mask: torch.Tensor, decoder_ids: torch.Tensor, layers: list[int]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The decoder's output states for given decoder inputs, and A from the selected layers.

    encoded [B,S,D] and attention_mask [B,S] per prompt; decoder_ids [N,T] with N = B·K (a prompt's
    K sequences adjacent). Returns hidden [N,T,D] (final norm and output scaling applied: the
    input of lm_head) and A [N,T,S] (mean over heads and `layers`, detached) or None when `layers`
    is empty. Causal self-attention only: positions after a sequence's EOS are computed but never
    read by earlier positions, and callers drop them.
    """
    decoder = model.get_decoder()
    b, s, _ = encoded.shape
    n, t = decoder_ids.shape
    k = n // b
    first = decoder.block[0].layer[0].SelfAttention
    h, dk = first.n_heads, first.key_value_proj_dim
    causal = torch.ones(t, t, dtype=torch.bool, device=encoded.device).tril()
    self_bias = first.compute_bias(t, t, device=encoded.device).masked_fill(
        ~causal, torch.finfo(encoded.dtype).min
    )  # [1,H,T,T]
    cross_mask = _source_bias(attention_mask, encoded.dtype)  # [B,1,1,S]
    hidden = decoder.embed_tokens(decoder_ids)  # [N,T,D]
    total = None
    recompute = checkpointing(model)  # gradient checkpointing: each block recomputed in the backward pass

    def run_block(
        block: Any, read: bool, hidden: torch.Tensor, encoded: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self_layer, cross_layer = block.layer[0], block.layer[1]
        attn = self_layer.SelfAttention
        x = self_layer.layer_norm(hidden)
        q, key, value = (proj(x).view(n, t, h, dk).transpose(1, 2) for proj in (attn.q, attn.k, attn.v))  # [N,H,T,dk]
        context, _ = _attend(q, key, value, self_bias, need_weights=False)  # [N,H,T,dk]
        hidden = hidden + attn.o(context.transpose(1, 2).reshape(n, t, h * dk))

        attn = cross_layer.EncDecAttention
        x = cross_layer.layer_norm(hidden)
        q = attn.q(x).view(b, k * t, h, dk).transpose(1, 2)  # [B,H,K·T,dk]: a prompt's K sequences share its keys
        key, value = _cross_keys_values(attn, encoded)  # [B,H,S,dk]
        context, probs = _attend(q, key, value, cross_mask, need_weights=read)  # [B,H,K·T,dk]
        head_mean = None
        if read:  # on a CPU the explicit product returns weights for unread layers too: only read ones count
            assert probs is not None  # _attend returns the weights whenever they are asked for
            head_mean = probs.detach().float().mean(dim=1).view(n, t, s)  # [B,H,K·T,S] -> [N,T,S]
        hidden = hidden + attn.o(context.transpose(1, 2).reshape(n, t, h * dk))
        return block.layer[-1](hidden), head_mean  # feed-forward with its own norm and residual

    for index, block in enumerate(decoder.block):
        if recompute:
            hidden, head_mean = checkpoint(run_block, block, index in layers, hidden, encoded, use_reentrant=False)
        else:
            hidden, head_mean = run_block(block, index in layers, hidden, encoded)
        if head_mean is not None:
            total = head_mean if total is None else total + head_mean
    return _output_states(model, hidden), (total / len(layers) if total is not None else None)


def _source_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask as in the eager attention: 0 on real source positions, the dtype's minimum on padding.

    Shapes: [B,S] -> [B,1,1,S]."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def _cross_keys_values(attn: Any, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A cross-attention layer's keys and values, once per prompt   [B,S,D] -> 2 x [B,H,S,dk]"""
    b, s, _ = encoded.shape
    shape = (b, s, attn.n_heads, attn.key_value_proj_dim)
    return attn.k(encoded).view(shape).transpose(1, 2), attn.v(encoded).view(shape).transpose(1, 2)


def _output_states(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The decoder's final norm and T5's output scaling: what lm_head reads."""
    return output_scaling(model, model.get_decoder().final_layer_norm(hidden))


def output_scaling(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """T5's scaling of the normed decoder output before lm_head (d_model^-0.5 where the config asks for it)."""
    config = model.config
    if getattr(config, "scale_decoder_outputs", config.tie_word_embeddings):
        hidden = hidden * (model.model_dim**-0.5)
    return hidden


def _attend(
    q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, need_weights: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q·kᵀ + bias)·v, unscaled as in T5: [..,Q,dk], [..,K,dk], [..,K,dk], additive bias -> [..,Q,dk].

    Where the weights are not read and a fused kernel is available (a GPU), scaled_dot_product_attention
    runs instead of the explicit product and never materialises them.
    """
    if not need_weights and fused_attention(q.device):
        return torch.nn.functional.scaled_dot_product_attention(
            q, key, value, attn_mask=bias.to(q.dtype), scale=1.0
        ), None
    probs = torch.softmax((q @ key.transpose(-1, -2) + bias).float(), dim=-1).to(q.dtype)
    return probs @ value, probs


def fused_attention(device: torch.device) -> bool:
    """Use SDPA for attention whose weights are not read: on a GPU only.

    On this CPU it was not faster for these shapes."""
    return device.type == "cuda"
