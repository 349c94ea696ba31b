"""Decoder-only AFT (AFT_SPEC §8): prompts and their token map, A against hand-computed attention, greedy
decoding against `generate`, and a causal branch end to end."""

from __future__ import annotations

import copy

import pytest
import torch

from aft_core.data.batching import SourceBatch
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, tokenizer_texts
from aft_core.data.examples import Turn
from aft_core.models import family_of, load_model, train_tokenizer
from bench.architectures import OVERRIDES
from bench.hub_models import build_llama_chat

HISTORIES = [
    [Turn("user", "i need a cheap restaurant in the north", ("cheap", "north"))],
    [
        Turn("user", "i want a museum", ("museum",)),
        Turn("system", "which area would you like ?"),
        Turn("user", "the centre please", ("centre",)),
    ],
    [Turn("user", "find me a hotel"), Turn("system", "what price range ?"), Turn("user", "expensive", ("expensive",))],
]


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, towninfo_dir):
    texts = tokenizer_texts(corpus_to_dataset(load_corpus(towninfo_dir))["train"])
    folder = build_llama_chat(tmp_path_factory.mktemp("llama") / "model", texts)
    model, tokenizer = load_model(folder)
    return model.eval(), tokenizer, family_of(model, tokenizer)


def _batch(family, tokenizer, max_tokens=200):
    rows = family.encode_prompts(HISTORIES, tokenizer, max_tokens)
    return rows, SourceBatch.from_rows(rows, family.pad_id())


def _assert_greedy_decoding_equals_generate(model, family, rows, src, max_new_tokens=10):
    ours = family.generate(model, src, max_new_tokens=max_new_tokens, do_sample=False)
    for b, row in enumerate(rows):
        ids = torch.tensor([row["input_ids"]])
        theirs = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=family.eos_id(),
            pad_token_id=family.pad_id(),
        )[0, ids.shape[1] :]
        mine = ours[b, 1:][: theirs.shape[0]]
        assert torch.equal(mine, theirs), b
        assert bool((ours[b, 1 + theirs.shape[0] :] == family.pad_id()).all())
    return ours


def test_the_chat_template_renders_the_prompt_and_every_token_keeps_its_turn(chat_model):
    model, tokenizer, family = chat_model
    assert family.name == "causal" and tokenizer.pad_token_id is not None
    assert family.eos_id() == tokenizer.convert_tokens_to_ids("<|end|>")  # the template's end of turn, not </s>
    rows, _ = _batch(family, tokenizer)
    for history, row in zip(HISTORIES, rows, strict=True):
        ids = row["input_ids"]
        messages = [{"role": "user" if t.speaker == "user" else "assistant", "content": t.text} for t in history]
        assert ids == tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for index, turn in enumerate(history):
            mine = [i for i, k in zip(ids, row["src_turn"], strict=True) if k == index]
            assert tokenizer.decode(mine).strip() == turn.text
        assert row["src_is_template"][0]  # the attention sink (BOS)
        template = {tokenizer.convert_ids_to_tokens(i) for i, t in zip(ids, row["src_is_template"], strict=True) if t}
        assert {"<s>", "<|user|>", "<|end|>"} <= template
        assert all(t == (k < 0) for t, k in zip(row["src_is_template"], row["src_turn"], strict=True))
        assert not any(row["src_is_tag"])  # role headers are template tokens, not speaker tags
        salient = tokenizer.decode([i for i, s in zip(ids, row["src_is_salient"], strict=True) if s]).split()
        assert salient == [v for t in history for v in t.slot_values]


