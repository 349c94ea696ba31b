"""Model folders as downloads go wrong (issue 28): each ends in the one-line error naming the folder and the fix,
exit 2, before any training; and a Gemma-style chat template (strict alternation, no system role) works end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from aft_core.cli import main
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, tokenizer_texts
from aft_core.data.examples import Turn
from aft_core.errors import AftInputError
from aft_core.models import load_model
from bench.architectures import OVERRIDES
from bench.hub_models import CHAT_TEMPLATE, build_gemma2_chat, build_llama_chat, chat_tokenizer

SFT_ARGS = [
    "--max-steps",
    "8",
    "--eval-every",
    "4",
    "--warmup-steps",
    "2",
    "--dev-examples",
    "16",
    "--batch-size",
    "8",
    "--max-source-tokens",
    "96",
    "--learning-rate",
    "3e-3",
    "--quiet",
]


@pytest.fixture(scope="module")
def texts(towninfo_dir):
    return tokenizer_texts(corpus_to_dataset(load_corpus(towninfo_dir))["train"])


def refused(capsys, argv: list[str], *fragments: str) -> str:
    """`aft ARGV` exits 2 with one line that names each fragment, and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Fix:" in lines[0] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _bert_folder(out: Path, texts, *, head: bool) -> Path:
    """A BERT config (an encoder) with its own weights (`head`: BertLMHeadModel, is_decoder false) or a Llama's."""
    from transformers import BertConfig, BertLMHeadModel

    tokenizer = chat_tokenizer(texts)
    tokenizer.chat_template = None
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        is_decoder=False,
    )
    out.mkdir(parents=True)
    if head:
        config.architectures = ["BertLMHeadModel"]
        BertLMHeadModel(config).save_pretrained(out)
    else:
        config.architectures = ["BertModel"]
        config.save_pretrained(out)
        llama = build_llama_chat(out.parent / f"{out.name}-llama", texts)
        shutil.copy(llama / "model.safetensors", out / "model.safetensors")  # another model's weights
    tokenizer.save_pretrained(out)
    return out


def test_an_encoder_only_architecture_is_refused(tmp_path, towninfo_dir, texts, capsys):
    folder = _bert_folder(tmp_path / "bert-lm", texts, head=True)  # its own weights: every key matches
    refused(
        capsys,
        ["sft", "--data", str(towninfo_dir), "--model", str(folder), "--out", str(tmp_path / "sft"), *SFT_ARGS],
        str(folder),
        "BertLMHeadModel",
        "attends to later tokens",
        "is_decoder is false",
    )
    assert not (tmp_path / "sft" / "checkpoints").exists()


def test_a_model_type_without_a_generative_head_is_refused(tmp_path, texts):
    from transformers import DistilBertConfig

    DistilBertConfig(
        vocab_size=100, dim=32, hidden_dim=64, n_layers=1, n_heads=2, architectures=["DistilBertModel"]
    ).save_pretrained(tmp_path)
    tokenizer = chat_tokenizer(texts)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")  # never read: the config is refused first
    with pytest.raises(AftInputError) as info:
        load_model(tmp_path)
    assert "DistilBertModel" in str(info.value) and "not a generative model" in str(info.value)
    assert str(tmp_path / "config.json") in str(info.value) and "could not be loaded" not in str(info.value)


def test_an_encoder_decoder_with_two_vocabularies_is_refused(tmp_path, texts):
    """FSMT (facebook/wmt19-*) encodes the source with one vocabulary and decodes with another; AFT has one
    tokenizer for history and response, so it would score and train the response in the wrong vocabulary."""
    from transformers import FSMTConfig

    tokenizer = chat_tokenizer(texts)
    vocab = len(tokenizer)
    FSMTConfig(
        langs=["en", "de"], src_vocab_size=vocab, tgt_vocab_size=vocab + 8, d_model=32, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, architectures=["FSMTForConditionalGeneration"],
    ).save_pretrained(tmp_path)  # fmt: skip
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")  # never read: the config is refused first
    with pytest.raises(AftInputError) as info:
        load_model(tmp_path)
    assert "tgt_vocab_size" in str(info.value) and "separate source and target vocabularies" in str(info.value)
    assert str(tmp_path / "config.json") in str(info.value) and "one shared vocabulary" in str(info.value)


