"""The interactive demo (`aft demo RUN_DIR`): its computations against the evaluation's, and the page in a real
browser (headless chromium) on a tiny pipeline run, with every request the page makes recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, stop_process_group

pytestmark = pytest.mark.slow
SHOTS = ROOT / "test-output" / "demo"


@pytest.fixture(scope="module")
def demo_run(tiny_pipeline) -> Path:
    """The session's shared tiny pipeline run (conftest.tiny_pipeline); the demo only reads it."""
    return tiny_pipeline["run_dir"]


def _greedy_reference(demo, system: str, example_id: str) -> tuple[str, np.ndarray]:
    """The evaluation's own greedy path (score_greedy) on the same example: response and A[T,S]."""
    from aft_core.data.dataset import encode_table
    from aft_core.evaluation import load_system
    from aft_core.models import family_of, parse_layers
    from aft_core.monitor import score_greedy

    spec = demo.systems()[system]
    model, tokenizer = load_system(spec["model"], spec["weights"])
    family = family_of(model, tokenizer)
    rows = encode_table(
        demo.test.filter(lambda r: r["example_id"] == example_id),
        tokenizer,
        family,
        demo.sft_config["max_source_tokens"],
        8,
    ).to_list()
    scored = score_greedy(
        model,
        tokenizer,
        family,
        rows,
        ix_modes=(demo.ix_mode,),
        layers=parse_layers("all", family.attention_layers(model)),
        max_new_tokens=demo.settings["max_new_tokens"],
        repeat_n=3,
        keep_attention=True,
    )
    return scored["texts"][0], scored["attention"][0].numpy()


def test_responses_and_attention_equal_the_evaluations_and_one_aft_step_weights_sum_to_one(demo_run):
    from aft_core.demo import Decoding, DemoRun

    demo = DemoRun(demo_run)
    systems = demo.systems()
    assert list(systems)[0] == "SFT" and any("(★" in s for s in systems) and any("last" in s for s in systems)
    example_id = demo.find_examples()[0][1]
    example = demo.example(example_id)
    for name in ("SFT", next(s for s in systems if "last" in s)):
        result = demo.respond(
            name, example["turns"], Decoding(max_new_tokens=demo.settings["max_new_tokens"]), example=example
        )
        text, attention = _greedy_reference(demo, name, example_id)
        assert result["response"] == text
        np.testing.assert_allclose(np.array(result["attention"]), attention, atol=1e-6)
        assert len(result["source_tokens"]) == len(result["turns"]) == len(result["ix"]) == attention.shape[1]
    rows = demo.aft_step(next(s for s in systems if "★" in s), example["turns"], k=4)
    assert len(rows) == 4 and sum(r["weight"] for r in rows) == pytest.approx(1.0, abs=1e-5)
    assert sum(r["normalised_reward"] for r in rows) == pytest.approx(0.0, abs=1e-4)
    # the weights order the candidates as the rewards do (softmax of the z-scores)
    assert sorted(rows, key=lambda r: r["reward"]) == sorted(rows, key=lambda r: r["weight"])
    sft_step = demo.aft_step("SFT", example["turns"], k=3)
    assert all(r["log_ratio_to_ref"] == 0.0 for r in sft_step)  # π = π_ref


def test_a_demo_conversation_is_the_closed_loops_and_the_person_can_take_over(demo_run):
    """The Conversation tab's computing: SFT's conversation on a goal, exchange by exchange with attention maps,
    is word for word the closed-loop evaluation's (converse with a ModelSystem), outcome included; typing makes
    the person the user of every system, after which the simulator is off and nothing is scored."""
    from aft_core.demo import DemoRun
    from aft_core.dialogue.reader import Reader
    from aft_core.dialogue.selfplay import ModelSystem, converse
    from aft_core.errors import AftInputError

    demo = DemoRun(demo_run)
    goals = demo.conversation_goals()
    assert goals and demo.conversation_refused is None
    systems = ["SFT", next(s for s in demo.systems() if "★" in s)]
    new_tokens = int(demo.settings["max_new_tokens"])
    conversation = demo.start_conversation(
        goals[0][1], systems, reveal="sharded", max_exchanges=8, max_new_tokens=new_tokens
    )
    for _ in range(10):
        if not conversation.live():
            break
        demo.advance(conversation, max_new_tokens=new_tokens)
    assert conversation.live() == [] and all(conversation.outcome[name] is not None for name in systems)
    for name in systems:
        for turn in conversation.shown[name]:
            if turn["speaker"] == "system":
                result = turn["result"]
                assert len(result["attention"]) == len(result["tokens"]) and result["system"] == name

    model, tokenizer = demo._load("SFT")
    system = ModelSystem(
        model, tokenizer, max_source_tokens=demo.sft_config["max_source_tokens"], max_new_tokens=new_tokens
    )
    record = converse(system, [conversation.goal], Reader(demo.db), reveal="sharded", seed=0, max_exchanges=8)[0]
    assert [(t["speaker"], t["text"]) for t in record["turns"]] == [
        (t["speaker"], t["text"]) for t in conversation.shown["SFT"]
    ]
    assert record["outcome"] == conversation.outcome["SFT"]

    typed = demo.start_conversation(goals[1][1], systems, max_new_tokens=new_tokens)
    demo.advance(typed, "i want a cheap restaurant in the north .", max_new_tokens=new_tokens)
    assert typed.typed and typed.live() == systems
    for name in systems:
        *_, said, reply = typed.shown[name]
        assert said == {"speaker": "user", "text": "i want a cheap restaurant in the north .", "typed": True}
        assert reply["speaker"] == "system"
    with pytest.raises(AftInputError, match="type the next turn"):
        demo.advance(typed)


