"""The fast AFT step (issue 6) against Hugging Face's T5 and against the obvious implementation in bench/.

Not timed: the speed and memory targets are checked by bench/aft_step.py.
"""

from __future__ import annotations

import pytest
import torch
from conftest import branch_config

from aft_core.aft import score_candidates
from aft_core.data.batching import SourceBatch
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, encode_table
from aft_core.models import family_of, load_model, parse_layers
from aft_core.models import t5_decoding as decoding
from aft_core.models.registry import _neutral_generation_config
from bench.reference_step import reference_step_loss, stack_candidates


def _batch(model_dir: str, towninfo_dir, n: int = 6, start: int = 0):
    policy, tokenizer = load_model(model_dir)
    rows = encode_table(
        corpus_to_dataset(load_corpus(towninfo_dir))["train"].select(range(start, start + n)),
        tokenizer,
        family_of(policy, tokenizer),
        96,
        8,
    )
    return policy.eval(), tokenizer, SourceBatch.from_rows(rows.to_list(), tokenizer.pad_token_id)


def _untrained_t5(vocab: int, feed_forward: str, tie: bool) -> torch.nn.Module:
    """A 2-layer T5 with random weights: a gated FF (Flan-T5) or untied output projection exercise other paths."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocab,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        feed_forward_proj=feed_forward,
        tie_word_embeddings=tie,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        dropout_rate=0.0,
    )
    model = T5ForConditionalGeneration(config).eval()
    model.set_attn_implementation("eager")
    _neutral_generation_config(model)
    return model


def _first_prompt(src: SourceBatch) -> SourceBatch:
    return SourceBatch(
        *(
            t[:1]
            for t in (
                src.input_ids,
                src.attention_mask,
                src.src_turn,
                src.src_is_tag,
                src.src_is_salient,
                src.src_is_template,
            )
        )
    )


def _relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖: gradients summed in another order differ elementwise by rounding, not in norm."""
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def models(sft_model, towninfo_dir):
    policy, tokenizer, src = _batch(sft_model, towninfo_dir)
    vocab = len(tokenizer)
    return {
        "sft (1 layer, relu, tied)": policy,
        "untrained (2 layers, gated-gelu, untied)": _untrained_t5(vocab, "gated-gelu", False),
        "untrained (2 layers, relu, tied)": _untrained_t5(vocab, "relu", True),
    }, src


def test_greedy_decoding_matches_generate_token_for_token(models):
    all_models, src = models
    for name, model in all_models.items():
        assert decoding.supports(model)
        ours = family_of(model).generate(model, src, max_new_tokens=20, do_sample=False)
        theirs = model.generate(
            input_ids=src.input_ids, attention_mask=src.attention_mask, max_new_tokens=20, do_sample=False
        )
        assert torch.equal(ours, theirs), name


