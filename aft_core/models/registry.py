"""Models and tokenizers: the family of a model read from its config, presets built from config, loading.

A model is named by one of:
- a preset: `tiny`, `small`, `large` (T5) or `causal-tiny`, `causal-small` (Llama-shaped), built from config
  with a tokenizer trained on the corpus;
- an existing local directory holding a saved model and tokenizer (hub layout: config.json,
  model.safetensors, tokenizer files);
- `hf:<org>/<name>`: a Hugging Face hub model. Only this form may touch the network.

The family (aft_core.models.seq2seq, aft_core.models.causal) is read from the config: `is_encoder_decoder`.
Encoder–decoders are loaded with the eager attention (cross-attention weights are read, AFT_SPEC §2);
decoder-only models with `aft_rows` (aft_core.models.causal), which reads only the rows AFT needs. Models are
saved with `save_pretrained` (safetensors), so any Hugging Face tool can open them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from aft_core.config import PRESETS, ModelPreset
from aft_core.errors import AftInputError
from aft_core.models import adapters
from aft_core.models.causal import ATTENTION as CAUSAL_ATTENTION
from aft_core.models.causal import CausalFamily, probe_layers
from aft_core.models.family import ModelFamily
from aft_core.models.seq2seq import Seq2SeqFamily

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
HUB_PREFIX = "hf:"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A BPE tokenizer (Metaspace, specials <pad>=0, </s>=1, <unk>=2, EOS appended) trained on `texts`.

    BPE rather than Unigram: tokenizers 0.23.3's Unigram trainer split even frequent words into
    characters on dialogue corpora ('e xp e n siv e'), while BPE learns whole-word pieces.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))]
    )
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    if (wrapped.pad_token_id, wrapped.eos_token_id, wrapped.unk_token_id) != (0, 1, 2):
        raise RuntimeError("tokenizer specials are not <pad>=0, </s>=1, <unk>=2")
    return wrapped


def family_of(model: Any, tokenizer: Any = None) -> ModelFamily:
    """The model's family, read from its config: encoder–decoder or decoder-only."""
    family = Seq2SeqFamily if getattr(model.config, "is_encoder_decoder", False) else CausalFamily
    return family(model.config, getattr(model, "generation_config", None), tokenizer)