def test_the_demo_in_headless_chromium(demo_run, chromium, tmp_path):
    """Pick an example, compare SFT with a checkpoint (responses and heatmaps, the data of score_greedy), type a
    history of one's own, run one AFT step (K rows, weights summing to 1), and in the Conversation tab let SFT
    and the ★ talk to the simulated user, then type as the user; no request leaves 127.0.0.1."""
    from selenium.webdriver.common.by import By

    from aft_core.demo import DemoRun
    from bench.demo import (
        compare_columns,
        conversation_columns,
        free_port,
        headless_chromium,
        open_conversation_tab,
        requested_urls,
        start_demo,
    )
    from bench.demo import wait_for as _wait

    port = free_port()
    server, startup = start_demo(demo_run, port, tmp_path / "demo.log")
    driver = None
    try:
        driver = headless_chromium(tmp_path / "profile", chromium["browser"], chromium["driver"])
        driver.get(f"http://127.0.0.1:{port}/")
        js = driver.execute_script
        history = _wait(
            lambda: js("const t = document.querySelector('#aft-history textarea'); return t && t.value"),
            "the example's history",
        )
        assert history.startswith("user: ")
        checked = js(
            "return Array.from(document.querySelectorAll('#aft-systems input')).filter(i => i.checked)"
            ".map(i => i.parentElement.textContent.trim())"
        )
        assert checked[0] == "SFT" and "★" in checked[1]
        SHOTS.mkdir(parents=True, exist_ok=True)

        driver.find_element(By.ID, "aft-compare").click()
        clicked = time.monotonic()
        columns = _wait(lambda: compare_columns(driver), "the comparison")
        comparison_s = time.monotonic() - clicked
        driver.save_screenshot(str(SHOTS / "compare-example.png"))
        demo = DemoRun(demo_run)
        example_id = demo.find_examples()[0][1]
        for system, response, attention, cells in columns:
            text, expected = _greedy_reference(demo, system, example_id)
            assert response == (text or "(empty)")
            np.testing.assert_allclose(np.array(json.loads(attention)), expected, atol=1e-6)
            assert cells == expected.size  # one drawn cell per (response token, history token)

        box = driver.find_element(By.CSS_SELECTOR, "#aft-history textarea")
        box.clear()
        box.send_keys("user: i am looking for a cheap restaurant in the north .")
        driver.find_element(By.ID, "aft-compare").click()
        # the heatmaps now read the typed history (its words head their columns)
        typed = _wait(
            lambda: js(
                "const heads = Array.from(document.querySelectorAll('#aft-output table.aft-heat'))"
                ".map(t => Array.from(t.querySelectorAll('th.aft-src')).map(h => h.textContent).join(''));"
                "return heads.length === 2 && heads.every(h => h.includes('restaurant')) && heads"
            ),
            "responses to a typed history",
        )
        assert len(typed) == 2
        assert (
            js("return document.querySelector('#aft-reference textarea, #aft-reference input').value")
            == "(a history of your own: no reference)"
        )
        driver.save_screenshot(str(SHOTS / "compare-typed-history.png"))

        driver.find_element(By.ID, "aft-step").click()
        weights = _wait(
            lambda: js(
                "return Array.from(document.querySelectorAll('#aft-candidates td[data-key=weight]'))"
                ".map(td => parseFloat(td.textContent))"
            ),
            "one AFT step's candidates",
        )
        assert len(weights) == 4 and sum(weights) == pytest.approx(1.0, abs=2e-4)
        driver.execute_script("document.querySelector('#aft-candidates').scrollIntoView()")
        driver.save_screenshot(str(SHOTS / "one-aft-step.png"))

        # the Conversation tab: SFT and the ★ talk to the simulated user on the first test goal, then the person types
        open_conversation_tab(driver)
        driver.find_element(By.ID, "aft-start").click()

        def turns_per_system():
            columns = conversation_columns(driver)
            return len(columns) == 2 and columns

        opened = _wait(turns_per_system, "both systems' first replies")
        assert [name for name, *_ in opened] == checked[:2]
        assert all(replies == 1 and maps == 1 for _, replies, maps, _ in opened)
        driver.find_element(By.ID, "aft-next").click()
        _wait(lambda: all(r == 2 or "ended" in o for _, r, _, o in turns_per_system()), "the simulated user's answer")
        driver.save_screenshot(str(SHOTS / "conversation.png"))
        box = driver.find_element(By.CSS_SELECTOR, "#aft-typed textarea, #aft-typed input")
        box.send_keys("i want a cheap restaurant in the north .")
        driver.find_element(By.ID, "aft-send").click()
        _wait(
            lambda: js(
                "const t = document.querySelector('#aft-talk').textContent;"
                "return t.includes('you:') && t.includes('you are the user: not scored')"
            ),
            "the typed turn and the replies to it",
        )

        requests = requested_urls(driver)
        outside = sorted(
            u
            for u in requests
            if u.split(":", 1)[0] in ("http", "https", "ws", "wss")
            and not u.split("/")[2].startswith((f"127.0.0.1:{port}", f"localhost:{port}"))
        )
        assert outside == [], outside
        assert any(f"127.0.0.1:{port}" in u for u in requests)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        (SHOTS / "timings.json").write_text(
            json.dumps({"startup_s": round(startup, 1), "first_comparison_s": round(comparison_s, 1)})
        )
    finally:
        if driver is not None:
            driver.quit()
        stop_process_group(server)
