"""Reward-softmax weighted MLE with KL anchoring (AFT_SPEC §5, steps 2 and 4-6).

Shapes: rewards and log-likelihoods per prompt are [B,K]; token-level tensors are [N,T] with
N = B·K sequences (samples of one prompt adjacent); logits [N,T,V].
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("paper", "k3", "full")


def zscore(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """R̃_k = (R_k − μ_x)/(σ_x + ε) over the K candidates of each prompt (population σ)   [B,K] -> [B,K]"""
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, unbiased=False, keepdim=True)
    return (rewards - mean) / (std + eps)


def softmax_weights(rewards: torch.Tensor, eta: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """w_k = softmax_k(R̃_k / η), detached; equal rewards give 1/K   [B,K] -> [B,K]"""
    return torch.softmax(zscore(rewards.detach(), eps) / eta, dim=-1).detach()


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p_θ(y_t | y_<t, x) for every position   [N,T,V], [N,T] -> [N,T]"""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def unpack(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scatter per-position values [M] back to the positions where mask [N,T] is true; 0 elsewhere   -> [N,T]"""
    return torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(mask, values)


def sequence_logprob(token_logp: torch.Tensor, tgt_mask: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """log π(y|x) = Σ_t log p(y_t | y_<t, x) over target tokens (`mean`: divided by |y|)   [N,T] -> [N]"""
    total = (token_logp * tgt_mask).sum(dim=-1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / tgt_mask.sum(dim=-1).clamp(min=1)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def wmle_loss(weights: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """L_WMLE = −Σ_k w_k · log π_θ(y_k|x), per prompt   [B,K], [B,K] -> [B]"""
    return -(weights.detach() * logp).sum(dim=-1)


def kl_term(
    estimator: str,
    policy_token_logp: torch.Tensor,
    ref_token_logp: torch.Tensor,
    tgt_mask: torch.Tensor,
    policy_logits: torch.Tensor | None = None,
    ref_logits: torch.Tensor | None = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """Per-sequence KL-anchoring term towards the frozen reference π_ref   -> [N]

    paper: log π_θ(y|x) − log π_ref(y|x) (as written; gradient through log π_θ, ~0 in expectation
           on-policy, in practice pushes every sampled sequence's likelihood down: the Flash Flood);
    k3:    Σ_t exp(r_t) − r_t − 1 with r_t = log p_ref − log p_θ (non-negative, unbiased);
    full:  Σ_t KL(p_θ(·|y_<t,x) ‖ p_ref(·|y_<t,x)) exactly over the vocabulary (needs both logits,
           [N,T,V], or [M,V] for just the M positions where tgt_mask is true, in row-major order).
    Token sums follow `reduction` like `sequence_logprob`. The prompt's term averages this over K.
    """
    ref_token_logp = ref_token_logp.detach()
    if estimator == "paper":
        per_token = policy_token_logp - ref_token_logp
    elif estimator == "k3":
        r = ref_token_logp - policy_token_logp
        per_token = torch.exp(r) - r - 1.0
    elif estimator == "full":
        if policy_logits is None or ref_logits is None:
            raise ValueError("the 'full' KL estimator needs policy_logits and ref_logits")
        logp = torch.log_softmax(policy_logits.float(), dim=-1)
        logq = torch.log_softmax(ref_logits.detach().float(), dim=-1)
        per_token = (logp.exp() * (logp - logq)).sum(dim=-1)  # [N,T] or [M]
        if per_token.dim() == 1:
            per_token = unpack(per_token, tgt_mask.bool())
    else:
        raise ValueError(f"unknown kl_estimator {estimator!r}; use one of {KL_ESTIMATORS}")
    return sequence_logprob(per_token, tgt_mask, reduction)


def aft_loss(weights: torch.Tensor, logp: torch.Tensor, kl: torch.Tensor, eta_kl: float) -> dict[str, torch.Tensor]:
    """L = mean over prompts of [ −Σ_k w_k·log π_θ(y_k|x) + η_kl · (1/K)·Σ_k KL_k ]   [B,K] x3 -> scalars"""
    wmle = wmle_loss(weights, logp)  # [B]
    kl_part = eta_kl * kl.mean(dim=-1)  # [B]
    return {"loss": (wmle + kl_part).mean(), "wmle": wmle.mean(), "kl": kl_part.mean()}


def per_token_kl(policy_token_logp: torch.Tensor, ref_token_logp: torch.Tensor, tgt_mask: torch.Tensor) -> float:
    """KL(π_θ ‖ π_ref) per token, estimated on the sampled tokens: mean_t [log p_θ(y_t) − log p_ref(y_t)]

    Shapes: [N,T] -> scalar.

    Unbiased on on-policy samples; what the adaptive controller tracks (no gradient).
    """
    mask = tgt_mask.float()
    return float(((policy_token_logp.detach().float() - ref_token_logp.float()) * mask).sum() / mask.sum().clamp(min=1))


def adaptive_kl_update(eta_kl: float, kl: float, target: float, n_steps: int, horizon: int) -> float:
    """The adaptive KL controller of RL4LMs / OpenRLHF (AFT_SPEC §5.8):

        e = clip((KL − target) / target, −0.2, 0.2)
        η_kl ← η_kl · (1 + e · n_steps / horizon)

    KL is the measured per-token KL of this step's samples, n_steps the number of sequences it scored
    (B·K) and horizon how many sequences it takes to move η_kl by the full error. A KL above the target
    raises η_kl (a stronger anchor); below it, η_kl falls.
    """
    if target <= 0 or horizon <= 0:
        raise ValueError(f"the adaptive KL controller needs target > 0 and horizon > 0, got {target} and {horizon}")
    error = min(max((kl - target) / target, -0.2), 0.2)
    return eta_kl * (1.0 + error * n_steps / horizon)