def build_model(preset: str, tokenizer: Any, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised model of the named preset, sized to `tokenizer`: a T5, or a Llama-shaped causal LM."""
    p = preset_or_error(preset)
    torch.manual_seed(seed)
    if p.family == "causal":
        from transformers import LlamaConfig, LlamaForCausalLM

        llama_config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=p.d_model,
            intermediate_size=p.d_ff,
            num_hidden_layers=p.num_layers,
            num_attention_heads=p.num_heads,
            num_key_value_heads=p.num_heads,
            head_dim=p.d_kv,
            max_position_embeddings=p.max_positions,
            attention_dropout=p.dropout,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
        )
        model: PreTrainedModel = LlamaForCausalLM(llama_config)
        model.set_attn_implementation(CAUSAL_ATTENTION)
    else:
        from transformers import T5Config, T5ForConditionalGeneration

        t5_config = T5Config(
            vocab_size=len(tokenizer),
            d_model=p.d_model,
            d_ff=p.d_ff,
            d_kv=p.d_kv,
            num_layers=p.num_layers,
            num_decoder_layers=p.num_layers,
            num_heads=p.num_heads,
            dropout_rate=p.dropout,
            feed_forward_proj="relu",
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        t5_config.decoder_start_token_id = tokenizer.pad_token_id  # not in T5Config's typed signature
        model = T5ForConditionalGeneration(t5_config)
        model.set_attn_implementation("eager")
    _neutral_generation_config(model)
    return model


def preset_or_error(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise AftInputError(
            "model",
            "preset",
            f"unknown model size '{name}'",
            f"use one of {sorted(PRESETS)}, a saved model directory, or hf:<org>/<name>",
        )
    return PRESETS[name]


def _neutral_generation_config(model: Any) -> None:
    """Plain ancestral sampling unless a caller asks otherwise: no top-k / top-p from a saved config."""
    gc = model.generation_config
    gc.top_k, gc.top_p, gc.temperature = None, None, None
    gc.do_sample = False


def check_model_source(name_or_path: str | Path) -> tuple[str, bool]:
    """(source, is_hub) of a model name; a local folder that holds no saved model is named with the fix."""
    name = str(name_or_path)
    hub = name.startswith(HUB_PREFIX)
    source = name[len(HUB_PREFIX) :] if hub else name
    if not hub:
        path = Path(source)
        if not path.is_dir():
            raise AftInputError(
                path,
                "model",
                "does not exist or is not a directory",
                f"pass a saved model directory, a preset ({', '.join(PRESETS)}), or hf:<org>/<name>",
            )
        if adapters.is_adapter_folder(path):
            return source, hub  # a LoRA adapter: its base is checked when it is loaded
        if not (path / "config.json").exists():
            raise AftInputError(
                path,
                "config.json",
                "the directory holds no saved model",
                "point at a folder written by `aft sft` or save_pretrained",
            )
        check_model_files(path)
    return source, hub


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "spiece.model",
    "tokenizer.model",
    "vocab.json",
    "sentencepiece.bpe.model",
)
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


def check_model_files(path: Path) -> None:
    """A local model folder must hold safetensors weights and its own tokenizer: without one, transformers would
    build a default tokenizer from the config and training would run on it; pickle weights are never loaded."""
    if not any((path / name).exists() for name in ("model.safetensors", "model.safetensors.index.json")):
        pickled = [name for name in PICKLE_WEIGHTS if (path / name).exists()]
        if pickled:
            raise AftInputError(
                path / pickled[0],
                "weights",
                "pickle weights are never loaded (they can run code)",
                "convert them to safetensors: load the model once where you trust it and call "
                "model.save_pretrained(DIR) (writes model.safetensors)",
            )
        raise AftInputError(
            path,
            "model.safetensors",
            "the folder holds no weights",
            "point at a folder written by `aft sft` or save_pretrained",
        )
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        raise AftInputError(
            path,
            "tokenizer",
            "the folder holds no tokenizer files",
            "save the model's tokenizer beside it (tokenizer.save_pretrained(DIR))",
        )


def load_model(
    name_or_path: str | Path, for_training: bool = False, device: torch.device | None = None
) -> tuple[torch.nn.Module, Any]:
    """Load a saved model of either family and its tokenizer (local directory, or `hf:<org>/<name>`) onto
    `device` (default: `default_device()`)."""
    import transformers
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoTokenizer

    source, hub = check_model_source(name_or_path)
    if not hub and adapters.is_adapter_folder(Path(source)):  # a LoRA SFT model: base + adapter, merged
        base, _ = load_model(adapters.adapter_base(Path(source)), device=device)
        tokenizer = _load_tokenizer(Path(source))
        check_tokenizer_matches(base, tokenizer, source)
        if not getattr(base.config, "is_encoder_decoder", False):
            check_chat_template(tokenizer, source)
        model = adapters.load_adapter_model(Path(source), base)
        model.train(for_training)
        return model, tokenizer
    kwargs: dict[str, Any] = {} if hub else {"local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        config = AutoConfig.from_pretrained(source, **kwargs)
        seq2seq = getattr(config, "is_encoder_decoder", False)
        check_generative_config(config, source)
        auto = getattr(transformers, (Seq2SeqFamily if seq2seq else CausalFamily).auto_class)
        model, loading = auto.from_pretrained(
            source,
            config=config,
            output_loading_info=True,
            attn_implementation="eager" if seq2seq else CAUSAL_ATTENTION,
            # float32 weights whatever the checkpoint was saved in: transformers loads a bfloat16 checkpoint (most
            # hub decoders) as bfloat16, where an AdamW step of lr 1e-5 is below the weights' precision and is lost,
            # and log-probabilities, KL and A lose digits. A GPU step runs under bfloat16 autocast (aft_core.aft).
            dtype=torch.float32,
            **kwargs,
        )
    except AftInputError:  # a refusal of the config's own (check_generative_config): not wrapped as a load failure
        raise
    except KeyError as e:  # GPT-J and others look their attention class up by implementation name
        if CAUSAL_ATTENTION not in str(e):
            raise
        where, problem = Path(source) / "config.json", f"{_architecture(config)} {OWN_ATTENTION}"
        raise AftInputError(where, "model_type", problem, ATTENTION_INTERFACE_FIX) from e
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:  # unreadable, truncated or mismatched weights
        raise AftInputError(
            source,
            "model",
            f"could not be loaded ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]})",
            "check the folder holds config.json, model.safetensors and the tokenizer files",
        ) from e
    check_loaded_weights(loading, config, source)
    if seq2seq:
        check_cross_attention(model, source)
    else:
        check_causal_attention(model, source)
        check_chat_template(tokenizer, source)
    check_tokenizer_matches(model, tokenizer, source)
    _neutral_generation_config(model)
    model.train(for_training)
    return model.to(device or default_device()), tokenizer


def _architecture(config: Any) -> str:
    names = getattr(config, "architectures", None) or []
    return f"{', '.join(names)} (model_type '{config.model_type}')" if names else f"model_type '{config.model_type}'"


GENERATIVE_FIX = (
    "use an encoder–decoder (T5, BART, Pegasus, …) or a causal decoder (Llama, GPT-2, Qwen, Gemma, …) checkpoint"
)


def check_generative_config(config: Any, where: str | Path) -> None:
    """The config names an architecture transformers can load as the family's LM: an encoder–decoder with a
    generation head, or a causal LM. Encoder-only and classification architectures are refused here."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    seq2seq = getattr(config, "is_encoder_decoder", False)
    known = MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES if seq2seq else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if config.model_type not in known:
        kind = "encoder–decoder with a generation head" if seq2seq else "causal language model"
        raise AftInputError(
            Path(where) / "config.json",
            "model_type",
            f"{_architecture(config)} is not a generative model: transformers has no {kind} for it",
            GENERATIVE_FIX,
        )
    source_vocab, target_vocab = getattr(config, "src_vocab_size", None), getattr(config, "tgt_vocab_size", None)
    if seq2seq and source_vocab is not None and target_vocab is not None and source_vocab != target_vocab:
        raise AftInputError(
            Path(where) / "config.json",
            "tgt_vocab_size",
            f"{_architecture(config)} has separate source and target vocabularies ({source_vocab} and "
            f"{target_vocab} tokens), but AFT encodes the history and the response with one tokenizer",
            "use an encoder–decoder with one shared vocabulary (T5, BART, Pegasus, Marian, …)",
        )


OWN_ATTENTION = (
    "does not run attention through transformers' attention interface (it computes attention in its own code, or "
    "has none), so AFT cannot read the attention of the rows that predict a response"
)
ATTENTION_INTERFACE_FIX = (
    "use a decoder whose transformers class runs its attention through the interface (Llama, Mistral, Qwen, "
    "Gemma, Phi-3, GPT-2, OPT, GPT-NeoX, …), or an encoder–decoder"
)


def check_loaded_weights(loading: dict[str, Any], config: Any, where: str | Path) -> None:
    """Every weight of the architecture came from the file, and the file holds nothing the architecture lacks
    (transformers' loading info). Otherwise transformers would initialise the missing weights at random and train
    on them silently."""
    missing, unexpected = sorted(loading.get("missing_keys") or []), sorted(loading.get("unexpected_keys") or [])
    mismatched = [str(m[0] if isinstance(m, (tuple, list)) else m) for m in loading.get("mismatched_keys") or []]
    if not (missing or unexpected or mismatched):
        return
    parts = [
        f"{len(names)} {what} (e.g. {', '.join(names[:2])})"
        for what, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", mismatched))
        if names
    ]
    raise AftInputError(
        Path(where),
        "weights",
        f"do not match {_architecture(config)}: "
        + "; ".join(parts)
        + " — missing weights would be initialised at random",
        "use the weights saved with this config.json (save_pretrained writes both)",
    )


def check_cross_attention(model: Any, where: str | Path) -> None:
    """An encoder–decoder's A is its decoder's cross-attention, read per layer from separate cross-attention
    modules (T5's EncDecAttention, BART's encoder_attn, …). A decoder that attends to the source and to its own
    tokens in one merged attention (T5Gemma 2) has none, so it is refused here, before SFT, not at its first
    branch."""
    from aft_core.models.seq2seq import cross_attention_modules

    try:
        cross_attention_modules(model)
    except ValueError:
        raise AftInputError(
            Path(where) / "config.json",
            "architectures",
            f"{_architecture(model.config)} has no separate cross-attention layers in its decoder (it may "
            "attend to the source and its own tokens in one merged attention), so A over the history is not read",
            "use an encoder–decoder with cross-attention layers (T5, T5Gemma, BART, Pegasus, Marian, …)",
        ) from None


@torch.no_grad()
def check_causal_attention(model: Any, where: str | Path) -> None:
    """A decoder-only model must attend causally: its output at position 0 may not depend on a later token. An
    encoder loaded through AutoModelForCausalLM (e.g. BERT with is_decoder false) attends both ways, so its
    "causal" loss would see the very tokens it predicts. And its attention must run through AFT's row-reading
    attention function, in every layer or (a hybrid with recurrent or state-space layers) in its attention layers,
    which are then the layers A is read from (`causal.probe_layers`)."""
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.arange(4, dtype=torch.long)[None, :] % vocab  # [1,4]
    later = ids.clone()
    later[0, -1] = (later[0, -1] + 1) % vocab
    config = model.config
    was_training = model.training
    model.eval()
    with torch.no_grad():
        first = [model(input_ids=ids).logits[0, 0].float(), model(input_ids=later).logits[0, 0].float()]  # [V] x2
    model.train(was_training)
    if not torch.allclose(first[0], first[1], atol=1e-5, rtol=1e-4):
        raise AftInputError(
            Path(where) / "config.json",
            "architectures",
            f"{_architecture(config)} attends to later tokens (an encoder, not a causal "
            f"decoder{'; is_decoder is false' if getattr(config, 'is_decoder', None) is False else ''}), "
            "so a causal loss would see the tokens it predicts",
            GENERATIVE_FIX,
        )
    try:
        layers = probe_layers(model).attended
    except ValueError as e:
        problem, fix = (e.args + (ATTENTION_INTERFACE_FIX,))[:2]
        raise AftInputError(Path(where) / "config.json", "architectures", problem, fix) from None
    if not layers:
        raise AftInputError(
            Path(where) / "config.json", "architectures", f"{_architecture(config)} {OWN_ATTENTION}",
            ATTENTION_INTERFACE_FIX,
        )  # fmt: skip


def check_chat_template(tokenizer: Any, where: str | Path) -> None:
    """A chat template must parse and render a plain user/assistant exchange (templates that insist on strict
    alternation are fine: aft_core.models.causal gives them alternating histories)."""
    import jinja2

    if not getattr(tokenizer, "chat_template", None):
        return
    folder = Path(where)
    shown = next(
        (
            folder / name
            for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
            if (folder / name).exists()
        ),
        folder,
    )
    try:
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}], tokenize=False
        )
    except jinja2.TemplateSyntaxError as e:
        raise AftInputError(
            shown,
            "chat_template",
            f"does not parse (line {e.lineno}: {e.message})",
            "fix the Jinja template, or remove chat_template to use the plain serialisation",
        ) from e
    except jinja2.TemplateError as e:
        raise AftInputError(
            shown,
            "chat_template",
            f"fails on a plain user/assistant exchange ({e})",
            "fix the Jinja template, or remove chat_template to use the plain serialisation",
        ) from e