def _tiny_causal_folder(out: Path, texts, model_type: str, **dims) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = chat_tokenizer(texts)
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, **dims)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize(
    "model_type, dims",
    [
        ("gptj", dict(n_embd=32, n_layer=2, n_head=4, rotary_dim=4)),  # raised a KeyError while loading
        ("bloom", dict(hidden_size=32, n_layer=2, n_head=4)),  # trained, then failed reading A
    ],
)
def test_a_decoder_whose_attention_bypasses_the_attention_interface_is_refused(
    tmp_path, towninfo_dir, texts, capsys, model_type, dims
):
    """GPT-J, BLOOM and others compute attention in their own code, so AFT's row-reading function never runs."""
    folder = _tiny_causal_folder(tmp_path / model_type, texts, model_type, **dims)
    refused(
        capsys,
        ["sft", "--data", str(towninfo_dir), "--model", str(folder), "--out", str(tmp_path / "sft"), *SFT_ARGS],
        str(folder / "config.json"),
        f"model_type '{model_type}'",
        "does not run attention through transformers' attention interface",
    )


def test_a_decoder_that_keeps_its_state_outside_a_cache_is_refused(tmp_path, towninfo_dir, texts, capsys):
    """RecurrentGemma keeps its recurrent state inside the model and returns no past_key_values, so AFT's decoding
    (a prompt pass, then cached steps) cannot drive it."""
    folder = _tiny_causal_folder(
        tmp_path / "recurrent-gemma",
        texts,
        "recurrent_gemma",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        lru_width=32,
        attention_window_size=64,
        block_types=["recurrent", "recurrent", "attention"],
    )
    refused(
        capsys,
        ["sft", "--data", str(towninfo_dir), "--model", str(folder), "--out", str(tmp_path / "sft"), *SFT_ARGS],
        str(folder / "config.json"),
        "returns no transformers cache",
        "past_key_values",
    )


def test_weights_that_do_not_match_the_architecture_are_refused(tmp_path, towninfo_dir, texts, capsys):
    folder = _bert_folder(tmp_path / "bert", texts, head=False)
    line = refused(
        capsys,
        ["sft", "--data", str(towninfo_dir), "--model", str(folder), "--out", str(tmp_path / "sft"), *SFT_ARGS],
        str(folder),
        "'weights'",
        "missing",
        "unexpected",
        "initialised at random",
    )
    assert "model.layers.0" in line or "bert." in line  # keys named from transformers' loading info


def test_a_chat_template_that_does_not_parse_is_refused(tmp_path, towninfo_dir, texts, capsys):
    folder = build_llama_chat(tmp_path / "llama", texts)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    broken = CHAT_TEMPLATE.replace("{% endfor %}", "")  # an unclosed for-loop
    if (folder / "chat_template.jinja").exists():
        (folder / "chat_template.jinja").write_text(broken)
    else:
        config["chat_template"] = broken
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    refused(
        capsys,
        ["sft", "--data", str(towninfo_dir), "--model", str(folder), "--out", str(tmp_path / "sft"), *SFT_ARGS],
        str(folder),
        "chat_template",
        "does not parse",
    )


def test_an_adapter_whose_base_is_missing_names_both(tmp_path, towninfo_dir, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "../gone"})
    )
    base = (adapter / "../gone").resolve()
    refused(
        capsys,
        ["sft", "--data", str(towninfo_dir), "--model", str(adapter), "--out", str(tmp_path / "sft"), *SFT_ARGS],
        f"adapter {adapter} names base {base}, which does not exist",
    )


def test_alternating_messages_drop_a_leading_system_turn_and_join_one_speakers_turns():
    from aft_core.models.causal import alternating

    turns = [Turn("system", "a1"), Turn("user", "u1"), Turn("user", "u2"), Turn("system", "a2"), Turn("user", "u3")]
    messages, kept = alternating(turns, 4)
    assert messages == [
        {"role": "user", "content": "u1\nu2"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "u3"},
    ]
    assert [i for i, _ in kept] == [5, 6, 7, 8]


@pytest.fixture(scope="module")
def gemma(tmp_path_factory, texts) -> Path:
    return build_gemma2_chat(tmp_path_factory.mktemp("gemma") / "gemma2", texts)