def test_histories_are_cut_from_the_left_by_whole_turns(chat_model):
    _, tokenizer, family = chat_model
    full = family.encode_prompts([HISTORIES[1]], tokenizer, 1000)[0]
    last_two = family.encode_prompts([HISTORIES[1][1:]], tokenizer, 1000)[0]
    cut = family.encode_prompts([HISTORIES[1]], tokenizer, len(full["input_ids"]) - 1)[0]
    assert cut["input_ids"] == last_two["input_ids"] and min(t for t in cut["src_turn"] if t >= 0) == 1
    tiny = family.encode_prompts([HISTORIES[1]], tokenizer, 12)[0]  # only part of the current turn fits
    assert len(tiny["input_ids"]) <= 12 and set(t for t in tiny["src_turn"] if t >= 0) == {2}


def _cut_one_turn_at_a_time(family, turns, tokenizer, max_tokens):
    """The left cut written the plain way: render, drop the first turn while too long, map tokens one by one."""
    from aft_core.data.examples import serialise_history, slot_value_spans
    from aft_core.models.causal import RESPONSE_CUE, ROLES

    def render(kept, first):
        if tokenizer.chat_template:
            messages = [{"role": ROLES[t.speaker], "content": t.text} for t in kept]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            spans, slots, cursor, start = [], [], 0, []
            for i, turn in enumerate(kept):
                at = text.find(turn.text.strip(), cursor)
                spans.append((at, at + len(turn.text.strip()), first + i, False))
                slots += slot_value_spans(turn.text.strip(), turn.slot_values, at)
                cursor = at + len(turn.text.strip())
        else:
            text, history, slots = serialise_history(kept)
            text, spans = f"{text} {RESPONSE_CUE}", [(s.start, s.end, first + s.turn, s.is_tag) for s in history]
            start = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        turn_of, tag_of, salient_of = [], [], []
        for a, b in enc["offset_mapping"]:
            span = next((sp for sp in spans if sp[0] <= max(a, b - 1) < sp[1]), None) if b > a else None
            turn_of.append(span[2] if span else -1)
            tag_of.append(bool(span and span[3]))
            salient_of.append(bool(span and not span[3] and any(x < b and y > a for x, y in slots)))
        n = len(start)
        return {
            "input_ids": start + list(enc["input_ids"]),
            "src_turn": [-1] * n + turn_of,
            "src_is_tag": [False] * n + tag_of,
            "src_is_salient": [False] * n + salient_of,
            "src_is_template": [True] + [k < 0 for k in ([-1] * n + turn_of)[1:]],
        }

    first = 0
    row = render(turns, 0)
    while len(row["input_ids"]) > max_tokens and first < len(turns) - 1:
        first += 1
        row = render(turns[first:], first)
    return row


@pytest.mark.parametrize("template", ["chat", "none"])
def test_the_left_cut_by_bisection_equals_dropping_one_turn_at_a_time(chat_model, template):
    """Conversations re-encode long histories every round, so the first turn kept is found by bisection and tokens
    are mapped to turns vectorised; both must give exactly the prompt the plain one-turn-at-a-time cut gives."""
    _, tokenizer, family = chat_model
    if template == "none":
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.chat_template = None
        family = copy.copy(family)
    conversation = [turn for history in HISTORIES * 2 for turn in history]
    conversation = [Turn("user" if i % 2 == 0 else "system", t.text, t.slot_values) for i, t in enumerate(conversation)]
    checked = 0
    for end in range(1, len(conversation) + 1, 2):  # every history of a growing conversation, as the user's turn
        history = conversation[:end]
        longest = len(family.encode_prompts([history], tokenizer, 10_000)[0]["input_ids"])
        for max_tokens in range(longest, 10, -7):
            expected = _cut_one_turn_at_a_time(family, history, tokenizer, max_tokens)
            if len(expected["input_ids"]) > max_tokens:
                continue  # the current turn alone is too long: cut by tokens after the same turn search
            assert family.encode_prompts([history], tokenizer, max_tokens)[0] == expected, (end, max_tokens)
            checked += 1
    assert checked > 30


