"""Models as users download them (issue 20): T5 v1.1 with SentencePiece, BART with byte-level BPE and a Llama-shaped
causal LM with a chat template, each through sft → train-branch → classify → evaluate from a folder in hub layout,
and SFT from `hf:<org>/<name>` served by an offline hub cache, which must train to the very same model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, tokenizer_texts
from bench.hub_models import build_bart, build_llama_chat, build_t5_v11, serve_from_hub_cache

pytestmark = pytest.mark.slow
AFT = str(Path(sys.executable).with_name("aft"))
BUILDERS = {"t5-v1_1": build_t5_v11, "bart": build_bart, "llama-chat": build_llama_chat}
SFT_ARGS = [
    "--max-steps",
    "16",
    "--eval-every",
    "8",
    "--warmup-steps",
    "2",
    "--dev-examples",
    "32",
    "--batch-size",
    "8",
    "--max-source-tokens",
    "96",
    "--learning-rate",
    "3e-3",
]
BRANCH_ARGS = [
    "--steps",
    "2",
    "--checkpoint-every",
    "1",
    "--probe-size",
    "8",
    "--batch-size",
    "2",
    "--k",
    "2",
    "--max-new-tokens",
    "10",
    "--max-source-tokens",
    "96",
    "--learning-rate",
    "1e-3",
    "--quiet",
]


def _aft_here(*args: str) -> str:
    """`aft ARGS` in this process: the same entry point without an interpreter's start-up (most of a tiny run's
    time); returns what it printed. It runs on AFT_THREADS threads (conftest's), as a subprocess of `_aft` does, so
    both train bit for bit alike."""
    from aft_core.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(list(args)) == 0
    return printed.getvalue()


def _aft(*args: str, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([AFT, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def hub(tmp_path_factory, towninfo_dir):
    """Each model saved in hub layout, and an HF_HOME whose hub cache serves it as test-org/<name>."""
    root = tmp_path_factory.mktemp("hub")
    texts = tokenizer_texts(corpus_to_dataset(load_corpus(towninfo_dir))["train"])
    folders = {name: build(root / name, texts) for name, build in BUILDERS.items()}
    for name, folder in folders.items():
        serve_from_hub_cache(root / "hf_home", f"test-org/{name}", folder)
    return folders, root / "hf_home"


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_hub_layout_model_goes_through_the_whole_pipeline(hub, towninfo_dir, tmp_path, name):
    folders, hf_home = hub
    data = str(towninfo_dir)
    folder_sft = ("sft", "--data", data, "--model", str(folders[name]), "--out", str(tmp_path / "sft"), "--quiet")
    _aft_here(*folder_sft, *SFT_ARGS)
    from_hub = _aft(  # a process of its own: the hub cache is found through HF_HOME, read when huggingface_hub loads
        "sft",
        "--data",
        data,
        "--model",
        f"hf:test-org/{name}",
        "--out",
        str(tmp_path / "sft-hub"),
        "--quiet",
        *SFT_ARGS,
        env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"},
    )
    assert "SFT model:" in from_hub.stderr
    a = load_file(tmp_path / "sft" / "model" / "model.safetensors")
    b = load_file(tmp_path / "sft-hub" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # the same checkpoint, the same SFT

    sft_model = str(tmp_path / "sft" / "model")
    trained = json.loads(
        _aft_here("train-branch", "--sft", sft_model, "--data", data, "--out", str(tmp_path / "branch"), *BRANCH_ARGS)
    )
    assert trained["status"] in ("completed", "stopped_in_attractor") and trained["steps"] >= 1
    verdict = json.loads(_aft_here("classify", str(tmp_path / "branch")))
    assert verdict["final_label"]
    _aft_here(
        "evaluate",
        "--sft",
        sft_model,
        "--base",
        str(folders[name]),
        "--branch",
        str(tmp_path / "branch"),
        "--data",
        data,
        "--out",
        str(tmp_path / "eval"),
        "--test-examples",
        "12",
        "--max-new-tokens",
        "10",
        "--max-source-tokens",
        "96",
    )
    table = json.loads((tmp_path / "eval" / "table.json").read_text())
    systems = [row["system"] for row in table["rows"]]
    assert systems[:2] == ["SFT", "Base"] and len(systems) >= 3
    lookback = [row["lookback"] for row in table["rows"]]
    if name == "llama-chat":  # self-attention: part of each row falls on the sink, the template and the response
        assert all(0 < v < 1 for v in lookback), lookback
    else:  # cross-attention falls on the source only
        assert all(v == pytest.approx(1.0, abs=1e-4) for v in lookback), lookback


def test_bart_positions_bound_the_budgets_with_the_fix(hub, towninfo_dir, tmp_path):
    folders, _ = hub
    done = _aft(
        "sft",
        "--data",
        str(towninfo_dir),
        "--model",
        str(folders["bart"]),
        "--out",
        str(tmp_path / "sft"),
        *SFT_ARGS[:-4],
        "--max-source-tokens",
        "400",
        ok=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "max_source_tokens" in done.stderr and "exceeds the model's 160 positions" in done.stderr
    assert "Traceback" not in done.stderr
