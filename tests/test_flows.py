"""The Prefect workflow: the whole tiny pipeline, sweep caching, a failing branch and its rerun,
data checks that stop the run, and prefect.yaml kept equal to the presets."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import HANG_S, ROOT

pytestmark = pytest.mark.slow
# The conversation stage is checked on the shared run and the decoder-only one; pipelines that test something else
# leave it out (it is the costliest stage a tiny run adds).
NO_CONVERSATIONS = {"conversation": {"run": False}}


@pytest.fixture(scope="module")
def rerun_target(harness, tmp_path_factory) -> Path:
    """A tiny pipeline run of this module's own, for the one test that runs the pipeline again on its folder
    (run folders are not relocatable: they name their corpus and models by path, so the shared one is not copied)."""
    from flows.params import preset
    from flows.pipeline import aft_pipeline

    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    aft_pipeline(preset("tiny", {"run_dir": str(run_dir), **NO_CONVERSATIONS}))
    return run_dir


@pytest.fixture(scope="module")
def tiny_run(harness, tiny_pipeline) -> Path:
    """The session's shared `aft-pipeline --preset tiny` run folder (conftest.tiny_pipeline), read only; with this
    module's Prefect server for the tests that run flows beside it."""
    return tiny_pipeline["run_dir"]


def test_pipeline_writes_every_stage_consistently(tiny_run):
    checks = json.loads((tiny_run / "checks" / "report.json").read_text())
    assert checks["success"] and set(checks["suites"]) == {"turns", "dialogue_splits", "examples"}
    # The tiny preset declares its budgets once, in sft (96 / 32); the checks and every branch took them.
    assert (checks["config"]["max_source_tokens"], checks["config"]["max_target_tokens"]) == (96, 32)
    sft = json.loads((tiny_run / "sft" / "sft_result.json").read_text())
    assert (Path(sft["model_dir"]) / "model.safetensors").exists()

    sweep = json.loads((tiny_run / "sweep.json").read_text())
    ids = [b["branch_id"] for b in sweep["branches"]]
    assert len(ids) == 2 and sweep["failed"] == []
    assert sorted(p.name for p in (tiny_run / "branches").iterdir()) == sorted(ids)
    for branch_id in ids:
        folder = tiny_run / "branches" / branch_id
        config = json.loads((folder / "config.json").read_text())
        assert config["branch_id"] == branch_id and config["sft_model"] == sft["model_dir"]
        assert config["max_source_tokens"] == 96
        probe = pd.read_parquet(folder / "probe.parquet")
        assert list(probe["step"]) == [0, 2, 4]
        attractors = json.loads((folder / "attractors.json").read_text())
        assert [c["step"] for c in attractors["checkpoints"]] == [0, 2, 4]
        assert sorted(p.name for p in (folder / "weights").iterdir()) == [
            "step-0000002.safetensors",
            "step-0000004.safetensors",
        ]

    table = json.loads((tiny_run / "evaluation" / "table.json").read_text())
    systems = [r["system"] for r in table["rows"]]
    assert systems[0] == "SFT" and all(any(s.startswith(i) and "last step 4" in s for s in systems) for i in ids)
    for row in table["rows"]:
        for column in ("focus", "repeat", "bertscore", "bleu", "avg_len", "coverage_history", "coverage_salient"):
            assert isinstance(row[column], float), (row["system"], column)
    per_example = pd.read_parquet(tiny_run / "evaluation" / "per_example.parquet")
    assert len(per_example) == table["examples"] * len(systems) == 12 * len(systems)

    summary = json.loads((tiny_run / "summary.json").read_text())
    assert [b["branch_id"] for b in summary["branches"]] == ids
    # What the numbers depend on, in the run folder and in each training folder below it
    provenance = json.loads((tiny_run / "provenance.json").read_text())["runs"][-1]
    assert provenance["seeds"] == {"towninfo": 0, "sft": 0, "aft": 0} and provenance["cpu_capability"]
    for folder in (tiny_run / "sft", *(tiny_run / "branches" / i for i in ids)):
        assert json.loads((folder / "provenance.json").read_text())["runs"][0]["torch"]
    assert "## Test evaluation" in (tiny_run / "summary.md").read_text()
    # The closed-loop stage: every system of Table 1 but the base, and the oracle anchor, under both users.
    conversations = json.loads((tiny_run / "conversations" / "table.json").read_text())
    assert conversations["modes"] == ["full", "sharded"] and conversations["goals"] == 4
    assert conversations["reader_f1"] >= 0.95
    for mode, rows in conversations["rows"].items():
        assert [r["system"] for r in rows] == ["oracle (TownInfo rule policy)", *systems], mode
        assert rows[0]["success"][0] == 1.0  # the anchor
        assert all(r["trajectory"] and "vs_sft" in r for r in rows[2:])
    assert set(conversations["degradation"]) == {"oracle (TownInfo rule policy)", *systems}
    transcripts = (tiny_run / "conversations" / "conversations.jsonl").read_text().splitlines()
    assert len(transcripts) == 2 * 4 * (len(systems) + 1)
    assert "## Conversations with the user simulator" in (tiny_run / "summary.md").read_text()
    report = (tiny_run / "report.html").read_text()
    assert "Conversations with the user simulator" in report and "attention trajectory full" in report
    assert report.count("class='transcripts'") == 3
    # One offline Comet archive per branch and one for the pipeline; no API key, so offline.
    assert len(list((tiny_run / "comet").glob("*.zip"))) == len(ids) + 1