def test_a_template_free_prompt_starts_with_a_sink_and_ends_with_the_response_cue(towninfo_dir):
    from aft_core.models import build_model

    texts = tokenizer_texts(corpus_to_dataset(load_corpus(towninfo_dir))["train"])
    tokenizer = train_tokenizer(texts, 300)
    model = build_model("causal-tiny", tokenizer)
    family = family_of(model, tokenizer)
    row = family.encode_prompts([HISTORIES[1]], tokenizer, 200)[0]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert row["input_ids"][0] == tokenizer.eos_token_id and row["src_is_template"][0]
    cue = [tok for tok, t in zip(tokens, row["src_is_template"], strict=True) if t][1:]
    assert tokenizer.convert_tokens_to_string(cue).strip() == "system:"
    assert sum(row["src_is_tag"]) >= 3  # each turn's speaker tag, as in an encoder's source


def _hand_computed(model, family, row, response, layers):
    """A[t,j] from HF's own eager attention over [prompt; y] alone: rows that predict y_t, mean over heads and
    layers, sink and template columns dropped, renormalised."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    ids = torch.tensor([row["input_ids"] + response])
    n = len(row["input_ids"])
    with torch.no_grad():
        out = eager(input_ids=ids, output_attentions=True)
    rows = torch.arange(len(response)) + n - 1
    raw = torch.stack([out.attentions[layer][0].mean(dim=0) for layer in layers]).mean(dim=0)[rows, :n]  # [T,S]
    keep = ~torch.tensor(row["src_is_template"])
    mass = (raw * keep).sum(dim=-1)
    logp = torch.log_softmax(out.logits[0, rows], dim=-1).gather(1, torch.tensor(response)[:, None])[:, 0]
    return raw * keep / mass[:, None], mass, logp


@pytest.mark.parametrize("layers", [[1], [0, 1]])
def test_attention_equals_hand_computed_rows_with_the_sink_and_template_dropped(chat_model, layers):
    model, tokenizer, family = chat_model
    rows, src = _batch(family, tokenizer)
    torch.manual_seed(0)
    samples = family.generate(model, src, max_new_tokens=8, do_sample=True, k=2)
    with torch.no_grad():
        tf = family.teacher_forced(model, src, samples, 2, layers)
    for n in range(samples.shape[0]):
        row = rows[n // 2]
        length = int(tf["tgt_mask"][n].sum())
        response = tf["labels"][n, :length].tolist()
        attn, mass, logp = _hand_computed(model, family, row, response, layers)
        s = len(row["input_ids"])
        torch.testing.assert_close(tf["attn"][n, :length, :s], attn, rtol=1e-4, atol=1e-6)
        assert float(tf["attn"][n, :length, s:].abs().sum()) == 0.0  # padding columns
        template = torch.tensor(row["src_is_template"])
        assert float(tf["attn"][n, :length, :s][:, template].abs().sum()) == 0.0
        torch.testing.assert_close(tf["attn"][n, :length].sum(dim=-1), torch.ones(length), rtol=1e-5, atol=1e-5)
        assert float(tf["lookback"][n]) == pytest.approx(float(mass.mean()), rel=1e-4)
        assert 0 < float(tf["lookback"][n]) < 1
        torch.testing.assert_close(tf["token_logp"][n, :length], logp, rtol=1e-4, atol=1e-5)


def test_greedy_decoding_equals_generate_token_for_token(chat_model):
    model, tokenizer, family = chat_model
    rows, src = _batch(family, tokenizer)
    _assert_greedy_decoding_equals_generate(model, family, rows, src)


def test_k_samples_share_one_prefill_and_follow_the_model(chat_model):
    """The first sampled token of 4,000 samples of one prompt follows the prefill's distribution."""
    model, tokenizer, family = chat_model
    rows, src = _batch(family, tokenizer)
    one = SourceBatch.from_rows(rows[:1], family.pad_id())
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([rows[0]["input_ids"]])).logits[0, -1], dim=-1)
    torch.manual_seed(1)
    first = family.generate(model, one, max_new_tokens=1, do_sample=True, k=4000)[:, 1]
    freq = torch.bincount(first, minlength=probs.shape[0]).float() / 4000
    top = probs.topk(5).indices
    assert ((freq[top] - probs[top]).abs() <= 4.5 * (probs[top] * (1 - probs[top]) / 4000).sqrt() + 1e-4).all()


