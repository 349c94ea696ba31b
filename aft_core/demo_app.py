"""The demo page (`aft demo RUN_DIR`): SFT and AFT side by side with live cross-attention, on 127.0.0.1.

Built with Gradio (the field's demo standard), which serves its own front end from the installed package:
analytics, share links and version checks are off, and the theme uses the system's fonts, so the page asks
nothing of any address but the one it is served from (tests/test_demo.py records every request a browser makes).
The computing is aft_core.demo's; this module only lays it out.
"""

from __future__ import annotations

import html
import json
import os
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # before transformers loads: no weight-loading bars

from aft_core.demo import SFT, Decoding, DemoRun, LiveConversation, describe_goal  # noqa: E402

CSS = """.aft-systems{display:flex;gap:12px;flex-wrap:wrap}.aft-system{flex:1 1 380px;border:1px solid #ced4da;
border-radius:6px;padding:8px;min-width:320px;overflow-x:auto}.aft-response{font-size:15px;margin:4px 0 8px}
.aft-metrics{font-size:12px;color:#495057}.aft-heat{border-collapse:collapse;font-size:9px;margin-top:6px}
.aft-heat td{width:9px;height:11px;padding:0}.aft-heat th{font-weight:normal;padding:0 2px;text-align:right;
white-space:nowrap}.aft-src{writing-mode:vertical-rl;transform:rotate(180deg);height:70px;font-size:8px;padding:0}
.aft-turn{border-left:2px dashed #212529}.aft-tag{font-weight:bold;color:#1864ab}
.aft-ix{border-bottom:3px solid #f59f00}
.aft-ok{color:#2b8a3e}.aft-bad{color:#c92a2a}
.aft-talk{margin:4px 0}.aft-user{color:#495057}.aft-sys{margin:4px 0 2px}.aft-outcome{margin-top:8px;font-size:13px}
details.aft-turn-heat summary{font-size:11px;color:#495057;cursor:pointer}"""


def parse_history(text: str) -> list[dict[str, Any]]:
    """One turn per line, `user: ...` or `system: ...` (blank lines ignored)."""
    turns = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        speaker, sep, said = line.partition(":")
        speaker = speaker.strip().lower()
        if not sep or speaker not in ("user", "system") or not said.strip():
            raise ValueError(f"history line {n}: write `user: ...` or `system: ...`, got {line.strip()[:60]!r}")
        turns.append({"speaker": speaker, "text": said.strip()})
    if not turns:
        raise ValueError("the history is empty: write at least one `user: ...` line")
    return turns


def history_text(turns: list[dict[str, Any]]) -> str:
    return "\n".join(f"{t['speaker']}: {t['text']}" for t in turns)


def _colour(weight: float, top: float) -> str:
    level = 0.0 if top <= 0 else min(1.0, weight / top)
    r, g, b = (int(255 - (255 - c) * level) for c in (25, 113, 194))  # white → blue
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap_html(result: dict[str, Any]) -> str:
    """A[T,S] as a table: rows are response tokens, columns history tokens (turn boundaries dashed, speaker
    tags bold, I_x underlined in orange). The numbers travel in `data-attention` (what the browser test reads)."""
    attention, sources = result["attention"], result["source_tokens"]
    top = max((max(row) for row in attention if row), default=0.0)
    head = []
    for j, token in enumerate(sources):
        classes = ["aft-src"]
        if j and result["turns"][j] != result["turns"][j - 1]:
            classes.append("aft-turn")
        if result["is_tag"][j]:
            classes.append("aft-tag")
        if result["ix"][j]:
            classes.append("aft-ix")
        head.append(f"<th class='{' '.join(classes)}'>{html.escape(token)}</th>")
    body = []
    for t, row in enumerate(attention):
        cells = "".join(
            f"<td style='background:{_colour(w, top)}' title='{html.escape(sources[j])}: {w:.3f}'"
            + (" class='aft-turn'" if j and result["turns"][j] != result["turns"][j - 1] else "")
            + "></td>"
            for j, w in enumerate(row)
        )
        body.append(f"<tr><th>{html.escape(result['tokens'][t])}</th>{cells}</tr>")
    data = html.escape(json.dumps(attention))
    return (
        f"<table class='aft-heat' data-system='{html.escape(result['system'])}' data-attention='{data}'>"
        f"<tr><th></th>{''.join(head)}</tr>{''.join(body)}</table>"
    )


