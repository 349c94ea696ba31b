"""Tiny random models saved as the hub ships them, and an offline hub cache that serves them as `hf:<org>/<name>`.

- T5 v1.1: gated-gelu, untied head, a SentencePiece (unigram) `spiece.model` with 100 extra ids;
- BART: byte-level BPE (vocab.json + merges.txt), decoder start </s>, forced BOS <s>, learned positions;
- a Llama-shaped causal LM whose tokenizer has a chat template and an end-of-turn token, and no pad token;
- a Gemma-2-shaped causal LM with Gemma's own chat template (strict user/assistant alternation, no system role);
- Qwen2.5's chat template (a default system prompt before the first turn), for tokenizers built with `chat_tokenizer`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_t5_v11(out: Path, texts: Iterable[str]) -> Path:
    import sentencepiece as spm
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    corpus = out.parent / f"{out.name}-spm.txt"
    corpus.write_text("\n".join(texts), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out / "spiece"),
        vocab_size=400,
        model_type="unigram",
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    corpus.unlink()
    (out / "spiece.vocab").unlink()
    tokenizer = T5Tokenizer.from_pretrained(out, extra_ids=100)  # converted from spiece.model, as the hub's loads
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return _save(T5ForConditionalGeneration(config), tokenizer, out)


def build_bart(out: Path, texts: Iterable[str]) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartConfig, BartForConditionalGeneration, BartTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(texts), vocab_size=500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False
    )
    bpe.save_model(str(out))
    tokenizer = BartTokenizerFast.from_pretrained(out)  # vocab.json + merges.txt, as facebook/bart-base ships them
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=160,
        dropout=0.0,
        attention_dropout=0.0,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
    )
    return _save(BartForConditionalGeneration(config), tokenizer, out)


# Gemma's own chat template (google/gemma-2-2b-it): no system role, assistant rendered as `model`, and it raises when
# roles do not alternate user/assistant from a user turn, as Mistral's and Llama 2's do.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


# Qwen2.5's chat template (Qwen/Qwen2.5-0.5B-Instruct), tools left out: ChatML, and a default system prompt when the
# messages have none, so the rendered text holds words before the first turn that a short turn can also be.
QWEN_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_tokenizer(
    texts: Iterable[str],
    template: str = CHAT_TEMPLATE,
    turn_tokens: tuple[str, ...] = ("<|user|>", "<|assistant|>", "<|end|>"),
):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<unk>", *turn_tokens]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        list(texts),
        trainers.BpeTrainer(
            vocab_size=500,
            special_tokens=specials,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=specials[3:],
    )
    tokenizer.chat_template = template
    return tokenizer


def build_llama_chat(
    out: Path, texts: Iterable[str], layers: int = 2, hidden: int = 32, heads: int = 4, kv_heads: int = 2
) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer(texts)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2 if hidden <= 32 else hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end|>")],
    )
    return _save(LlamaForCausalLM(config), tokenizer, out)


def build_gemma2_chat(out: Path, texts: Iterable[str]) -> Path:
    """A Gemma-2-shaped causal LM (soft-capped attention and logits, sliding window) with Gemma's chat template."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    tokenizer = chat_tokenizer(texts, GEMMA_CHAT_TEMPLATE, ("<start_of_turn>", "<end_of_turn>"))
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        sliding_window=256,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")],
    )
    return _save(Gemma2ForCausalLM(config), tokenizer, out)


def _save(model: torch.nn.Module, tokenizer, out: Path) -> Path:
    torch.manual_seed(0)
    model.init_weights() if hasattr(model, "init_weights") else None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def serve_from_hub_cache(hf_home: Path, repo_id: str, folder: Path) -> None:
    """Lay `folder` out in the hub cache under HF_HOME (refs/main -> one snapshot), as a download would leave it."""
    commit = "0" * 40
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit, dirs_exist_ok=True)
