"""Every AFT formula against values worked by hand, plus hypothesis properties (finite for any valid input)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aft_core.data.batching import position_mask
from aft_core.loss import aft_loss, kl_term, sequence_logprob, softmax_weights, token_logprobs, wmle_loss, zscore
from aft_core.models import parse_layers, response_mask
from aft_core.models.seq2seq import aggregate_cross_attention
from aft_core.reward import coverage, focus, haca_reward, repeat_penalty, task_reward, trajectory_reward


def rows(*r):
    return torch.tensor([list(r)], dtype=torch.float32)  # one sequence: [1,T,S]


def test_coverage_by_hand():
    attn = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]])  # [1,2,3]
    tgt = torch.tensor([[True, True]])
    hist = torch.tensor([[True, True, False]])
    # (0.8 + 0.2) / (|y|=2 · |I|=2)
    assert coverage(attn, tgt, hist).item() == pytest.approx(0.25)


def test_coverage_under_all_is_one_over_ix_whatever_the_attention():
    torch.manual_seed(0)
    attn = torch.softmax(torch.randn(3, 5, 7) * 4, dim=-1)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    attn = attn * mask[:, None, :]
    attn = attn / attn.sum(-1, keepdim=True)
    hist = position_mask(
        "all",
        mask,
        torch.zeros(3, 7, dtype=torch.long),
        torch.zeros(3, 7, dtype=torch.bool),
        torch.zeros(3, 7, dtype=torch.bool),
        torch.zeros(3, 7, dtype=torch.bool),
    )
    cov = coverage(attn, torch.ones(3, 5, dtype=torch.bool), hist)
    assert torch.allclose(cov, torch.tensor([1 / 7, 1 / 5, 1 / 7]))


def test_focus_by_hand_and_uniform_row():
    m = 4
    uniform = torch.full((1, 1, m), 1 / m)
    assert focus(uniform, torch.tensor([[True]]), torch.ones(1, m, dtype=torch.bool)).item() == pytest.approx(
        -math.log(m)
    )
    attn = torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]])
    # H_1 = log 2, H_2 = 0 (0·log 0 = 0) -> focus = -(log 2)/2
    assert focus(attn, torch.tensor([[True, True]]), torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx(
        -math.log(2) / 2
    )
    # Raw weights over I_x, not renormalised: only column 0 in I_x -> H_1 = -0.5 log 0.5, H_2 = 0
    assert focus(attn, torch.tensor([[True, True]]), torch.tensor([[True, False, False]])).item() == pytest.approx(
        -(0.5 * math.log(2)) / 2
    )


def test_repeat_penalty_by_hand():
    mask = torch.ones(1, 7, dtype=torch.bool)
    assert repeat_penalty(torch.tensor([[5, 6, 7, 8, 9, 10, 1]]), mask).item() == 0.0  # no repeated 3-gram
    # 5 6 5 6 5 6 (EOS excluded): 3-grams 565,656,565,656 -> 2 distinct of 4 -> 0.5
    assert repeat_penalty(torch.tensor([[5, 6, 5, 6, 5, 6, 1]]), mask).item() == pytest.approx(0.5)
    assert repeat_penalty(torch.tensor([[5, 6, 1, 0]]), torch.ones(1, 4, dtype=torch.bool)).item() == 0.0  # < n tokens
    masked = torch.tensor([[True, True, True, True, False, False, False]])
    assert repeat_penalty(torch.tensor([[5, 5, 5, 5, 5, 5, 5]]), masked).item() == pytest.approx(0.5)


def test_haca_reward_combines_parts():
    attn = torch.tensor([[[0.5, 0.5], [1.0, 0.0]]])
    tgt = torch.ones(1, 2, dtype=torch.bool)
    hist = torch.ones(1, 2, dtype=torch.bool)
    ids = torch.tensor([[5, 6]])
    expected = 2.0 * 0.5 + 3.0 * (-math.log(2) / 2) - 0.7 * 0.0
    assert haca_reward(attn, ids, tgt, hist, alpha=2.0, beta=3.0, gamma=0.7).item() == pytest.approx(expected)


def test_zscore_and_softmax_weights():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    z = zscore(r)
    sigma = math.sqrt(2 / 3)
    assert torch.allclose(z, torch.tensor([[-1 / sigma, 0.0, 1 / sigma]]), atol=1e-5)
    w = softmax_weights(r, eta=0.5)
    e = [math.exp(v / 0.5) for v in z[0].tolist()]
    assert torch.allclose(w, torch.tensor([[x / sum(e) for x in e]]), atol=1e-6)
    assert torch.allclose(softmax_weights(torch.full((2, 4), 0.37)), torch.full((2, 4), 0.25))
    assert not softmax_weights(r.requires_grad_()).requires_grad


def test_sequence_logprob_and_wmle():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    labels = torch.tensor([[0, 1, 2]])
    tok = token_logprobs(logits, labels)
    mask = torch.tensor([[True, True, False]])
    assert sequence_logprob(tok, mask).item() == pytest.approx(math.log(0.5) + math.log(0.8), abs=1e-6)
    assert sequence_logprob(tok, mask, "mean").item() == pytest.approx((math.log(0.5) + math.log(0.8)) / 2, abs=1e-6)
    w = torch.tensor([[0.25, 0.75]])
    logp = torch.tensor([[-2.0, -4.0]])
    assert wmle_loss(w, logp).item() == pytest.approx(0.5 + 3.0)
    parts = aft_loss(w, logp, torch.tensor([[1.0, 3.0]]), eta_kl=0.1)
    assert parts["loss"].item() == pytest.approx(3.5 + 0.1 * 2.0)


def test_kl_estimators():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 5)
    labels = torch.randint(0, 5, (2, 3))
    mask = torch.ones(2, 3, dtype=torch.bool)
    tok = token_logprobs(logits, labels)
    for est in ("paper", "k3", "full"):  # zero when the policy is the reference
        assert torch.allclose(kl_term(est, tok, tok, mask, logits, logits), torch.zeros(2), atol=1e-6)
    ref_logits = torch.randn(2, 3, 5)
    ref = token_logprobs(ref_logits, labels)
    assert (kl_term("k3", tok, ref, mask) >= 0).all()
    assert torch.allclose(kl_term("paper", tok, ref, mask), (tok - ref).sum(-1))
    p, q = torch.softmax(logits, -1), torch.softmax(ref_logits, -1)
    exact = (p * (p.log() - q.log())).sum(-1).sum(-1)
    assert torch.allclose(kl_term("full", tok, ref, mask, logits, ref_logits), exact, atol=1e-5)
    with pytest.raises(ValueError, match="unknown kl_estimator"):
        kl_term("nope", tok, ref, mask)


def test_paper_kl_gradient_lowers_likelihood_of_sampled_sequences():
    torch.manual_seed(2)
    logits = torch.randn(4, 6, 10, requires_grad=True)
    labels = torch.randint(0, 10, (4, 6))
    mask = torch.ones(4, 6, dtype=torch.bool)
    ref = token_logprobs(logits.detach(), labels)
    before = sequence_logprob(token_logprobs(logits, labels), mask)
    kl_term("paper", token_logprobs(logits, labels), ref, mask).mean().backward()
    with torch.no_grad():
        stepped = logits - 0.1 * logits.grad
    after = sequence_logprob(token_logprobs(stepped, labels), mask)
    assert (after < before).all()


def test_attention_helpers():
    a = torch.zeros(1, 2, 1, 3)
    a[0, 0, 0] = torch.tensor([1.0, 0, 0])
    a[0, 1, 0] = torch.tensor([0, 1.0, 0])
    b = torch.full((1, 2, 1, 3), 1 / 3)
    agg = aggregate_cross_attention([a, b], [0, 1])
    assert torch.allclose(agg, torch.tensor([[[0.5 / 2 + 1 / 6, 0.5 / 2 + 1 / 6, 1 / 6]]]))
    assert parse_layers("last", 4) == [3] and parse_layers("0,-1", 4) == [0, 3] and parse_layers("all", 2) == [0, 1]
    with pytest.raises(ValueError):
        parse_layers("7", 4)
    hybrid = [1, 3, 5]  # a hybrid's attention layers: indices count them, in the model's order
    assert parse_layers("all", hybrid) == hybrid and parse_layers("last", hybrid) == [5]
    assert parse_layers("0,-1", hybrid) == [1, 5] and parse_layers("1", [3, 1, 5]) == [3]
    with pytest.raises(ValueError, match=r"\[-3, 3\)"):
        parse_layers("3", hybrid)
    labels = torch.tensor([[5, 1, 0, 0], [5, 6, 7, 8], [0, 5, 1, 9]])
    assert response_mask(labels, 1).tolist() == [[True, True, False, False], [True] * 4, [True, True, True, False]]
    turn = torch.tensor([[0, 0, 1, 1, 2, 2, -1, -1]])
    tag = torch.tensor([[1, 0, 1, 0, 1, 0, 0, 0]]).bool()
    sal = torch.tensor([[0, 1, 0, 0, 0, 1, 0, 0]]).bool()
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    none = torch.zeros_like(tag)
    assert position_mask("history", mask, turn, tag, sal, none).int().tolist() == [[0, 1, 0, 1, 0, 0, 0, 0]]
    assert position_mask("salient", mask, turn, tag, sal, none).int().tolist() == [[0, 1, 0, 0, 0, 1, 0, 0]]
    assert position_mask("all", mask, turn, tag, sal, none).int().tolist() == [[1] * 7 + [0]]
    template = torch.tensor([[1, 0, 0, 0, 0, 0, 1, 0]]).bool()  # a decoder-only prompt's sink and cue: in no I_x
    assert position_mask("all", mask, turn, tag, sal, template).int().tolist() == [[0, 1, 1, 1, 1, 1, 0, 0]]


@st.composite
def attention_inputs(draw):
    b, t, s = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    raw = torch.tensor(draw(st.lists(st.floats(0, 10), min_size=b * t * s, max_size=b * t * s))).view(b, t, s)
    attn = raw / raw.sum(-1, keepdim=True).clamp(min=1e-12)
    tgt = torch.tensor(draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t))).view(b, t)
    hist = torch.tensor(draw(st.lists(st.booleans(), min_size=b * s, max_size=b * s))).view(b, s)
    ids = torch.tensor(draw(st.lists(st.integers(0, 6), min_size=b * t, max_size=b * t))).view(b, t)
    return attn, tgt, hist, ids


@settings(max_examples=150, deadline=None)
@given(attention_inputs())
def test_reward_functions_finite_for_any_valid_input(inputs):
    attn, tgt, hist, ids = inputs  # includes all-masked rows and all-zero attention rows
    for value in (
        coverage(attn, tgt, hist),
        focus(attn, tgt, hist),
        repeat_penalty(ids, tgt),
        haca_reward(attn, ids, tgt, hist, 1.0, 1.0, 0.5),
    ):
        assert value.shape == (attn.shape[0],) and torch.isfinite(value).all()
    assert (focus(attn, tgt, hist) <= 0).all()
    assert ((0 <= repeat_penalty(ids, tgt)) & (repeat_penalty(ids, tgt) <= 1)).all()


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 3), st.integers(2, 5), st.floats(0.05, 5.0), st.lists(st.floats(-1e3, 1e3), min_size=15, max_size=15)
)
def test_weights_finite_and_normalised(b, k, eta, values):
    rewards = torch.tensor(values[: b * k]).view(b, k)
    w = softmax_weights(rewards, eta)
    assert torch.isfinite(w).all() and torch.allclose(w.sum(-1), torch.ones(b), atol=1e-5)


@pytest.mark.parametrize(
    "kl, expected",
    [
        (0.03, 0.1 * (1 + 0.2 * 32 / 1000)),  # error +0.5, clipped to +0.2: η_kl rises
        (0.019, 0.1 * (1 - 0.05 * 32 / 1000)),  # error −0.05 (inside the clip): η_kl falls a little
        (0.0, 0.1 * (1 - 0.2 * 32 / 1000)),  # error −1, clipped to −0.2
        (0.02, 0.1),  # on target: unchanged
    ],
)
def test_adaptive_kl_update_by_hand(kl, expected):
    from aft_core.loss import adaptive_kl_update

    assert adaptive_kl_update(0.1, kl, target=0.02, n_steps=32, horizon=1000) == pytest.approx(expected, rel=1e-12)


def test_adaptive_kl_update_refuses_a_zero_target():
    from aft_core.loss import adaptive_kl_update

    with pytest.raises(ValueError, match="target > 0"):
        adaptive_kl_update(0.1, 0.03, target=0.0, n_steps=32, horizon=1000)


def test_per_token_kl_by_hand():
    from aft_core.loss import per_token_kl

    policy = torch.tensor([[-1.0, -2.0, -0.3], [-0.5, -9.0, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.3], [-0.7, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    # (0.5 − 1.0 + 0 + 0.2) / 4 positions; masked positions ignored
    assert per_token_kl(policy, ref, mask) == pytest.approx(-0.3 / 4)


def test_trajectory_reward_by_hand():
    """Mean focus over the window, the candidate the newest: two earlier turns (focus −1.5 and −1.5, summed −3.0)
    and a candidate at −1.0 give −4/3; a conversation's first system turn is the candidate's focus alone."""
    got = trajectory_reward(torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, 0.0]), torch.tensor([2, 0]))
    assert got.tolist() == pytest.approx([-4.0 / 3.0, -2.0])


def test_task_reward_by_hand():
    """λ^(n−1)·success: success right after the candidate earns 1, two turns later λ², a failure 0."""
    got = task_reward(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1, 3, 2]), 0.9)
    assert got.tolist() == pytest.approx([1.0, 0.81, 0.0])
