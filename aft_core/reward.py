"""The HACA reward and its parts (AFT_SPEC §4); also the evaluation metrics of Table 1.

Shapes: attn [B,T,S] (rows over target positions, columns over source positions), tgt_mask [B,T]
bool (true on real target tokens), hist_mask [B,S] bool (true on I_x), token_ids [B,T].
Rows or sequences with nothing to average over give 0, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _counts(tgt_mask: torch.Tensor, hist_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n_y = tgt_mask.sum(dim=1).clamp(min=1).to(torch.float32)  # [B]
    n_i = hist_mask.sum(dim=1).clamp(min=1).to(torch.float32)  # [B]
    return n_y, n_i


def coverage(attn: torch.Tensor, tgt_mask: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
    """coverage(x,y) = 1/(|y|·|I_x|) · Σ_t Σ_{j∈I_x} A[t,j]   -> [B]"""
    attn = attn.to(torch.float32)
    mass = (attn * hist_mask[:, None, :]).sum(dim=-1)  # [B,T]
    n_y, n_i = _counts(tgt_mask, hist_mask)
    return (mass * tgt_mask).sum(dim=1) / (n_y * n_i)


def focus(attn: torch.Tensor, tgt_mask: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
    """focus(x,y) = −1/|y| · Σ_t H_t,  H_t = −Σ_{j∈I_x} A[t,j]·log A[t,j]   -> [B]

    Nats; 0·log 0 = 0; raw weights, not renormalised over I_x; closer to zero = more focused.
    """
    a = (attn.to(torch.float32) * hist_mask[:, None, :]).clamp(min=0.0)  # [B,T,S]
    plogp = torch.where(a > 0, a * torch.log(a.clamp(min=torch.finfo(torch.float32).tiny)), torch.zeros_like(a))
    entropy = -plogp.sum(dim=-1)  # H_t: [B,T]
    n_y, _ = _counts(tgt_mask, hist_mask)
    return -(entropy * tgt_mask).sum(dim=1) / n_y


def repeat_penalty(
    token_ids: torch.Tensor, tgt_mask: torch.Tensor, n: int = 3, special_ids: Sequence[int] = (0, 1)
) -> torch.Tensor:
    """repeat(y) = 1 − (#distinct n-grams of y)/(#n-grams of y)   -> [B]

    Over token ids where tgt_mask is true, with `special_ids` (pad and EOS; T5's 0 and 1 by
    default) excluded; 0 when y has fewer than n tokens.
    """
    special = torch.tensor(list(special_ids), device=token_ids.device)
    keep = tgt_mask.bool() & ~torch.isin(token_ids, special)  # [B,T]
    out = torch.zeros(token_ids.shape[0], dtype=torch.float32)
    for b, (ids, k) in enumerate(zip(token_ids.tolist(), keep.tolist(), strict=True)):
        seq = [i for i, use in zip(ids, k, strict=True) if use]
        grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
        if grams:
            out[b] = 1.0 - len(set(grams)) / len(grams)
    return out.to(token_ids.device)


def haca_reward(
    attn: torch.Tensor,
    token_ids: torch.Tensor,
    tgt_mask: torch.Tensor,
    hist_mask: torch.Tensor,
    alpha: float,
    beta: float,
    gamma: float,
    n: int = 3,
    special_ids: Sequence[int] = (0, 1),
) -> torch.Tensor:
    """R(x,y) = α·coverage + β·focus − γ·repeat   -> [B]"""
    return (
        alpha * coverage(attn, tgt_mask, hist_mask)
        + beta * focus(attn, tgt_mask, hist_mask)
        - gamma * repeat_penalty(token_ids, tgt_mask, n, special_ids)
    )


def trajectory_reward(focus_now: torch.Tensor, focus_before: torch.Tensor, turns_before: torch.Tensor) -> torch.Tensor:
    """R_traj(h_i, y) = (Σ_{j<i, last w−1} focus_j + focus(h_i, y)) / (n_before + 1)   [N],[N],[N] -> [N]

    AFT_SPEC §9's trajectory term: the mean focus over the conversation's last w system turns, y the newest.
    `focus_before` is the sum of focus over the (at most w−1) system turns before y, as they were scored when
    they were chosen; `turns_before` how many there are (0 at a conversation's first system turn, where the term
    is focus(h_1, y) itself). A reply is credited for keeping attention focused across turns, not only now.
    """
    return (focus_before + focus_now) / (turns_before.to(focus_now.dtype) + 1.0)


def task_reward(success: torch.Tensor, turns_to_end: torch.Tensor, discount: float) -> torch.Tensor:
    """R_task(h_i, y) = λ^(n−1) · success   [N],[N] -> [N]

    AFT_SPEC §9's task term, multiturn-aware as CollabLLM defines it: the conversation is rolled forward from the
    candidate y by the current policy (greedy) and the simulated user; n is the number of system turns from y
    (n = 1: the user ended the conversation right after y) to the end, and `success` is 1 when it ended within
    the horizon in success (Inform, every requested attribute, the booking), else 0. A clarifying question that
    leads to success two turns later earns λ.
    """
    return success.to(torch.float32) * discount ** (turns_to_end.to(torch.float32) - 1.0).clamp(min=0.0)