def _count_branch_runs(monkeypatch, fail_when=None) -> list[str]:
    """Wrap the library's branch trainer: record each real execution, optionally raise for some configs."""
    import aft_core.aft

    calls: list[str] = []
    real = aft_core.aft.run_branch

    def counting(cfg, out_dir, *args, **kwargs):
        calls.append(Path(out_dir).name)
        if fail_when is not None and fail_when(cfg):
            raise RuntimeError(f"injected fault for eta_kl={cfg.eta_kl}")
        return real(cfg, out_dir, *args, **kwargs)

    monkeypatch.setattr(aft_core.aft, "run_branch", counting)
    return calls


def _sweep_params(**grid):
    from flows.params import PRESETS, SweepParams

    return SweepParams.model_validate(
        {**PRESETS["tiny"]["sweep"], "grid": {**PRESETS["tiny"]["sweep"]["grid"], **grid}}
    )


def test_second_sweep_executes_no_completed_branch(tiny_run, tmp_path, monkeypatch):
    from flows.sweep import aft_sweep

    sft_model, data = str(tiny_run / "sft" / "model"), str(tiny_run / "data")
    params = _sweep_params(eta_kl=[0.2])
    calls = _count_branch_runs(monkeypatch)
    first = aft_sweep(str(tmp_path / "run"), sft_model, data, params)
    assert len(calls) == 1 and first["failed"] == []
    second = aft_sweep(str(tmp_path / "run"), sft_model, data, params)
    assert len(calls) == 1, "a completed branch was executed again"
    assert second["branches"][0]["final_label"] == first["branches"][0]["final_label"]
    # A branch whose folder was deleted is trained again, not read from a stale cache.
    shutil.rmtree(tmp_path / "run" / "branches")
    aft_sweep(str(tmp_path / "run"), sft_model, data, params)
    assert len(calls) == 2