def comparison_html(results: list[dict[str, Any]]) -> str:
    columns = []
    for r in results:
        entity = (
            ""
            if r["entity_correct"] is None
            else (
                " · <span class='aft-ok'>venue correct</span>"
                if r["entity_correct"]
                else " · <span class='aft-bad'>venue wrong</span>"
            )
        )
        columns.append(
            f"<div class='aft-system' data-system='{html.escape(r['system'])}'><b>{html.escape(r['system'])}</b>"
            f"<div class='aft-response' data-role='response'>{html.escape(r['response']) or '<i>(empty)</i>'}</div>"
            f"<div class='aft-metrics'>focus {r['focus']:.3f} · coverage {r['coverage']:.4f} · repeat {r['repeat']:.3f}"
            f" (I_x = {html.escape(r['ix_mode'])}){entity}</div>{heatmap_html(r)}</div>"
        )
    return f"<div class='aft-systems'>{''.join(columns)}</div>"


def conversation_html(conversation: LiveConversation) -> str:
    """Each system's conversation in a column: user turns, and system turns with their scores and attention map
    (the latest one open). Then the outcome of a finished conversation, or why it is not scored."""
    columns = []
    for name in conversation.systems:
        shown = conversation.shown[name]
        last_system = max((i for i, t in enumerate(shown) if t["speaker"] == "system"), default=-1)
        lines = []
        for i, turn in enumerate(shown):
            if turn["speaker"] == "user":
                who = "you" if turn.get("typed") else "user"
                lines.append(f"<div class='aft-talk aft-user'><b>{who}:</b> {html.escape(turn['text'])}</div>")
                continue
            r = turn["result"]
            lines.append(
                f"<div class='aft-talk aft-sys' data-role='system-turn'><b>system:</b> "
                f"{html.escape(r['response']) or '<i>(empty)</i>'}</div>"
                f"<details class='aft-turn-heat'{' open' if i == last_system else ''}><summary>focus {r['focus']:.3f}"
                f" · coverage {r['coverage']:.4f} · repeat {r['repeat']:.3f} (I_x = {html.escape(r['ix_mode'])})"
                f"</summary>{heatmap_html(r)}</details>"
            )
        outcome = conversation.outcome[name]
        if conversation.typed:
            status = "you are the user: not scored"
        elif outcome is None:
            status = "in progress: press <i>Next turn</i> for the simulated user's answer"
        else:
            marks = " · ".join(
                f"<span class='aft-{'ok' if outcome[key] else 'bad'}'>{key} {'yes' if outcome[key] else 'no'}</span>"
                for key in ("inform", "success", "complete")
                if key in outcome
            )
            status = f"ended: {marks}"
        columns.append(
            f"<div class='aft-system' data-system='{html.escape(name)}'><b>{html.escape(name)}</b>"
            f"{''.join(lines)}<div class='aft-outcome' data-role='outcome'>{status}</div></div>"
        )
    return (
        f"<p>goal {html.escape(conversation.goal.dialogue_id)}: {html.escape(describe_goal(conversation.goal))} "
        f"(user reveals: {html.escape(conversation.reveal)})</p><div class='aft-systems'>{''.join(columns)}</div>"
    )


CANDIDATE_COLUMNS = (
    ("candidate", "k", "{}"),
    ("response", "response", "{}"),
    ("coverage", "coverage", "{:.5f}"),
    ("focus", "focus", "{:.4f}"),
    ("repeat", "repeat", "{:.3f}"),
    ("reward", "R", "{:.4f}"),
    ("normalised_reward", "R̃ (normalised)", "{:+.3f}"),
    ("weight", "softmax weight", "{:.4f}"),
    ("log_ratio_to_ref", "log π/π_ref", "{:+.3f}"),
)