def default_device() -> torch.device:
    """AFT_DEVICE when set (cpu, cuda, cuda:N); otherwise the first GPU when torch sees one, else the CPU."""
    name = os.environ.get("AFT_DEVICE", "").strip()
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise AftInputError("AFT_DEVICE", "device", f"'{name}' is not a device name", "use cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AftInputError(
            "AFT_DEVICE", "device", f"'{name}' asks for a GPU but torch sees none", "unset AFT_DEVICE or set it to cpu"
        )
    if device.type not in ("cpu", "cuda"):
        raise AftInputError("AFT_DEVICE", "device", f"'{name}' is not supported", "use cpu, cuda or cuda:N")
    return device


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_tokenizer_matches(model: Any, tokenizer: Any, where: str | Path) -> None:
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        beyond = tokenizer.convert_ids_to_tokens(list(range(vocab, min(len(tokenizer), vocab + 5))))
        raise AftInputError(
            where,
            "tokenizer",
            # transformers may load a saved tokenizer as its model type's class, which can add tokens of its own
            # (a generic tokenizer beside a Qwen2 config becomes a Qwen2Tokenizer with <|endoftext|>)
            f"has {len(tokenizer)} tokens but the model embeds only {vocab} (loaded as {type(tokenizer).__name__}; "
            f"beyond the embeddings: {', '.join(map(str, beyond))}{', …' if len(tokenizer) > vocab + 5 else ''})",
            "use the tokenizer saved with this model, or give the model embeddings for every token "
            "(model.resize_token_embeddings(len(tokenizer)), then save both)",
        )
    if tokenizer.eos_token_id is None:
        raise AftInputError(where, "tokenizer", "has no EOS token", "use a tokenizer that names its eos_token")
    if tokenizer.pad_token_id is None:
        if getattr(model.config, "is_encoder_decoder", False):
            raise AftInputError(where, "tokenizer", "has no pad token", "use a seq2seq tokenizer with <pad> and </s>")
        tokenizer.pad_token = tokenizer.eos_token  # decoder-only: what follows a response's end is never read


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    if not any((path / name).exists() for name in TOKENIZER_FILES):
        raise AftInputError(
            path,
            "tokenizer",
            "the folder holds no tokenizer files",
            "save the model's tokenizer beside it (tokenizer.save_pretrained(DIR))",
        )
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def save_model(model: Any, tokenizer: Any, out_dir: str | Path) -> None:
    """Write model (safetensors) and tokenizer to `out_dir` via a temporary folder, then swap it in. A PeftModel
    writes its adapter only (PEFT's layout, naming its base)."""
    from aft_core.io import replace_dir

    with replace_dir(out_dir) as tmp:
        if hasattr(model, "peft_config"):  # the adapter only; the (frozen) embeddings are the base's
            model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def count_parameters(model: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What the optimizer updates: every weight, or only an adapter's."""
    return [p for p in model.parameters() if p.requires_grad]


def torch_threads() -> int:
    """Threads for CPU work: all cores unless AFT_THREADS says otherwise."""
    return int(os.environ.get("AFT_THREADS", os.cpu_count() or 1))
