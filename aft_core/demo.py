"""What the interactive demo computes (`aft demo RUN_DIR`; the page itself is aft_core.demo_app).

`DemoRun` opens a pipeline run folder and answers, for any dialogue history (a test example or one typed
turn by turn) and any system of the run (SFT, each branch's ★ and last checkpoint, or any checkpoint of a
branch from its saved weights):

- `respond`: the system's response, greedy or sampled, with A[T,S] over the history tokens (the run's
  layers), the turn of every source token, speaker tags and the I_x mask, focus / coverage / repeat under
  the run's I_x, and entity correctness where the corpus has a venue database;
- `aft_step`: one AFT step made visible: K samples of the system, each with its reward parts, R, the
  normalised reward R̃, its softmax weight and its log-ratio to π_ref (the SFT model), as AFT_SPEC §5 has it;
- `start_conversation` / `advance`: several systems talk to the user simulator (aft_core.dialogue) on the same
  test goal, side by side, one exchange at a time, each system turn with its attention map; the person can
  take over as the user.

Models are loaded once per system and kept (a demo compares a handful).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aft_core.data.batching import SourceBatch
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset
from aft_core.data.examples import Turn
from aft_core.data.venues import VenueDB, entity_correct, names_venue
from aft_core.dialogue.closed_loop import reader_gate
from aft_core.dialogue.goals import Goal, load_goals
from aft_core.dialogue.metrics import dialogue_outcome
from aft_core.dialogue.reader import Reader, SystemReading
from aft_core.dialogue.selfplay import first_offer, system_turn, user_turn
from aft_core.dialogue.user import AgendaUser
from aft_core.errors import AftInputError
from aft_core.evaluation import load_system
from aft_core.layout import RunLayout
from aft_core.loss import sequence_logprob, softmax_weights, zscore
from aft_core.models import family_of, model_device, parse_layers
from aft_core.reward import coverage, focus, haca_reward, repeat_penalty

SFT = "SFT"


@dataclass(frozen=True)
class Decoding:
    """How a response is decoded."""

    sample: bool = False  # greedy when False
    temperature: float = 1.0
    max_new_tokens: int = 48


def _turn(turn: Turn) -> dict[str, Any]:
    return {"speaker": turn.speaker, "text": turn.text, "slot_values": list(turn.slot_values)}


@dataclass
class LiveConversation:
    """One test goal talked through by several systems side by side, one exchange at a time.

    Each system has its own simulated user (the same goal, reveal mode and seed, so the same opening) and its
    own history. `shown[name]` is what the page shows: user turns, and system turns with `respond`'s result
    (response, attention map, scores). Once the person types (`advance(typed=...)`), they are the user of every
    system from then on: the simulator is off and the dialogues are no longer scored."""

    goal: Goal
    reveal: str
    seed: int
    systems: list[str]
    users: dict[str, AgendaUser]
    history: dict[str, list[dict[str, Any]]]
    shown: dict[str, list[dict[str, Any]]]
    readings: dict[str, list[SystemReading]]
    offers: dict[str, int]
    outcome: dict[str, dict[str, Any] | None]
    typed: bool = False

    def live(self) -> list[str]:
        """The systems whose conversation has not ended."""
        return [name for name in self.systems if self.outcome[name] is None]


class DemoRun:
    """A pipeline run folder, opened for the demo."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run = RunLayout(run_dir)
        if not self.run.sft.result.exists():
            raise AftInputError(
                self.run.root,
                "sft",
                "the run has no finished SFT model",
                "run the pipeline first (`aft-pipeline --run-dir RUN_DIR`)",
            )
        sft = json.loads(self.run.sft.result.read_text(encoding="utf-8"))
        self.sft_model = sft["model_dir"]
        self.sft_config = self.run.sft.read_config()
        self.settings = self.run.read_parameters().get("sweep", {}).get("branch", {})
        self.ix_mode = self.settings.get("ix_mode", "all")
        self.repeat_n = self.settings.get("repeat_n", 3)
        corpus = load_corpus(self.sft_config["data"])
        self.test = corpus_to_dataset(corpus)["test"]
        self.db = VenueDB.load(corpus.db_dir) if corpus.db_dir else None
        self._models: dict[str, tuple[Any, Any]] = {}
        self._goals: list[Goal] | None = None
        self.conversation_refused: str | None = None  # why this corpus has no conversations, once asked

    # --- what there is to choose ---------------------------------------------------------------------

    def systems(self) -> dict[str, dict[str, Any]]:
        """Every system of the run: SFT, then per judged branch its ★, its last and each saved checkpoint."""
        systems: dict[str, dict[str, Any]] = {SFT: {"model": self.sft_model, "weights": None, "config": None}}
        for row in self.run.branch_rows():
            branch = self.run.branch(str(row["branch_id"]))
            if not branch.verdict.exists():
                continue
            verdict, config = branch.read_verdict(), branch.read_config()
            steps = sorted(int(p.stem.split("-")[1]) for p in branch.weights(0).parent.glob("step-*.safetensors"))
            for step in steps:
                tags = [t for t, s in (("★", verdict["primary_step"]), ("last", verdict["last_step"])) if s == step]
                name = f"{row['branch_id']} step {step}" + (f" ({', '.join(tags)})" if tags else "")
                systems[name] = {"model": self.sft_model, "weights": str(branch.weights(step)), "config": config}
        return systems

    def find_examples(self, query: str = "", limit: int = 50) -> list[tuple[str, str]]:
        """(label, example_id) of test examples whose id or history/reference contains `query`."""
        query = query.strip().lower()
        found = []
        for row in self.test:
            text = " ".join([row["example_id"], *row["history_texts"], row["target"]]).lower()
            if not query or query in text:
                found.append((f"{row['example_id']}: {row['history_texts'][-1][:80]}", row["example_id"]))
                if len(found) >= limit:
                    break
        return found

    def example(self, example_id: str) -> dict[str, Any]:
        """A test example: its history (speaker, text, slot values), reference and belief state."""
        rows = self.test.filter(lambda r: r["example_id"] == example_id)
        if len(rows) == 0:
            raise AftInputError(
                self.run.root, "example_id", f"no test example '{example_id}'", "pick one from the list"
            )
        row = rows[0]
        return {
            "example_id": example_id,
            "reference": row["target"],
            "belief_state": json.loads(row["belief_state"]),
            "turns": [
                {"speaker": s, "text": t, "slot_values": list(v)}
                for s, t, v in zip(
                    row["history_speakers"], row["history_texts"], row["history_slot_values"], strict=True
                )
            ],
        }

    # --- computing ---------------------------------------------------------------------------------

    def _load(self, name: str) -> tuple[Any, Any]:
        if name not in self._models:
            spec = self.systems().get(name)
            if spec is None:
                raise AftInputError(self.run.root, "system", f"no system '{name}'", "pick one from the list")
            self._models[name] = load_system(spec["model"], spec["weights"])
        return self._models[name]

    def _source(
        self, turns: Sequence[dict[str, Any]], tokenizer: Any, family: Any
    ) -> tuple[dict[str, Any], SourceBatch]:
        history = [Turn(t["speaker"], t["text"], tuple(t.get("slot_values") or ())) for t in turns]
        if not history or history[-1].speaker != "user":
            raise AftInputError(
                "demo", "history", "the last turn must be the user's", "end the history with a user turn"
            )
        row = family.encode_prompts([history], tokenizer, self.sft_config["max_source_tokens"])[0]
        return row, SourceBatch.from_rows([row], family.pad_id())

    def _layers(self, model: Any, family: Any) -> list[int]:
        return parse_layers(self.settings.get("layers", "all"), family.attention_layers(model))

    @torch.no_grad()
    def respond(
        self,
        system: str,
        turns: Sequence[dict[str, Any]],
        decoding: Decoding = Decoding(),
        example: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> dict[str, Any]:
        """One response of `system` to the history, with its attention map and scores; given the test `example`
        the history came from, also whether the response names a venue satisfying its belief state (scored,
        as in the test evaluation, on turns whose reference names a venue)."""
        model, tokenizer = self._load(system)
        family = family_of(model, tokenizer)
        model.eval()
        row, src = self._source(turns, tokenizer, family)
        src = src.to(model_device(model))
        torch.manual_seed(seed)
        seqs = family.generate(
            model,
            src,
            max_new_tokens=decoding.max_new_tokens,
            do_sample=decoding.sample,
            temperature=decoding.temperature,
        )
        tf = family.teacher_forced(model, src, seqs, 1, self._layers(model, family))
        hist = src.mask(self.ix_mode)
        t_len = int(tf["tgt_mask"][0].sum())
        text = tokenizer.decode(tf["labels"][0], skip_special_tokens=True).strip()
        result = {
            "system": system,
            "response": text,
            "tokens": tokenizer.convert_ids_to_tokens(tf["labels"][0, :t_len].tolist()),
            "source_tokens": tokenizer.convert_ids_to_tokens(row["input_ids"]),
            "turns": list(row["src_turn"]),
            "is_tag": [bool(x) for x in row["src_is_tag"]],
            "ix": hist[0].tolist(),
            "attention": tf["attn"][0, :t_len].cpu().tolist(),
            "ix_mode": self.ix_mode,
            "focus": float(focus(tf["attn"], tf["tgt_mask"], hist)[0]),
            "coverage": float(coverage(tf["attn"], tf["tgt_mask"], hist)[0]),
            "repeat": float(
                repeat_penalty(tf["labels"], tf["tgt_mask"], self.repeat_n, (family.pad_id(), family.eos_id()))[0]
            ),
            "lookback": float(tf["lookback"][0]),
            "entity_correct": None,
        }
        if self.db is not None and example is not None and names_venue(self.db, example["reference"]):
            result["entity_correct"] = bool(entity_correct(self.db, text, example["belief_state"]))
        return result

    @torch.no_grad()
    def aft_step(
        self, system: str, turns: Sequence[dict[str, Any]], k: int = 4, seed: int = 0, max_new_tokens: int = 48
    ) -> list[dict[str, Any]]:
        """K samples of `system` scored as one AFT step scores them (the branch's α, β, γ, η, I_x; the
        defaults of E3-20 for SFT), with log π/π_ref against the SFT model. The weights sum to 1."""
        spec = self.systems().get(system)
        if spec is None:
            raise AftInputError(self.run.root, "system", f"no system '{system}'", "pick one from the list")
        cfg = {
            "alpha": 1.0,
            "beta": 1.0,
            "gamma": 0.5,
            "eta": 1.0,
            "temperature": 1.0,
            "ix_mode": self.ix_mode,
            "repeat_n": self.repeat_n,
            "logprob_reduction": "sum",
            **(spec["config"] or self.settings),
        }
        policy, tokenizer = self._load(system)
        reference, _ = self._load(SFT)
        family = family_of(policy, tokenizer)
        policy.eval()
        row, src = self._source(turns, tokenizer, family)
        src = src.to(model_device(policy))
        torch.manual_seed(seed)
        samples = family.generate(
            policy, src, max_new_tokens=max_new_tokens, do_sample=True, k=k, temperature=cfg["temperature"]
        )  # [K, P+T]
        eos, pad = family.eos_id(), family.pad_id()
        tf = family.teacher_forced(policy, src, samples, k, self._layers(policy, family))
        ref = family.teacher_forced(reference, src, samples, k, None)
        hist = src.mask(cfg["ix_mode"]).repeat_interleave(k, dim=0)  # [K,S]
        special = (pad, eos)
        cov = coverage(tf["attn"], tf["tgt_mask"], hist)
        foc = focus(tf["attn"], tf["tgt_mask"], hist)
        rep = repeat_penalty(tf["labels"], tf["tgt_mask"], cfg["repeat_n"], special)
        rewards = haca_reward(
            tf["attn"],
            tf["labels"],
            tf["tgt_mask"],
            hist,
            cfg["alpha"],
            cfg["beta"],
            cfg["gamma"],
            cfg["repeat_n"],
            special,
        ).view(1, k)
        weights = softmax_weights(rewards, cfg["eta"])[0]
        normalised = zscore(rewards)[0]
        logp = sequence_logprob(tf["token_logp"], tf["tgt_mask"], cfg["logprob_reduction"])
        ref_logp = sequence_logprob(ref["token_logp"], tf["tgt_mask"], cfg["logprob_reduction"])
        texts = [t.strip() for t in tokenizer.batch_decode(tf["labels"], skip_special_tokens=True)]
        return [
            {
                "candidate": i + 1,
                "response": texts[i],
                "coverage": float(cov[i]),
                "focus": float(foc[i]),
                "repeat": float(rep[i]),
                "reward": float(rewards[0, i]),
                "normalised_reward": float(normalised[i]),
                "weight": float(weights[i]),
                "log_ratio_to_ref": float(logp[i] - ref_logp[i]),
            }
            for i in range(k)
        ]

    # --- conversations with the user simulator ---------------------------------------------------------------

    def conversation_goals(self, limit: int = 50) -> list[tuple[str, str]]:
        """(label, dialogue_id) of the test goals a user can pursue; none, with `conversation_refused` saying why,
        when the corpus has no goals or its system turns cannot be read (the closed-loop stage's gate)."""
        if self._goals is None:
            reason, _ = reader_gate(self.sft_config["data"], "test")
            self.conversation_refused = reason
            self._goals = [] if reason else load_goals(self.sft_config["data"], "test")
        return [(f"{g.dialogue_id}: {describe_goal(g)}", g.dialogue_id) for g in self._goals[:limit]]

    def start_conversation(
        self,
        dialogue_id: str,
        systems: Sequence[str],
        reveal: str = "sharded",
        seed: int = 0,
        max_exchanges: int = 20,
        max_new_tokens: int = 48,
    ) -> LiveConversation:
        """Each system's simulated user opens the conversation on goal `dialogue_id`, and each system replies."""
        self.conversation_goals()
        goal = next((g for g in self._goals or [] if g.dialogue_id == dialogue_id), None)
        if goal is None:
            raise AftInputError(self.run.root, "goal", f"no test goal '{dialogue_id}'", "pick one from the list")
        if not systems:
            raise AftInputError("demo", "systems", "no system chosen", "choose at least one system")
        users, history, shown = {}, {}, {}
        for name in systems:
            user = AgendaUser(goal, reveal, seed, max_exchanges=max_exchanges)
            opening = user_turn(user, user.open())
            users[name], history[name] = user, [_turn(opening)]
            shown[name] = [{"speaker": "user", "text": opening.text}]
        conversation = LiveConversation(
            goal=goal,
            reveal=reveal,
            seed=seed,
            systems=list(systems),
            users=users,
            history=history,
            shown=shown,
            readings={name: [] for name in systems},
            offers={name: 0 for name in systems},
            outcome={name: None for name in systems},
        )
        for name in systems:
            self._reply(conversation, name, max_new_tokens)
        return conversation

    def advance(
        self, conversation: LiveConversation, typed: str | None = None, max_new_tokens: int = 48
    ) -> LiveConversation:
        """One exchange for every live system: the user's next turn, then the system's reply (greedy, with its
        attention map). The user's turn is the simulator's answer to the system's last reply, or `typed` for all
        of them: from the first typed turn on the person is the user and nothing is scored. A system whose
        simulated user says goodbye or gives up ends with its outcome (Inform, Success, Book, Complete)."""
        typed = (typed or "").strip() or None
        if typed is None and conversation.typed:
            raise AftInputError("demo", "user", "you are the user of this conversation", "type the next turn")
        conversation.typed = conversation.typed or typed is not None
        for name in conversation.live():
            if typed is not None:
                conversation.history[name].append({"speaker": "user", "text": typed, "slot_values": []})
                conversation.shown[name].append({"speaker": "user", "text": typed, "typed": True})
            else:
                user = conversation.users[name]
                answer = user.respond(conversation.readings[name][-1])
                if answer is None:
                    texts = [t["text"] for t in conversation.shown[name] if t["speaker"] == "system"]
                    conversation.outcome[name] = dialogue_outcome(
                        conversation.goal,
                        texts,
                        conversation.readings[name],
                        complete=user.complete,
                        timeout=user.gave_up,
                        offers=conversation.offers[name],
                        violations=user.violations,
                    )
                    continue
                said = user_turn(user, answer)
                conversation.history[name].append(_turn(said))
                conversation.shown[name].append({"speaker": "user", "text": said.text})
            self._reply(conversation, name, max_new_tokens)
        return conversation

    def _reply(self, conversation: LiveConversation, name: str, max_new_tokens: int) -> None:
        """`name`'s greedy reply to its history, read as the closed-loop evaluation reads it."""
        if self.db is None:
            raise AftInputError(self.run.root, "db", "the corpus has no venue database", "use a corpus with db/")
        result = self.respond(name, conversation.history[name], Decoding(max_new_tokens=max_new_tokens))
        reading = Reader(self.db).read(result["response"])
        conversation.offers[name] += first_offer(conversation.users[name], reading)
        conversation.readings[name].append(reading)
        conversation.history[name].append(_turn(system_turn(result["response"], reading)))
        conversation.shown[name].append({"speaker": "system", "text": result["response"], "result": result})


def describe_goal(goal: Goal) -> str:
    """A goal in one line: per domain its constraints, what the user asks for and what it books."""
    parts = []
    for d in goal.domains:
        text = f"{d.domain} " + ", ".join(f"{k}={v}" for k, v in d.constraints.items())
        if d.requests:
            text += f"; asks {', '.join(d.requests)}"
        if d.book:
            text += "; books " + ", ".join(f"{k}={v}" for k, v in d.book.items())
        parts.append(text)
    return " | ".join(parts)