def candidates_html(rows: list[dict[str, Any]]) -> str:
    """One AFT step's K candidates: reward parts, R, R̃, weight and log-ratio to π_ref (weights sum to 1)."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in CANDIDATE_COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td data-key='{key}'>{html.escape(fmt.format(r[key]))}</td>" for key, _, fmt in CANDIDATE_COLUMNS)
        + "</tr>"
        for r in rows
    )
    total = sum(r["weight"] for r in rows)
    return (
        f"<table class='aft-candidates'><tr>{head}</tr>{body}</table>"
        f"<p>K = {len(rows)}; Σ weights = {total:.4f}. R = α·coverage + β·focus − γ·repeat; R̃ = z-score over the "
        "K; weight = softmax(R̃/η); the step maximises Σ weight·log π(y) − η_kl·KL.</p>"
    )


def build_app(demo: DemoRun) -> Any:
    """The Gradio Blocks of the demo on `demo`'s run."""
    import gradio as gr

    systems = list(demo.systems())
    default = [SFT] + [s for s in systems if "★" in s][:1]
    first = demo.find_examples(limit=1)
    state: dict[str, Any] = {"example": None}

    def search(query: str):
        found = demo.find_examples(query)
        return gr.update(choices=found, value=found[0][1] if found else None)

    def load(example_id: str):
        if not example_id:
            return "", ""
        example = demo.example(example_id)
        state["example"] = example
        return history_text(example["turns"]), example["reference"]

    def compare(history: str, chosen: list[str], how: str, temperature: float, max_new: float):
        try:
            turns = parse_history(history)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        if not chosen:
            raise gr.Error("choose at least one system")
        example = state["example"]
        if example is not None and history_text(example["turns"]) != history_text(turns):
            example = None  # an edited history: no reference to score entities against
        elif example is not None:
            turns = example["turns"]  # with its slot annotations (the salient I_x)
        decoding = Decoding(sample=how == "sampled", temperature=float(temperature), max_new_tokens=int(max_new))
        reference_text = example["reference"] if example is not None else "(a history of your own: no reference)"
        return comparison_html(
            [demo.respond(name, turns, decoding, example=example) for name in chosen]
        ), reference_text

    def one_step(history: str, system: str, k: float, seed: float):
        try:
            turns = parse_history(history)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return candidates_html(demo.aft_step(system, turns, k=int(k), seed=int(seed)))

    goals = demo.conversation_goals()

    def start(goal_id: str, chosen: list[str], reveal: str):
        if not goal_id:
            raise gr.Error(demo.conversation_refused or "choose a goal")
        if not chosen:
            raise gr.Error("choose at least one system")
        conversation = demo.start_conversation(goal_id, chosen, reveal=reveal, max_new_tokens=max_new_tokens)
        return conversation, conversation_html(conversation)

    def next_turn(conversation: LiveConversation | None, typed: str = ""):
        if conversation is None:
            raise gr.Error("start a conversation first")
        if conversation.typed and not typed.strip():
            raise gr.Error("you are the user of this conversation: type the next turn")
        demo.advance(conversation, typed or None, max_new_tokens=max_new_tokens)
        return conversation, conversation_html(conversation), ""

    max_new_tokens = int(demo.settings.get("max_new_tokens", 48))
    with gr.Blocks(title=f"AFT demo: {demo.run.root.name}", analytics_enabled=False) as app:
        with gr.Tab("Compare", elem_id="aft-tab-compare"):
            gr.Markdown(
                f"## AFT demo — run `{demo.run.root}`\nPick a test example (or write a history, one "
                "`user: …` / `system: …` turn per line), choose systems and compare their responses and "
                "cross-attention. *One AFT step* samples K responses and shows how HACA weighs them."
            )
            with gr.Row():
                query = gr.Textbox(label="search test examples (dialogue id or text)", elem_id="aft-query")
                example = gr.Dropdown(
                    choices=first,
                    value=first[0][1] if first else None,
                    label="test example",
                    elem_id="aft-example",
                    allow_custom_value=False,
                )
            history = gr.Textbox(label="history (one turn per line)", lines=8, elem_id="aft-history")
            reference = gr.Textbox(label="reference (test example)", interactive=False, elem_id="aft-reference")
            with gr.Row():
                chosen = gr.CheckboxGroup(choices=systems, value=default, label="systems", elem_id="aft-systems")
            with gr.Row():
                how = gr.Radio(["greedy", "sampled"], value="greedy", label="decoding", elem_id="aft-decoding")
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.1, label="temperature (sampled)")
                max_new = gr.Slider(
                    4, 96, value=demo.settings.get("max_new_tokens", 48), step=1, label="max new tokens"
                )
            compare_button = gr.Button("Compare", variant="primary", elem_id="aft-compare")
            output = gr.HTML(elem_id="aft-output")
            gr.Markdown("### One AFT step")
            with gr.Row():
                step_system = gr.Dropdown(choices=systems, value=default[-1], label="policy", elem_id="aft-step-system")
                k = gr.Number(value=4, minimum=2, maximum=16, precision=0, label="K", elem_id="aft-k")
                seed = gr.Number(value=0, precision=0, label="seed")
            step_button = gr.Button("Run one AFT step", elem_id="aft-step")
            candidates = gr.HTML(elem_id="aft-candidates")

        with gr.Tab("Conversation", elem_id="aft-tab-conversation"):
            gr.Markdown(
                "Systems talk to the user simulator on the same test goal, one exchange at a time, each system turn "
                "with its attention map. *Next turn*: the simulated user answers. Or type the user's turn yourself "
                "(from then on you are the user, and nothing is scored)."
                + (f"\n\n**No conversations on this run:** {demo.conversation_refused}" if not goals else "")
            )
            with gr.Row():
                goal = gr.Dropdown(
                    choices=goals,
                    value=goals[0][1] if goals else None,
                    label="test goal",
                    elem_id="aft-goal",
                    allow_custom_value=False,
                )
                reveal = gr.Radio(
                    ["full", "sharded", "agenda"], value="sharded", label="the user reveals", elem_id="aft-reveal"
                )
            talkers = gr.CheckboxGroup(choices=systems, value=default, label="systems", elem_id="aft-talkers")
            with gr.Row():
                start_button = gr.Button("Start", variant="primary", elem_id="aft-start")
                next_button = gr.Button("Next turn", elem_id="aft-next")
            with gr.Row():
                typed = gr.Textbox(label="or type the user's turn", elem_id="aft-typed", scale=4)
                send_button = gr.Button("Send", elem_id="aft-send", scale=1)
            talk = gr.HTML(elem_id="aft-talk")
            live = gr.State(None)
        query.submit(search, query, example)
        example.change(load, example, [history, reference])
        app.load(load, example, [history, reference])
        compare_button.click(compare, [history, chosen, how, temperature, max_new], [output, reference])
        step_button.click(one_step, [history, step_system, k, seed], candidates)
        start_button.click(start, [goal, talkers, reveal], [live, talk])
        next_button.click(next_turn, [live], [live, talk, typed])
        send_button.click(next_turn, [live, typed], [live, talk, typed])
        typed.submit(next_turn, [live, typed], [live, talk, typed])
    return app


def launch(run_dir: str, port: int = 7860, block: bool = True) -> Any:
    """Serve the demo on 127.0.0.1:`port`; returns the app (with block=False, for tests)."""
    import gradio as gr

    app = build_app(DemoRun(run_dir))
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts
    app.launch(
        server_name="127.0.0.1",
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        theme=theme,
        css=CSS,
        ssr_mode=False,
        show_error=True,
        quiet=True,
        footer_links=[],
    )
    return app
