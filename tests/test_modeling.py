"""Model layer: presets, tokenizer and model round-trip, loading errors, generation."""

from __future__ import annotations

import pytest
import torch

from aft_core.data.batching import SourceBatch, pad_batch
from aft_core.errors import AftInputError
from aft_core.models import build_model, family_of, load_model, save_model, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = [
        f"user: i want {f} food in the {a} please ." for f in ("thai", "greek", "french") for a in ("north", "south")
    ]
    return train_tokenizer(texts * 10, 200)


def _row(ids: list[int]) -> dict:
    n = len(ids)
    return {
        "input_ids": ids,
        "src_turn": [0] * n,
        "src_is_tag": [False] * n,
        "src_is_salient": [False] * n,
        "src_is_template": [False] * n,
    }


def test_round_trip_through_save_and_load(tmp_path, tokenizer):
    model = build_model("tiny", tokenizer, seed=1).eval()
    save_model(model, tokenizer, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    loaded, tok2 = load_model(tmp_path / "m")
    text = "user: i want thai food in the north please ."
    assert tok2(text)["input_ids"] == tokenizer(text)["input_ids"]
    ids, mask = pad_batch([tokenizer(text)["input_ids"]], tokenizer.pad_token_id)
    labels = torch.tensor([[5, 6, 1]])
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask, labels=labels).logits
        b = loaded(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert torch.equal(a, b)
    assert loaded.config._attn_implementation == "eager"


def test_attention_weights_are_returned(tokenizer):
    model = build_model("tiny", tokenizer).eval()
    ids, mask = pad_batch([[5, 6, 7, 1]], 0)
    out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.tensor([[0, 5]]), output_attentions=True)
    assert len(out.cross_attentions) == 1 and out.cross_attentions[0].shape == (1, 2, 2, 4)


def test_generation_helpers(tokenizer):
    model = build_model("tiny", tokenizer).eval()
    ids, mask = pad_batch([[5, 6, 1], [7, 1]], 0)
    torch.manual_seed(0)
    src = SourceBatch.from_rows([_row([5, 6, 1]), _row([7, 1])], 0)
    samples = family_of(model).generate(model, src, max_new_tokens=4, do_sample=True, k=3)
    assert samples.shape[0] == 6 and samples.shape[1] <= 5 and bool((samples[:, 0] == 0).all())


def test_greedy_scoring_returns_every_field_in_input_order(tokenizer):
    """score_greedy decodes in length-sorted batches; each result must land at its own input's position."""
    from aft_core.monitor import score_greedy

    model = build_model("tiny", tokenizer).eval()
    rows = [_row(ids) for ids in ([5, 6, 7, 8, 1], [7, 1], [5, 6, 1])]
    kwargs = dict(ix_modes=("all",), layers=[0], max_new_tokens=4, repeat_n=2)
    family = family_of(model, tokenizer)
    batched = score_greedy(model, tokenizer, family, rows, batch_size=2, keep_attention=True, **kwargs)
    alone = [score_greedy(model, tokenizer, family, [row], batch_size=1, keep_attention=True, **kwargs) for row in rows]
    for key in ("texts", "length", "target_ids"):
        assert batched[key] == [a[key][0] for a in alone], key
    for key in ("repeat", "focus/all", "coverage/all"):
        assert batched[key] == pytest.approx([a[key][0] for a in alone], abs=1e-5), key
    # coverage under `all` is 1/|I_x|: it tells the three source lengths apart, in input order
    assert batched["coverage/all"] == pytest.approx([1 / 5, 1 / 2, 1 / 3], rel=1e-4)
    for i, row in enumerate(rows):  # A[T,S] over the real source positions of that very input
        assert batched["attention"][i].shape == (len(batched["target_ids"][i]), len(row["input_ids"]))


def test_unknown_preset_and_missing_model(tmp_path, tokenizer):
    with pytest.raises(AftInputError, match="unknown model size 'huge'.*Fix:"):
        build_model("huge", tokenizer)
    with pytest.raises(AftInputError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AftInputError, match="config.json.*holds no saved model"):
        load_model(tmp_path / "empty")