def test_the_sft_loss_is_next_token_cross_entropy_on_the_response_only(chat_model):
    model, tokenizer, family = chat_model
    rows, _ = _batch(family, tokenizer)
    targets = family.encode_targets(["there are 3 .", "the museum is free", "ok"], tokenizer, 10)
    batch = family.sft_batch([r["input_ids"] for r in rows], targets, family.pad_id())
    with torch.no_grad():
        loss = family.sft_loss(model, batch)
        by_hand = []
        for row, target in zip(rows, targets, strict=True):
            ids = torch.tensor([row["input_ids"] + target])
            logp = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
            s = len(row["input_ids"])
            by_hand += [-float(logp[s - 1 + t, y]) for t, y in enumerate(target)]
    assert targets[0][-1] == family.eos_id()
    assert float(loss) == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)


def test_the_uncached_pass_reads_the_same_rows_and_raw_attention_is_a_before_renormalisation(chat_model):
    """Gradient checkpointing scores [prompt; y] per response without the shared cache: the same A and log-probs.
    `attn_raw` (reward_attention=raw) is Â on the counted positions: A times each row's mass m_t < 1."""
    import copy

    from aft_core.models.family import enable_gradient_checkpointing

    model, tokenizer, family = chat_model
    _, src = _batch(family, tokenizer)
    torch.manual_seed(0)
    samples = family.generate(model, src, max_new_tokens=8, do_sample=True, k=2)
    with torch.no_grad():
        shared = family.teacher_forced(model, src, samples, 2, [0, 1])
    checkpointed = copy.deepcopy(model)
    enable_gradient_checkpointing(checkpointed)
    uncached = family.teacher_forced(checkpointed, src, samples, 2, [0, 1])  # gradients on: the uncached form
    mask = shared["tgt_mask"]
    torch.testing.assert_close(uncached["attn"][mask], shared["attn"][mask], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(uncached["token_logp"][mask], shared["token_logp"][mask].detach(), rtol=1e-4, atol=1e-5)
    raw = shared["attn_raw"]
    mass = raw.sum(dim=-1)  # [N,T]
    torch.testing.assert_close(shared["attn"] * mass[..., None], raw, rtol=1e-5, atol=1e-7)
    assert 0 < float(mass[mask].min()) and float(mass[mask].max()) < 1


def test_the_shared_prompt_pass_gives_the_gradient_of_one_pass_per_response(chat_model):
    """The K responses reuse one prompt pass (its KV cache repeated): log-probs and their gradient must equal
    scoring each [prompt; y] on its own."""
    model, tokenizer, family = chat_model
    rows, src = _batch(family, tokenizer)
    torch.manual_seed(3)
    samples = family.generate(model, src, max_new_tokens=6, do_sample=True, k=3)
    model.zero_grad(set_to_none=True)
    tf = family.teacher_forced(model, src, samples, 3, None)
    (tf["token_logp"] * tf["tgt_mask"]).sum().backward()
    shared = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    total = 0.0
    for n in range(samples.shape[0]):
        row, length = rows[n // 3], int(tf["tgt_mask"][n].sum())
        response = tf["labels"][n, :length].tolist()
        ids = torch.tensor([row["input_ids"] + response])
        s = len(row["input_ids"])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, s - 1 : s - 1 + length], dim=-1)
        total = total + logp.gather(1, torch.tensor(response)[:, None]).sum()
    total.backward()
    alone = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    assert float((tf["token_logp"] * tf["tgt_mask"]).sum().detach()) == pytest.approx(float(total.detach()), rel=1e-5)
    assert float((shared - alone).norm() / alone.norm()) < 1e-5


