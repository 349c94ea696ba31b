"""The yardstick: one AFT step written the obvious way (issue 6). Not used by the product.

Same mathematics as `aft_core.aft.aft_step_loss` (the same equation functions), but:
- each of the K candidates comes from its own `generate` call with `output_attentions=True`;
- A is read from generation (step t's cross-attention over the source), with every layer's full
  per-step tensors kept until the rewards are computed;
- each candidate gets its own policy forward pass (encoder included) and its own reference pass
  under `no_grad`, and all K graphs stay alive until the single backward.
Under eval mode (no dropout) step t's cross-attention in generation equals the teacher-forced
one, so the rewards agree with the product's up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch

from aft_core.config import AFTConfig
from aft_core.data.batching import SourceBatch
from aft_core.loss import aft_loss, kl_term, sequence_logprob, softmax_weights, token_logprobs
from aft_core.models import response_mask
from aft_core.models.seq2seq import aggregate_cross_attention
from aft_core.reward import haca_reward
from aft_core.timing import untimed


def reference_samples(
    policy: Any,
    src: SourceBatch,
    cfg: AFTConfig,
    layers: Sequence[int],
    timer: Callable[[str], ContextManager] = untimed,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """K separate sampling calls. Returns K sequences [B,1+T_k] and K attention maps A_k [B,T_k,S]."""
    sequences, attentions = [], []
    for _ in range(cfg.k):
        with timer("sampling"), torch.no_grad():
            out = policy.generate(
                input_ids=src.input_ids,
                attention_mask=src.attention_mask,
                do_sample=True,
                temperature=cfg.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=cfg.max_new_tokens,
                output_attentions=True,
                return_dict_in_generate=True,
                use_cache=True,
            )
        with timer("reward"):
            # out.cross_attentions: T_k steps x L layers x [B,H,1,S], all kept
            steps = [aggregate_cross_attention(per_layer, layers) for per_layer in out.cross_attentions]
            attentions.append(torch.cat(steps, dim=1))  # [B,T_k,S]
        sequences.append(out.sequences)
        del out
    return sequences, attentions


def reference_score(
    policy: Any,
    reference: Any,
    src: SourceBatch,
    sequences: Sequence[torch.Tensor],
    attentions: Sequence[torch.Tensor],
    cfg: AFTConfig,
    pad_id: int,
    eos_id: int,
    timer: Callable[[str], ContextManager] = untimed,
) -> dict[str, torch.Tensor]:
    """Per-candidate rewards, policy passes (with grad) and reference passes; the loss over all K."""
    hist = src.mask(cfg.ix_mode)  # [B,S]
    rewards, logps, kls = [], [], []
    for seq, attn in zip(sequences, attentions, strict=True):
        labels = seq[:, 1:]  # [B,T_k]
        tgt_mask = response_mask(labels, eos_id)
        decoder_mask = torch.ones_like(labels)
        decoder_mask[:, 1:] = tgt_mask[:, :-1]
        with timer("reward"):
            rewards.append(
                haca_reward(
                    attn, labels, tgt_mask, hist, cfg.alpha, cfg.beta, cfg.gamma, cfg.repeat_n, (pad_id, eos_id)
                )
            )
        with timer("teacher_forced"):
            out = policy(
                input_ids=src.input_ids,
                attention_mask=src.attention_mask,
                decoder_input_ids=seq[:, :-1],
                decoder_attention_mask=decoder_mask,
                use_cache=False,
            )
            token_logp = token_logprobs(out.logits, labels)  # [B,T_k]
        with timer("reference"), torch.no_grad():
            ref = reference(
                input_ids=src.input_ids,
                attention_mask=src.attention_mask,
                decoder_input_ids=seq[:, :-1],
                decoder_attention_mask=decoder_mask,
                use_cache=False,
            )
            ref_token_logp = token_logprobs(ref.logits, labels)
        with timer("loss"):
            logps.append(sequence_logprob(token_logp, tgt_mask, cfg.logprob_reduction))
            kls.append(
                kl_term(
                    cfg.kl_estimator,
                    token_logp,
                    ref_token_logp,
                    tgt_mask,
                    out.logits,
                    ref.logits,
                    cfg.logprob_reduction,
                )
            )
    with timer("loss"):
        reward = torch.stack(rewards, dim=1)  # [B,K]
        weights = softmax_weights(reward, cfg.eta)
        parts = aft_loss(weights, torch.stack(logps, dim=1), torch.stack(kls, dim=1), cfg.eta_kl)
    parts["rewards"] = reward.detach()
    return parts


def reference_step_loss(
    policy: Any,
    reference: Any,
    src: SourceBatch,
    cfg: AFTConfig,
    layers: Sequence[int],
    pad_id: int,
    eos_id: int,
    timer: Callable[[str], ContextManager] = untimed,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """One AFT step's loss the obvious way; also returns the K sampled sequences."""
    sequences, attentions = reference_samples(policy, src, cfg, layers, timer)
    return reference_score(policy, reference, src, sequences, attentions, cfg, pad_id, eos_id, timer), sequences


def stack_candidates(sequences: Sequence[torch.Tensor], pad_id: int) -> torch.Tensor:
    """K sequences [B,1+T_k] -> [B*K, 1+max T_k], right-padded, the K samples of a prompt adjacent."""
    width = max(s.shape[1] for s in sequences)
    padded = [torch.nn.functional.pad(s, (0, width - s.shape[1]), value=pad_id) for s in sequences]
    return torch.stack(padded, dim=1).flatten(0, 1)