def test_teacher_forced_pass_matches_the_hugging_face_decoder(models, monkeypatch):
    all_models, src = models
    cases = [
        (name, model, layers)
        for name, model in all_models.items()
        for layers in ({model.config.num_decoder_layers - 1}, set(range(model.config.num_decoder_layers)))
    ]
    family = family_of(all_models["sft (1 layer, relu, tied)"])
    for name, model, layers in cases:
        k, layers, name = 3, sorted(layers), f"{name}, layers {sorted(layers)}"
        torch.manual_seed(1)
        samples = family.generate(model, src, max_new_tokens=12, do_sample=True, k=k)
        results = {}
        for path in ("ours", "hugging face"):
            monkeypatch.setattr(decoding, "supports", (lambda m: True) if path == "ours" else (lambda m: False))
            model.zero_grad(set_to_none=True)
            out = family.teacher_forced(model, src, samples, k, layers)
            out["token_logp"].sum().backward()
            grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            results[path] = (out, grad)
        (ours, grad), (theirs, ref_grad) = results["ours"], results["hugging face"]
        mask = ours["tgt_mask"]
        assert ours["logits"].shape == (int(mask.sum()), model.config.vocab_size), name
        torch.testing.assert_close(ours["logits"], theirs["logits"], rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(ours["token_logp"], theirs["token_logp"], rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(ours["attn"][mask], theirs["attn"][mask], rtol=1e-5, atol=1e-6, msg=name)
        assert _relative_difference(grad, ref_grad) < 1e-5, name
        assert float(ours["token_logp"][~mask].detach().abs().sum()) == 0.0  # nothing off the response


def test_sampling_draws_from_the_model_distribution(models):
    """20,000 first tokens of one prompt: each of the ten likeliest tokens within 4.5 standard errors of its
    probability."""
    all_models, src = models
    model = all_models["sft (1 layer, relu, tied)"]
    n = 20000
    ids, mask = src.input_ids[:1], src.attention_mask[:1]
    with torch.no_grad():
        start = torch.zeros((1, 1), dtype=torch.long)
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=start).logits[0, -1]
    for temperature in (1.0, 0.7):
        probs = torch.softmax(logits / temperature, dim=-1)
        torch.manual_seed(2)
        first = family_of(model).generate(
            model, _first_prompt(src), max_new_tokens=1, do_sample=True, k=n, temperature=temperature
        )[:, 1]
        freq = torch.bincount(first, minlength=probs.shape[0]).float() / n
        top = probs.topk(10).indices
        stderr = (probs[top] * (1 - probs[top]) / n).sqrt()
        assert ((freq[top] - probs[top]).abs() <= 4.5 * stderr + 1e-4).all(), (temperature, freq[top], probs[top])
        assert float(freq[probs == 0].sum()) == 0.0


def test_the_generic_decoding_loop_agrees_with_the_t5_decoder(models, monkeypatch):
    all_models, src = models
    model = all_models["untrained (2 layers, gated-gelu, untied)"]
    family = family_of(model)
    fast = family.generate(model, src, max_new_tokens=15, do_sample=False, k=2)
    monkeypatch.setattr(decoding, "supports", lambda m: False)
    generic = family.generate(model, src, max_new_tokens=15, do_sample=False, k=2)
    assert torch.equal(fast, generic)


@pytest.mark.parametrize("kl_estimator", ["paper", "full"])
def test_fast_and_reference_steps_agree_on_a_tiny_model(sft_model, towninfo_dir, kl_estimator):
    """The reference's K samples scored by the product: rewards, loss and gradient as the reference computed them."""
    policy, tokenizer, src = _batch(sft_model, towninfo_dir, n=8, start=10)
    reference, _ = load_model(sft_model)
    reference.eval().requires_grad_(False)
    cfg = branch_config(sft_model, towninfo_dir, k=4, max_new_tokens=16, kl_estimator=kl_estimator)
    family = family_of(policy, tokenizer)
    layers = parse_layers(cfg.layers, family.attention_layers(policy))
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    torch.manual_seed(3)
    ref_parts, sequences = reference_step_loss(policy, reference, src, cfg, layers, pad, eos)
    ref_parts["loss"].backward()
    ref_grad = torch.cat([p.grad.flatten() for p in policy.parameters()])
    policy.zero_grad(set_to_none=True)
    parts, metrics = score_candidates(policy, reference, family, src, stack_candidates(sequences, pad), cfg, layers)
    parts["loss"].backward()
    grad = torch.cat([p.grad.flatten() for p in policy.parameters()])
    assert float(ref_parts["rewards"].std()) > 0  # the candidates differ, so the weights are not all 1/K
    torch.testing.assert_close(parts["rewards"], ref_parts["rewards"], rtol=0, atol=1e-5)
    torch.testing.assert_close(parts["loss"], ref_parts["loss"], rtol=1e-5, atol=1e-5)
    assert _relative_difference(grad, ref_grad) < 1e-5
    assert metrics["loss"] == pytest.approx(float(ref_parts["loss"].detach()), rel=1e-5)


def test_fused_attention_where_weights_are_not_read_gives_the_same_pass(models, monkeypatch):
    """On a GPU the reference pass and the unread layers use SDPA; forced on here, it must not change the scores."""
    all_models, src = models
    model = all_models["untrained (2 layers, relu, tied)"]
    torch.manual_seed(4)
    family = family_of(model)
    samples = family.generate(model, src, max_new_tokens=10, do_sample=True, k=2)
    with torch.no_grad():
        explicit = family.teacher_forced(model, src, samples, 2, [1])
        monkeypatch.setattr(decoding, "fused_attention", lambda device: True)
        fused = family.teacher_forced(model, src, samples, 2, [1])
    torch.testing.assert_close(fused["token_logp"], explicit["token_logp"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused["attn"], explicit["attn"], rtol=1e-5, atol=1e-6)


def test_the_inference_encoder_pass_equals_the_training_one_and_leaves_the_model_as_it_was(models):
    """score_greedy's encoder pass (SDPA, no gradient) gives the training pass's hidden states to float rounding,
    and the model's attention setting is back as it was afterwards; with a gradient wanted it is the training
    pass itself."""
    all_models, src = models
    for name, model in all_models.items():
        family, before = family_of(model), model.get_encoder().config._attn_implementation
        with torch.no_grad():
            trained_path = family.prompt_state(model, src)
            inference_path = family.prompt_state(model, src, inference=True)
        torch.testing.assert_close(inference_path, trained_path, rtol=1e-5, atol=1e-5, msg=name)
        assert model.get_encoder().config._attn_implementation == before, name
        with_grad = family.prompt_state(model, src, inference=True)
        assert with_grad.requires_grad and torch.equal(with_grad.detach(), trained_path), name


@pytest.mark.parametrize("path", ["t5", "hugging face seq2seq", "causal"])
def test_dropping_ended_replies_from_the_decoding_state_changes_no_token(
    path, sft_model, causal_sft_model, towninfo_dir, monkeypatch
):
    """decode_loop drops the sequences that have ended from the decoding state (the stepper's `keep`); greedy and
    sampled (one seed) tokens are those of stepping every sequence until the last one ends, and the state was
    compacted on the way."""
    from aft_core.models import causal, family, seq2seq

    policy, _, src = _batch(causal_sft_model if path == "causal" else sft_model, towninfo_dir, n=16)
    if path == "hugging face seq2seq":
        monkeypatch.setattr(decoding, "supports", lambda m: False)
    module = causal if path == "causal" else seq2seq
    compacted: list[int] = []

    def spied(*args, keep=None, **kwargs):
        def counted(rows):
            done = keep(rows)
            compacted.extend([len(rows)] if done else [])
            return done

        return family.decode_loop(*args, keep=counted if keep else None, **kwargs)

    monkeypatch.setattr(module, "decode_loop", spied)
    runs = {}
    for compact in (True, False):
        monkeypatch.setattr(family, "COMPACT_WHEN_ALIVE", 0.75 if compact else -1.0)  # -1: never
        for do_sample in (False, True):
            torch.manual_seed(3)
            runs[compact, do_sample] = family_of(policy).generate(policy, src, max_new_tokens=24, do_sample=do_sample)
    assert compacted and min(compacted) < 16, compacted
    for do_sample in (False, True):
        assert torch.equal(runs[True, do_sample], runs[False, do_sample]), (path, do_sample)