def test_parallel_branches_run_in_processes_of_their_own_that_share_the_cores(tiny_run, tmp_path):
    from aft_core.layout import RunLayout
    from flows.sweep import aft_sweep

    sft_model, data, run_dir = str(tiny_run / "sft" / "model"), str(tiny_run / "data"), str(tmp_path / "run")
    params = _sweep_params(eta_kl=[0.15, 0.25])
    params.parallel_branches = 2
    result = aft_sweep(run_dir, sft_model, data, params)
    assert result["failed"] == [] and {b["status"] for b in result["branches"]} <= {"completed", "stopped_in_attractor"}
    entries = [
        json.loads(RunLayout(run_dir).branch(b["branch_id"]).provenance.read_text())["runs"][-1]
        for b in result["branches"]
    ]
    pids = {entry["pid"] for entry in entries}
    assert len(pids) == 2 and os.getpid() not in pids  # each branch in a process of its own
    threads = max(1, int(os.environ["AFT_THREADS"]) // 2)
    assert [entry["torch_threads"] for entry in entries] == [threads, threads]
    again = aft_sweep(run_dir, sft_model, data, params)  # their results are cached like in-process branches'
    assert [b["final_label"] for b in again["branches"]] == [b["final_label"] for b in result["branches"]]
    assert [
        json.loads(RunLayout(run_dir).branch(b["branch_id"]).provenance.read_text())["runs"][-1]["pid"]
        for b in result["branches"]
    ] == [entry["pid"] for entry in entries]  # not trained again


def test_failing_branch_spares_the_others_and_a_rerun_retries_only_it(tiny_run, tmp_path, monkeypatch):
    from flows.sweep import aft_sweep

    sft_model, data, run_dir = str(tiny_run / "sft" / "model"), str(tiny_run / "data"), str(tmp_path / "run")
    params = _sweep_params(eta_kl=[0.3, 0.4])
    calls = _count_branch_runs(monkeypatch, fail_when=lambda cfg: cfg.eta_kl == 0.4)
    state = aft_sweep(run_dir, sft_model, data, params, return_state=True)
    assert state.is_failed()
    assert "1 of 2 branches failed" in state.message and "eta_kl=0.4" in state.message
    sweep = json.loads((tmp_path / "run" / "sweep.json").read_text())
    by_eta = {b["eta_kl"]: b for b in sweep["branches"]}
    assert by_eta[0.3]["status"] == "completed" and by_eta[0.4]["status"] == "failed"
    assert "injected fault" in by_eta[0.4]["error"]
    assert len(calls) == 2

    monkeypatch.undo()  # the cause removed
    calls = _count_branch_runs(monkeypatch)
    result = aft_sweep(run_dir, sft_model, data, params)
    assert calls == [by_eta[0.4]["branch_id"]], "the rerun must execute only the failed branch"
    assert result["failed"] == []


def test_data_check_failure_stops_before_training(harness, tmp_path):
    from aft_core.data.towninfo import generate_towninfo
    from flows.params import preset
    from flows.pipeline import aft_pipeline

    corpus = generate_towninfo(tmp_path / "corpus", dialogues=40, seed=5)
    data = json.loads((corpus / "data.json").read_text())
    for dialogue in data.values():  # strip the annotations the MultiWOZ schema promises
        for turn in dialogue["log"]:
            turn["metadata"], turn["span_info"] = {}, []
    (corpus / "data.json").write_text(json.dumps(data))
    run_dir = tmp_path / "run"
    state = aft_pipeline(preset("tiny", {"run_dir": str(run_dir), "data": str(corpus)}), return_state=True)
    assert state.is_failed()
    assert "data checks failed before training" in state.message
    assert "examples.expect_column_values_to_be_in_set[has_belief_state]" in state.message
    report = (run_dir / "checks" / "report.md").read_text()
    assert "has_belief_state" in report and "rows fail" in report
    assert not (run_dir / "sft").exists() and not (run_dir / "branches").exists()


def test_prefect_yaml_matches_the_presets():
    from flows.params import PRESETS, PipelineParams, SweepParams

    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {(d["entrypoint"].split(":")[1], d["name"]): d for d in doc["deployments"]}
    for name, values in PRESETS.items():
        pipeline = deployments[("aft_pipeline", name)]
        assert pipeline["parameters"]["params"] == values
        PipelineParams.model_validate(values)
        sweep = deployments[("aft_sweep", name)]["parameters"]
        assert sweep["params"] == values["sweep"] and sweep["run_dir"] == values["run_dir"]
        # The sweep's source budget is the SFT run's (declared once, in sft).
        assert sweep.get("max_source_tokens", 192) == values["sft"].get("max_source_tokens", 192)
        SweepParams.model_validate(sweep["params"])
    assert ("aft_branch", "aft-branch") in deployments
    assert {d["work_pool"]["name"] for d in doc["deployments"]} == {"aft-pool"}


def test_reclassifying_without_retraining_adds_a_star_to_the_table_and_report(rerun_target, monkeypatch):
    """New thresholds on the same run folder: no training runs again, every checkpoint is relabelled,
    the ★ checkpoints are evaluated, and the report shows the qualitative pairs with heatmaps."""
    import aft_core.sft
    from flows.params import preset
    from flows.pipeline import aft_pipeline

    calls = _count_branch_runs(monkeypatch)
    sft_calls: list[str] = []
    real_sft = aft_core.sft.run_sft
    monkeypatch.setattr(aft_core.sft, "run_sft", lambda *a, **k: sft_calls.append("sft") or real_sft(*a, **k))
    lenient = {
        "unique_min_fraction": 0.0,
        "length_near_max_fraction": 1.0,
        "repeat_max": 1.0,
        "closing_rate_min": 1.0,
        "inertia_step": 10**6,
        "primary_min_delta_bertscore": -1.0,
    }
    aft_pipeline(preset("tiny", {"run_dir": str(rerun_target), "sweep": {"thresholds": lenient}, **NO_CONVERSATIONS}))
    assert calls == [] and sft_calls == [], "a finished SFT run or branch was executed again, not read from the cache"
    assert (rerun_target / ".prefect-results").is_dir()  # the cache records live in the run folder, nowhere else
    table = json.loads((rerun_target / "evaluation" / "table.json").read_text())
    stars = [r for r in table["rows"] if "★" in r["system"]]
    assert len(stars) == 2 and all("vs_baseline" in r for r in stars)
    report = (rerun_target / "report.html").read_text()
    assert report.count("class='pair'") == 4 and "attention SFT" in report and "attention ★" in report
    assert "http://" not in report and "https://" not in report  # self-contained
    markdown = (rerun_target / "evaluation" / "table1.md").read_text()
    assert "mean [95% bootstrap CI]" in markdown and "T5-Large SFT" in markdown and "★" in markdown

    # The pairs and their attention maps were computed once, by the pipeline; rebuilding the report loads no model.
    qualitative = json.loads((rerun_target / "evaluation" / "qualitative.json").read_text())
    assert qualitative["star"] in {r["system"] for r in stars} and len(qualitative["pairs"]) == 4
    for pair in qualitative["pairs"]:
        for who in ("SFT", "star"):
            m = pair["maps"][who]
            assert len(m["attention"]) == len(m["tokens"]) and all(
                len(row) == len(m["source_tokens"]) for row in m["attention"]
            )
            assert len(m["ix"]) == len(m["turns"]) == len(m["source_tokens"])
    import aft_core.evaluation
    from aft_core.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("the report loaded a model")

    monkeypatch.setattr(aft_core.evaluation, "load_system", no_model)
    (rerun_target / "report.html").unlink()
    assert main(["report", str(rerun_target)]) == 0
    assert (rerun_target / "report.html").read_text().count("class='pair'") == 4
    with pytest.raises(AssertionError, match="loaded a model"):
        main(["report", str(rerun_target), "--recompute-pairs"])  # recomputing decodes again


def test_no_network_without_a_comet_key_and_the_key_never_written(tiny_pipeline):
    """The shared tiny pipeline ran with every non-loopback connection made to fail loudly and recorded, and a Comet
    API key set (offline): nothing tried to connect, and no file of the run (inside the Comet archives too) holds
    the key."""
    import zipfile

    from conftest import COMET_SECRET

    run_dir = tiny_pipeline["run_dir"]
    assert tiny_pipeline["attempts"] == []
    assert (run_dir / "report.html").exists()
    leaks = []
    for path in run_dir.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                leaks += [
                    f"{path.name}:{name}" for name in archive.namelist() if COMET_SECRET.encode() in archive.read(name)
                ]
        elif COMET_SECRET.encode() in path.read_bytes():
            leaks.append(str(path))
    assert leaks == []


def test_the_network_guard_records_and_refuses_what_it_must(tmp_path):
    """The guard behind the test above can fail: a connection and a lookup beyond loopback are refused and recorded,
    and loopback is let through."""
    import subprocess
    import sys

    attempts = tmp_path / "attempts.txt"
    script = f"""
import socket, sys
sys.argv = ['guarded_pipeline.py', {str(attempts)!r}]
import runpy
runpy.run_path({str(ROOT / "tests" / "guarded_pipeline.py")!r}, run_name='guard')
open({str(attempts)!r}, 'w').close()
for call in (lambda: socket.getaddrinfo('example.org', 443), lambda: socket.socket().connect(('93.184.215.14', 443))):
    try:
        call()
    except OSError as e:
        print('refused:', e)
server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen()
socket.create_connection(server.getsockname(), 5).close()
print('loopback ok')
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("refused:") == 2 and "loopback ok" in done.stdout
    assert attempts.read_text().splitlines() == ["resolve example.org", "connect ('93.184.215.14', 443)"]


def test_report_opens_in_headless_chromium(tiny_run, chromium, tmp_path):
    """No console errors, every image loaded, the tables present, and a screenshot that is not blank."""
    import io

    import matplotlib.image

    from bench.demo import headless_chromium

    driver = headless_chromium(tmp_path / "profile", chromium["browser"], chromium["driver"], window="1400,1800")
    try:
        driver.get((tiny_run / "report.html").resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
        )
        tables = driver.execute_script(
            "return Array.from(document.querySelectorAll('table')).map(t => t.id || 'table')"
        )
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        screenshot = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    assert errors == []
    assert len(images) >= 3 and all(complete and width > 0 for _, complete, width in images), images
    assert "table1" in tables and "paper" in tables
    pixels = matplotlib.image.imread(io.BytesIO(screenshot), format="png")
    assert pixels.std() > 0.02, "the screenshot is blank"


def test_the_console_of_a_pipeline_run_holds_the_flow_log_not_library_noise(tiny_pipeline):
    """`aft-pipeline` as a user starts it (the shared tiny run's console): progress lines per stage, no third-party
    bars or info blocks."""
    console = tiny_pipeline["console"]
    for noise in (
        "Loading weights",
        "Writing model shards",
        "Calculating Metrics",
        "COMET INFO",
        "ephemeral docs site",
        "forgot to detokenize",
        "Warning",
        "warn(",
    ):
        assert noise not in console, noise
    assert "sft step 40/40 (100%, ETA 0s)" in console and "test evaluation: 5 systems" in console
    assert f"aft demo {tiny_pipeline['run_dir']}" in console


def test_transient_failures_are_retried_once_and_bad_input_is_not(tiny_run, tmp_path, monkeypatch):
    """A branch that hits a full disk once is retried (and resumes); one with bad input fails at once."""
    import aft_core.aft
    from aft_core.errors import AftInputError
    from flows.sweep import aft_sweep
    from tasks.stages import is_transient

    assert is_transient(OSError(28, "No space left on device")) and is_transient(MemoryError())
    assert is_transient(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_transient(RuntimeError("injected fault")) and not is_transient(AftInputError("x", "k", "bad", "fix"))

    sft_model, data = str(tiny_run / "sft" / "model"), str(tiny_run / "data")
    real, calls = aft_core.aft.run_branch, []

    def flaky(cfg, out_dir, *args, **kwargs):
        calls.append(cfg.eta_kl)
        if cfg.eta_kl == 0.5 and calls.count(0.5) == 1:
            raise OSError(28, "No space left on device (injected)")
        if cfg.eta_kl == 0.6:
            raise AftInputError(cfg.data, "probe_size", "injected bad input", "fix it")
        return real(cfg, out_dir, *args, **kwargs)

    monkeypatch.setattr(aft_core.aft, "run_branch", flaky)
    state = aft_sweep(str(tmp_path / "run"), sft_model, data, _sweep_params(eta_kl=[0.5, 0.6]), return_state=True)
    assert sorted(calls) == [0.5, 0.5, 0.6], "the transient failure is retried once, the bad input never"
    sweep = json.loads((tmp_path / "run" / "sweep.json").read_text())
    by_eta = {b["eta_kl"]: b for b in sweep["branches"]}
    assert by_eta[0.5]["status"] == "completed" and by_eta[0.6]["status"] == "failed"
    assert state.is_failed() and "injected bad input" in by_eta[0.6]["error"]


def test_the_paper_preset_is_checked_offline_with_a_projected_cost(capsys):
    """The GPU user's command: every parameter checked and the cost projected without downloading T5-Large."""
    from flows.cli import main

    shared = ROOT.parent / "shared" / "data" / "multiwoz21" / "val.json.zip"
    assert main(["--preset", "paper", "--check", "--set", "data=data/no-such-folder"]) == 2
    assert "field 'data'" in capsys.readouterr().err
    if not shared.exists():
        pytest.skip(f"real data not present at {shared} (the shared data folder lives beside the project)")
    assert main(["--preset", "paper", "--check", "--set", f"data={shared}"]) == 0
    projected = json.loads(capsys.readouterr().out)["projected"]
    assert projected["branches"] == 36 and projected["aft_steps"] == 36 * 500
    assert projected["parameters"] == 737_668_096  # T5-Large's shape, built on the meta device
    assert projected["gpu_hours_lower_bound"] > 0


@pytest.mark.slow
def test_a_decoder_only_model_goes_through_the_whole_pipeline(harness, tmp_path):
    """The tiny preset with the Llama-shaped causal-tiny: the same flows, nothing family-specific above the models."""
    from flows.params import preset
    from flows.pipeline import aft_pipeline

    run_dir = tmp_path / "causal"
    aft_pipeline(preset("tiny", {"run_dir": str(run_dir), "sft": {"model": "causal-tiny"}}))
    table = json.loads((run_dir / "evaluation" / "table.json").read_text())
    assert table["rows"][0]["system"] == "SFT" and len(table["rows"]) >= 3
    assert all(0 < row["lookback"] < 1 for row in table["rows"])  # self-attention: not all of it on the history
    assert "Lookback" in (run_dir / "evaluation" / "table1.md").read_text()
    probe = pd.read_parquet(next((run_dir / "branches").glob("*/probe.parquet")))
    assert "lookback" in probe and "delta_lookback" in probe
    assert (run_dir / "report.html").exists() and "Lookback" in (run_dir / "report.html").read_text()


@pytest.mark.slow
def test_lora_adapters_go_through_the_whole_pipeline_and_the_deployment_form(harness, tmp_path):
    """SFT and every branch as LoRA adapters (π_ref = adapter disabled), judged, evaluated and reported; the
    settings are parameters of the deployment (its form shows them with their help)."""
    from prefect.utilities.callables import parameter_schema

    from flows.params import preset
    from flows.pipeline import aft_pipeline

    schema = json.dumps(parameter_schema(aft_pipeline).model_dump())
    for name in ("adapter", "lora_rank", "lora_targets", "gradient_checkpointing", "reference_device"):
        assert f'"{name}"' in schema, name
    assert "adapter disabled" in schema  # the help travels with the field

    run_dir = tmp_path / "lora"
    memory = {"adapter": "lora", "lora_rank": 4, "gradient_checkpointing": True}
    aft_pipeline(
        preset("tiny", {"run_dir": str(run_dir), "sft": memory, "sweep": {"branch": memory}, **NO_CONVERSATIONS})
    )
    assert (run_dir / "sft" / "model" / "adapter_model.safetensors").exists()
    assert not (run_dir / "sft" / "model" / "model.safetensors").exists()
    table = json.loads((run_dir / "evaluation" / "table.json").read_text())
    assert table["rows"][0]["system"] == "SFT" and len(table["rows"]) >= 3
    for weights in (run_dir / "branches").glob("*/weights/*.safetensors"):
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            assert all("lora_" in key for key in f.keys())
    assert "adapter=lora" in (run_dir / "report.html").read_text()


def test_a_pretrained_model_adds_the_base_row_and_a_preset_does_not(tmp_path):
    from aft_core.layout import RunLayout
    from flows.pipeline import evaluation_systems

    run = RunLayout(tmp_path)
    assert list(evaluation_systems(run, "sft/model", [], "small")) == ["SFT"]
    assert evaluation_systems(run, "sft/model", [], "hf:google-t5/t5-large")["Base"] == {
        "model": "hf:google-t5/t5-large"
    }


def test_parameters_and_the_command_lines_load_without_torch():
    """Parsing parameters, `aft --help`, `aft-pipeline --help`, `prefect deploy` (which imports every flow) and a
    sweep's own flow run (which only dispatches and judges) need no model code: importing torch and transformers
    costs seconds in every such process. The configs they read live in aft_core.config."""
    import subprocess
    import sys

    code = (
        "import sys\nimport aft_core.cli, flows.cli, flows.params, flows.sweep\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