def test_a_gemma_template_gets_alternating_histories_and_the_token_map_holds(gemma):
    from transformers import AutoTokenizer

    from aft_core.models.causal import CausalFamily, needs_alternation

    tokenizer = AutoTokenizer.from_pretrained(gemma, local_files_only=True)
    assert needs_alternation(tokenizer)
    family = CausalFamily(load_model(gemma)[0].config, None, tokenizer)
    history = [
        Turn("system", "hello there , how can i help ?"),  # a history cut from the left
        Turn("user", "i want a cheap restaurant", ("cheap",)),
        Turn("user", "in the north please", ("north",)),  # two user turns in a row
        Turn("system", "what food would you like ?"),
        Turn("user", "italian food", ("italian",)),
    ]
    row = family.encode_prompts([history], tokenizer, 192)[0]
    ids, turn_of = row["input_ids"], row["src_turn"]
    text = tokenizer.decode(ids)
    assert "hello there" not in text and text.count("<start_of_turn>user") == 2  # dropped; the two user turns joined
    for index, turn in enumerate(history[1:], start=1):  # each kept turn's tokens carry its own index
        mapped = tokenizer.decode([i for i, t in zip(ids, turn_of, strict=True) if t == index])
        assert mapped.strip() == turn.text, (index, mapped)
    assert 0 not in turn_of
    for index, turn in enumerate(history[1:], start=1):  # I_x = salient: each turn's slot value, and nothing else
        salient = [i for i, t, s in zip(ids, turn_of, row["src_is_salient"], strict=True) if s and t == index]
        assert tokenizer.decode(salient).strip() == (turn.slot_values[0] if turn.slot_values else ""), index
    # the prompt ends with the generation prompt; its tokens are template tokens, in no I_x
    assert text.endswith("<start_of_turn>model\n") and row["src_is_template"][-1]
    assert family.eos_id() == tokenizer.convert_tokens_to_ids("<end_of_turn>")


def test_a_budget_beyond_a_sliding_attention_window_is_refused_with_the_fix(gemma, towninfo_dir, tmp_path, capsys):
    refused(
        capsys,
        [
            "sft",
            "--data",
            str(towninfo_dir),
            "--model",
            str(gemma),
            "--out",
            str(tmp_path / "sft"),
            *SFT_ARGS[:-3],
            "--max-source-tokens",
            "300",
            "--quiet",
        ],
        "sliding attention window of 256 tokens",
        "--max-source-tokens 208 or less",
    )


def _sft_branch_evaluate(folder: Path, towninfo_dir: Path, out: Path, *branch_args: str) -> dict:
    """`aft sft` → `train-branch` (2 steps) → `evaluate` (12 test examples) on a model folder; the test table."""
    data = str(towninfo_dir)
    assert main(["sft", "--data", data, "--model", str(folder), "--out", str(out / "sft"), *SFT_ARGS]) == 0
    sft_model = str(out / "sft" / "model")
    short = ["--max-new-tokens", "10", "--max-source-tokens", "96"]
    branch = ["--sft", sft_model, "--data", data, "--out", str(out / "branch"), "--steps", "2", "--checkpoint-every"]
    branch += ["1", "--probe-size", "8", "--batch-size", "2", "--k", "2", "--learning-rate", "1e-3", "--quiet"]
    assert main(["train-branch", *branch, *short, *branch_args]) == 0
    evaluate = ["--sft", sft_model, "--branch", str(out / "branch"), "--data", data, "--out", str(out / "eval")]
    assert main(["evaluate", *evaluate, "--test-examples", "12", *short]) == 0
    return json.loads((out / "eval" / "table.json").read_text())


def test_a_gemma_style_checkpoint_goes_through_sft_branch_and_evaluate(gemma, towninfo_dir, tmp_path):
    table = _sft_branch_evaluate(gemma, towninfo_dir, tmp_path)
    assert table["rows"][0]["system"] == "SFT" and len(table["rows"]) >= 2