def test_tokenizer_that_does_not_match_the_model(tmp_path, tokenizer):
    model = build_model("tiny", tokenizer)
    big = train_tokenizer([f"word{i} other{i} thing{i}" for i in range(400)], 600)
    assert len(big) > len(tokenizer)
    save_model(model, big, tmp_path / "m")
    with pytest.raises(
        AftInputError,
        match=r"tokenizer.*embeds only \d+ \(loaded as \w+; beyond the embeddings: .*resize_token_embeddings",
    ):
        load_model(tmp_path / "m")


def test_the_lean_sft_attention_gives_the_eager_loss_and_gradients():
    """`use_sft_attention` (T5): the eager arithmetic in fewer passes, relative position bias gradient included."""
    import copy

    from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

    from aft_core.models import family_of
    from aft_core.models.seq2seq import LEAN_ATTENTION

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=200,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    eager = T5ForConditionalGeneration(config)
    eager.set_attn_implementation("eager")
    lean = copy.deepcopy(eager)
    family_of(lean).use_sft_attention(lean)
    assert lean.config._attn_implementation == LEAN_ATTENTION
    ids = torch.randint(2, 200, (3, 11))
    mask = torch.ones_like(ids)
    ids[0, 7:], mask[0, 7:] = 0, 0  # a padded source
    labels = torch.randint(2, 200, (3, 5))
    labels[1, 3:] = -100
    losses = []
    for model in (eager, lean):
        model.train()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    for (name, a), b in zip(eager.named_parameters(), lean.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    bias = lean.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    assert bias.grad.abs().sum() > 0  # the learned bias is trained through the lean path too

    bart = BartForConditionalGeneration(
        BartConfig(
            vocab_size=100,
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
        )
    )
    bart.set_attn_implementation("eager")
    family_of(bart).use_sft_attention(bart)
    assert bart.config._attn_implementation == "eager"  # only the T5 family takes the lean path


@pytest.mark.parametrize("model_type", ["led", "fsmt", "nllb-moe"])
def test_older_encoder_decoders_train_and_give_the_cross_attention_they_return(tokenizer, model_type):
    """LED's cross-attention returns its weights only when asked, and before its cache; FSMT decodes from the source
    ids unless given decoder inputs; NLLB-MoE reads the encoder's output by name. Each: SFT logits on the shifted
    labels, and A equal to the head and layer mean of the cross-attentions the model itself returns."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    v = len(tokenizer)
    extra = {
        "led": dict(attention_window=[8, 8], max_encoder_position_embeddings=64, max_decoder_position_embeddings=64),
        "fsmt": dict(langs=["en", "en"], src_vocab_size=v, tgt_vocab_size=v),
        "nllb-moe": dict(num_experts=2, encoder_sparse_step=2, decoder_sparse_step=2),
    }[model_type]
    config = AutoConfig.for_model(
        model_type,
        vocab_size=v,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        decoder_start_token_id=0,
        **extra,
    )
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(config, attn_implementation="eager").eval()
    family = family_of(model, tokenizer)
    batch = family.sft_batch([[5, 6, 7, 1], [8, 1]], [[9, 10, 1], [11, 1]], 0)
    logits, labels = family.sft_logits(model, batch)
    assert logits.shape[:2] == labels.shape == (2, 3)  # FSMT's own shift would decode over the 4 source positions

    src = SourceBatch.from_rows([_row([5, 6, 7, 1]), _row([8, 1])], 0)
    sequences = torch.tensor([[0, 9, 10, 1], [0, 11, 1, 0]])  # [N,T+1]: start, response, EOS, padding
    with torch.no_grad():
        record = family.teacher_forced(model, src, sequences, 1, [0, 1])
        own = model(
            input_ids=src.input_ids,
            attention_mask=src.attention_mask,
            decoder_input_ids=sequences[:, :-1],
            output_attentions=True,
        ).cross_attentions  # 2 x [N,H,T,S]
    expected = torch.stack([layer.mean(dim=1) for layer in own]).mean(dim=0)  # [N,T,S]
    torch.testing.assert_close(record["attn"], expected)