def _other_architecture(name: str, tokenizer):
    """A tiny random model of another decoder-only architecture, loaded as a user's folder would be."""
    import transformers

    common = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    configs = {
        "gpt2": transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=512, **common),
        "qwen2": transformers.Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **common,
        ),
        "mistral": transformers.MistralConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=8,
            max_position_embeddings=512,
            **common,
        ),
    }
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(configs[name])


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "mistral"])
def test_other_decoder_only_architectures_need_no_code_of_their_own(chat_model, tmp_path, name):
    """The family is read from the config: GPT-2, Qwen2 and Mistral (grouped-query attention) load, decode as
    `generate` does and give the hand-computed A."""
    _, tokenizer, _ = chat_model
    folder = tmp_path / name
    _other_architecture(name, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model, tok = load_model(folder)
    model.eval()
    family = family_of(model, tok)
    assert family.name == "causal" and family.attention_layers(model) == [0, 1]
    rows, src = _batch(family, tok)
    ours = _assert_greedy_decoding_equals_generate(model, family, rows, src, max_new_tokens=6)
    with torch.no_grad():
        tf = family.teacher_forced(model, src, ours, 1, [0, 1])
    length = int(tf["tgt_mask"][0].sum())
    attn, mass, logp = _hand_computed(model, family, rows[0], tf["labels"][0, :length].tolist(), [0, 1])
    s = len(rows[0]["input_ids"])
    torch.testing.assert_close(tf["attn"][0, :length, :s], attn, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(tf["token_logp"][0, :length], logp, rtol=1e-4, atol=1e-5)


HYBRIDS = {  # model type: the layers that attend (config sizes: bench/architectures.py's OVERRIDES)
    "jamba": [1],  # Mamba layers (a recurrent state and a convolution state in transformers' own cache)
    "lfm2": [1],  # short convolutions
    "falcon_h1": [0, 1],  # Mamba-2 beside attention in every layer: all layers attend, and state is carried
    "minimax": [1],  # lightning attention, its state kept in a cache class of the model's own
    "qwen3_next": [1],  # gated delta rule; its cache updates the recurrent state in place
}


@pytest.mark.parametrize("name", list(HYBRIDS))
def test_a_hybrid_decodes_as_generate_and_reads_a_from_its_attention_layers_only(chat_model, tmp_path, name):
    """A hybrid's recurrent layers carry state through every token, so a right-padded prompt's padding would
    enter its response's state: prompts are left-padded, K samples share a prefill only where transformers' own
    cache can repeat its rows, and A is the mean over the attention layers. Greedy decoding equals `generate`;
    log-probs and their gradient equal one unpadded pass per response; A equals the eager attention of the
    attention layers. With gradients on, each [prompt; y] is one pass (a linear-attention cache updates its state
    in place, which autograd refuses): the same numbers."""
    import transformers

    _, tokenizer, _ = chat_model
    attending = HYBRIDS[name]
    config = transformers.AutoConfig.for_model(
        name,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        **OVERRIDES[name],
    )
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / name)
    tokenizer.save_pretrained(tmp_path / name)
    model, tok = load_model(tmp_path / name)
    model.eval()
    family = family_of(model, tok)
    assert family.attention_layers(model) == attending
    rows, src = _batch(family, tok)
    assert len({len(r["input_ids"]) for r in rows}) == 3  # three prompt lengths: two of them padded
    _assert_greedy_decoding_equals_generate(model, family, rows, src, max_new_tokens=6)
    torch.manual_seed(0)
    samples = family.generate(model, src, max_new_tokens=6, do_sample=True, k=2)
    with torch.no_grad():  # the shared prompt pass (where the cache can repeat its rows)
        tf = family.teacher_forced(model, src, samples, 2, attending)
    model.zero_grad(set_to_none=True)
    graded = family.teacher_forced(model, src, samples, 2, attending)  # with gradients: one pass per response
    (graded["token_logp"] * graded["tgt_mask"]).sum().backward()
    batched = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    mask = tf["tgt_mask"]
    torch.testing.assert_close(graded["attn"][mask], tf["attn"][mask], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(graded["token_logp"][mask].detach(), tf["token_logp"][mask], rtol=1e-4, atol=5e-5)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    total = 0.0
    for n in range(samples.shape[0]):
        row, length = rows[n // 2], int(tf["tgt_mask"][n].sum())
        response = tf["labels"][n, :length].tolist()
        ids = torch.tensor([row["input_ids"] + response])
        s = len(row["input_ids"])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, s - 1 : s - 1 + length], dim=-1)
        logp = logp.gather(1, torch.tensor(response)[:, None])[:, 0]
        # Jamba's Mamba scan runs sequentially over cached steps and in parallel over a whole pass: about 1e-5 apart
        # (a left-padded pass by hand equals the unpadded one exactly)
        torch.testing.assert_close(tf["token_logp"][n, :length], logp.detach(), rtol=1e-4, atol=5e-5)
        total = total + logp.sum()
        with torch.no_grad():
            attentions = eager(input_ids=ids, output_attentions=True).attentions
        if len(attentions) == config.num_hidden_layers:  # one per layer (MiniMax), else one per attention layer
            attentions = tuple(attentions[i] for i in attending)
        query = torch.arange(length) + s - 1
        raw = torch.stack([a[0].mean(dim=0) for a in attentions]).mean(dim=0)[query, :s]  # [T,S]
        raw = raw * ~torch.tensor(row["src_is_template"])
        torch.testing.assert_close(
            tf["attn"][n, :length, :s], raw / raw.sum(dim=-1, keepdim=True), rtol=1e-4, atol=1e-6
        )
        assert float(tf["attn"][n, :length, s:].abs().sum()) == 0.0  # padding columns
    total.backward()
    alone = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    assert float((batched - alone).norm() / alone.norm()) < 1e-5


def test_turns_are_found_after_the_templates_own_words_not_inside_them(chat_model, towninfo_dir):
    """Qwen2.5's template writes a default system prompt ("… a helpful assistant.") before the first turn and
    `<|im_start|>` before each: a turn "help" or "start" must map to its own tokens, not to those words."""
    from aft_core.models.causal import CausalFamily
    from bench.hub_models import QWEN_CHAT_TEMPLATE, chat_tokenizer

    model, _, _ = chat_model
    texts = tokenizer_texts(corpus_to_dataset(load_corpus(towninfo_dir))["train"])
    tokenizer = chat_tokenizer(texts, QWEN_CHAT_TEMPLATE, ("<|im_start|>", "<|im_end|>"))
    family = CausalFamily(model.config, None, tokenizer)
    history = [Turn("user", "help"), Turn("system", "what would you like ?"), Turn("user", "start", ("start",))]
    row = family.encode_prompts([history], tokenizer, 200)[0]
    ids, turn_of = row["input_ids"], row["src_turn"]
    text = tokenizer.decode(ids)
    prompt = text.index("helpful assistant")
    assert prompt < text.index("help<|im_end|>")  # the collision this test is about is there
    for index, turn in enumerate(history):
        tokens = [i for i, t in zip(ids, turn_of, strict=True) if t == index]
        assert tokenizer.decode(tokens).strip() == turn.text, (index, tokenizer.decode(tokens))
        before = tokenizer.decode(ids[: turn_of.index(index)])  # everything before the turn's first token
        assert before.endswith(("user\n", "assistant\n")) and "helpful assistant." in before, (index, before)
    salient = [i for i, s in zip(ids, row["src_is_salient"], strict=True) if s]
    assert tokenizer.decode(salient).strip() == "start"
    assert "<|im_start|>" not in tokenizer.decode([i for i, t in zip(ids, turn_of, strict=True) if t >= 0])