def test_a_hybrid_reads_a_from_its_attention_layers_through_sft_branch_and_evaluate(tmp_path, towninfo_dir, texts):
    """A Jamba-style hybrid (a Mamba layer, then an attention layer) is served: A is read from its attention layer,
    and `--layers 0` counts attention layers, so it names layer 1 of the model."""
    from aft_core.models import family_of

    folder = _tiny_causal_folder(
        tmp_path / "jamba",
        texts,
        "jamba",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        **OVERRIDES["jamba"],
    )
    model, tokenizer = load_model(folder)
    assert family_of(model, tokenizer).attention_layers(model) == [1]
    table = _sft_branch_evaluate(folder, towninfo_dir, tmp_path, "--layers", "0")
    assert [row["system"] for row in table["rows"]][0] == "SFT" and len(table["rows"]) >= 2
    assert all(0 < row["lookback"] < 1 for row in table["rows"])  # decoder rows also attend to the template
    assert json.loads((tmp_path / "branch" / "config.json").read_text())["layers"] == "0"


def test_an_encoder_decoder_without_cross_attention_layers_is_refused_before_sft(tmp_path, towninfo_dir, texts, capsys):
    """T5Gemma 2's decoder attends to the source and its own tokens in one merged attention: no cross-attention
    layers to read A from. It trained through SFT and then failed at its first branch with a traceback."""
    from bench.architectures import build

    build("t5gemma2", "seq2seq", texts, tmp_path / "t5gemma2")
    refused(
        capsys,
        ["sft", "--data", str(towninfo_dir), "--model", str(tmp_path / "t5gemma2"), "--out", str(tmp_path / "sft"),
         *SFT_ARGS],
        "model_type 't5gemma2'",
        "no separate cross-attention layers",
    )  # fmt: skip
    assert not (tmp_path / "sft" / "checkpoints").exists() and not (tmp_path / "sft" / "model").exists()


def test_a_causal_lm_whose_base_prefix_names_no_module_trains(tmp_path, towninfo_dir, texts):
    """Llama 4's text model names `language_model` as its base prefix but keeps its transformer in `model`; SFT read
    the prefix and failed with an AttributeError."""
    from bench.architectures import build

    build("llama4_text", "causal", texts, tmp_path / "llama4")
    out = tmp_path / "sft"
    assert (
        main(["sft", "--data", str(towninfo_dir), "--model", str(tmp_path / "llama4"), "--out", str(out), *SFT_ARGS])
        == 0
    )
    assert json.loads((out / "sft_result.json").read_text())["steps"] == 8


def test_a_generic_tokenizer_beside_a_qwen2_config_is_refused_naming_the_token_transformers_adds(
    tmp_path, towninfo_dir, texts, capsys
):
    """transformers 5 loads a generic saved tokenizer as the model type's class: a Qwen2Tokenizer, which adds
    <|endoftext|>. The model embeds only the tokens it was built for, so the folder is refused; the line says what
    happened and how to fix it, where it used to say "use the tokenizer saved with this model", which was."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = chat_tokenizer(texts)
    folder = tmp_path / "qwen2"
    config = AutoConfig.for_model(
        "qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    refused(
        capsys,
        ["sft", "--data", str(towninfo_dir), "--model", str(folder), "--out", str(tmp_path / "sft"), *SFT_ARGS],
        f"has {len(tokenizer) + 1} tokens but the model embeds only {len(tokenizer)}",
        "loaded as Qwen2Tokenizer",
        "<|endoftext|>",
        "resize_token_embeddings",
    )


def test_a_bfloat16_checkpoint_trains_in_float32(tmp_path, towninfo_dir, texts):
    """Most hub decoders are saved in bfloat16, and transformers loads them so. An AdamW step of lr 1e-5 is below
    bfloat16's precision at the weights' size and would be lost, so a model is loaded in float32 (the checkpoint's
    values, upcast); SFT from it moves the weights and saves float32."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    folder = build_llama_chat(tmp_path / "llama", texts)
    AutoModelForCausalLM.from_pretrained(folder).to(torch.bfloat16).save_pretrained(folder)
    stored = load_file(folder / "model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}
    model, _ = load_model(folder, for_training=True)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    loaded = dict(model.named_parameters())
    assert all(torch.equal(loaded[name], value.float()) for name, value in stored.items() if name in loaded)
    argv = ["sft", "--model", str(folder), "--data", str(towninfo_dir), "--out", str(tmp_path / "sft")]
    assert main([*argv, *SFT_ARGS, "--learning-rate", "1e-5"]) == 0
    trained = load_file(tmp_path / "sft" / "model" / "model.safetensors")
    assert {t.dtype for t in trained.values()} == {torch.float32}
    assert any(not torch.equal(trained[name], value.float()) for name, value in stored.items() if name in trained)
