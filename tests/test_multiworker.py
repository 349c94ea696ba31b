"""The deployment path, a sweep spread over several Prefect workers, and the retry of exactly its failed branch.

Against a real `prefect server` on 127.0.0.1, the process work pool `aft-pool` with prefect.yaml's
deployments, and four `prefect worker` processes that each run one flow run at a time: the
`aft-sweep/tiny` deployment with runner=deployment starts one `aft-branch` flow run per branch, and
the server's own records (flow runs and the workers' `submitted-flow-run` events) say where each ran.
Everything the module starts, it stops.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import HANG_S, ROOT, prefect_server_env, stop_process_groups

from aft_core.faults import HOLD_ENV

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).with_name("prefect"))
WORKERS = ("worker-a", "worker-b", "worker-c", "worker-d")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _prefect(env: dict, *args: str, timeout: float = HANG_S) -> str:
    done = subprocess.run([PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _api(env: dict, method: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        env["PREFECT_API_URL"] + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def _flow_runs(env: dict, flow: str) -> list[dict]:
    return _api(env, "POST", "/flow_runs/filter", {"flows": {"name": {"any_": [flow]}}, "limit": 200})


def _wait_terminal(env: dict, flow_run_id: str, timeout: float = HANG_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _api(env, "GET", f"/flow_runs/{flow_run_id}")
        if run["state_type"] in TERMINAL:
            return run
        time.sleep(0.5)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout}s")


def _workers_of(env: dict, flow_run_ids: list[str], timeout: float = HANG_S) -> dict[str, list[str]]:
    """flow run id -> names of the workers that submitted it, from the workers' events (persisted asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        page = _api(
            env,
            "POST",
            "/events/filter",
            {"filter": {"event": {"name": ["prefect.worker.submitted-flow-run"]}}, "limit": 50},
        )
        found: dict[str, list[str]] = {}
        for event in page["events"]:
            for related in event["related"]:
                if related["prefect.resource.role"] == "flow-run":
                    run_id = related["prefect.resource.id"].removeprefix("prefect.flow-run.")
                    found.setdefault(run_id, []).append(event["resource"]["prefect.resource.name"])
        if all(i in found for i in flow_run_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.fixture(scope="module")
def farm(tmp_path_factory, request):
    """Server + work pool + deployments + four single-slot workers; the session's tiny pipeline run gives the
    corpus and SFT model its sweeps branch from, and is the in-process run their branches are compared with."""
    folder = tmp_path_factory.mktemp("farm")
    with prefect_server_env(folder) as env:
        _prefect(env, "work-pool", "create", "aft-pool", "--type", "process")
        deployed = _prefect(env, "--no-prompt", "deploy", "--all")
        workers = []
        try:
            for name in WORKERS:  # one flow run at a time each: a sweep holds one, its branches go to the others
                log = open(folder / f"{name}.log", "w")
                workers.append(
                    (
                        subprocess.Popen(
                            [PREFECT, "worker", "start", "--pool", "aft-pool", "--name", name, "--limit", "1"],
                            env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2", HOLD_ENV: str(folder / "hold")},
                            cwd=ROOT,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        ),
                        log,
                    )
                )
            # Asked for once the farm is up: the other pytest worker has been building it meanwhile (test_flows).
            tiny = request.getfixturevalue("tiny_pipeline")["run_dir"]
            yield {
                "env": env,
                "folder": folder,
                "data": str(tiny / "data"),
                "sft_model": str(tiny / "sft" / "model"),
                "in_process": tiny,
                "hold": folder / "hold",
                "deployed": deployed,
            }
        finally:
            # Workers that have run flow runs outlived SIGTERM by the full timeout here (3 x 60 s); they hold nothing
            # the suite reads afterwards, so they get 10 s before SIGKILL.
            stop_process_groups([process for process, _ in workers], timeout=10)
            for _, log in workers:
                log.close()


def _run_sweep(farm: dict, run_dir: Path) -> str:
    """Start `aft-sweep/tiny` with runner=deployment; returns its flow run id."""
    from flows.params import PRESETS

    params = {**PRESETS["tiny"]["sweep"], "runner": "deployment"}
    started = _prefect(
        farm["env"],
        "deployment",
        "run",
        "aft-sweep/tiny",
        "--param",
        f"run_dir={run_dir}",
        "--param",
        f"sft_model={farm['sft_model']}",
        "--param",
        f"data={farm['data']}",
        "--param",
        f"params={json.dumps(params)}",
    )
    return re.search(r"UUID:\s*([0-9a-f-]{36})", started).group(1)


def _branch_runs(farm: dict, branch_id: str, run_dir: Path) -> list[dict]:
    """The aft-branch flow runs of one branch of one run folder (the same branch id recurs across run folders)."""
    return [
        r
        for r in _flow_runs(farm["env"], "aft-branch")
        if r["name"] == f"branch-{branch_id}" and r["parameters"]["run_dir"] == str(run_dir.resolve())
    ]


def _wait_running(farm: dict, run_dir: Path, count: int) -> list[dict]:
    """Poll until `count` aft-branch flow runs of `run_dir` are RUNNING at once (bounded by HANG_S)."""
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        running = [
            r
            for r in _flow_runs(farm["env"], "aft-branch")
            if r["parameters"]["run_dir"] == str(run_dir.resolve()) and r["state_type"] == "RUNNING"
        ]
        if len(running) >= count:
            return running
        time.sleep(1)
    raise AssertionError(f"{count} branch flow runs of {run_dir} were never running at once")


def test_a_sweep_spreads_its_branches_over_workers_and_matches_an_in_process_run(farm, tmp_path):
    """Both branches are held at their start (aft_core.faults, AFT_HOLD) until both are running: two flow runs in
    flight at once on single-slot workers are on two workers, whatever the machine's speed."""
    env, run_dir = farm["env"], tmp_path / "spread"
    assert "aft-sweep/tiny" in farm["deployed"] and "aft-pipeline/towninfo-small" in farm["deployed"]
    hold = farm["hold"] / "branch_start"
    hold.parent.mkdir(parents=True, exist_ok=True)
    hold.write_text("held by the spreading test")
    try:
        sweep_id = _run_sweep(farm, run_dir)
        _wait_running(farm, run_dir, 2)
    finally:
        hold.unlink()
    sweep_run = _wait_terminal(env, sweep_id)
    assert sweep_run["state_type"] == "COMPLETED", sweep_run["state"]["message"]

    sweep = json.loads((run_dir / "sweep.json").read_text())
    branch_ids = [b["branch_id"] for b in sweep["branches"]]
    assert sweep["failed"] == [] and len(branch_ids) == 2
    assert all((run_dir / "branches" / b / "result.json").exists() for b in branch_ids)
    assert len(list((run_dir / "comet").glob("*.zip"))) == 2  # one offline Comet archive per branch
    branch_runs = [r for b in branch_ids for r in _branch_runs(farm, b, run_dir)]
    assert len(branch_runs) == 2 and all(r["state_type"] == "COMPLETED" for r in branch_runs)
    where = _workers_of(env, [sweep_run["id"], *[r["id"] for r in branch_runs]])
    placement = {r["name"]: where[r["id"]] for r in branch_runs}
    print("branches over workers:", placement, "sweep on", where[sweep_run["id"]])
    branch_workers = [names[0] for names in placement.values()]
    assert all(len(names) == 1 for names in placement.values())
    assert len(set(branch_workers)) == 2, f"both branches ran on one worker: {placement}"
    assert where[sweep_run["id"]][0] not in branch_workers  # the sweep's worker slot was busy with the sweep
    # Different processes too: each flow run's process id, recorded by the worker that started it.
    assert len({r["infrastructure_pid"] for r in branch_runs}) == 2

    # The same sweep in one process, the tiny pipeline's own (the same SFT model, corpus and sweep settings): the
    # same branches and the same probe tables, to the last digit.
    local = json.loads((farm["in_process"] / "sweep.json").read_text())
    assert [b["branch_id"] for b in local["branches"]] == branch_ids
    for branch_id in branch_ids:
        remote = pd.read_parquet(run_dir / "branches" / branch_id / "probe.parquet")
        here = pd.read_parquet(farm["in_process"] / "branches" / branch_id / "probe.parquet")
        pd.testing.assert_frame_equal(remote, here, check_exact=True)


def test_retry_executes_exactly_the_failed_branch(farm, tmp_path):
    """Two sweeps fail on the same branch at once (a stray file in its folder); with the cause removed, one is
    retried as a whole (`prefect flow-run retry SWEEP`) and the other by its failed branch's flow run alone. Both
    execute that branch once more and leave the completed one untouched. The two run side by side on the farm's
    workers (the sweeps hold two, their branches take the others)."""
    from flows.params import PRESETS, SweepParams, branch_configs

    env = farm["env"]
    planned = branch_configs(farm["sft_model"], farm["data"], SweepParams.model_validate(PRESETS["tiny"]["sweep"]), 96)
    failing, healthy = planned[1]["branch_id"], planned[0]["branch_id"]

    cases: dict[str, dict] = {}
    for retry in ("sweep", "branch"):
        run_dir = tmp_path / retry
        stray = run_dir / "branches" / failing / "stray.txt"  # the cause: a branch folder holding another file
        stray.parent.mkdir(parents=True)
        stray.write_text("not a branch")
        cases[retry] = {"run_dir": run_dir, "stray": stray, "sweep_id": _run_sweep(farm, run_dir)}
    for case in cases.values():
        run_dir = case["run_dir"]
        sweep_run = _wait_terminal(env, case["sweep_id"])
        assert sweep_run["state_type"] == "FAILED" and failing in sweep_run["state"]["message"]
        assert healthy not in sweep_run["state"]["message"]
        case["healthy_result"] = run_dir / "branches" / healthy / "result.json"
        case["before"] = case["healthy_result"].stat().st_mtime_ns
        case["runs_before"] = {b: len(_branch_runs(farm, b, run_dir)) for b in (failing, healthy)}
        case["stray"].unlink()  # the cause removed

    _prefect(env, "flow-run", "retry", cases["sweep"]["sweep_id"])
    (failed_run,) = [r for r in _branch_runs(farm, failing, cases["branch"]["run_dir"]) if r["state_type"] == "FAILED"]
    _prefect(env, "flow-run", "retry", failed_run["id"])

    case = cases["sweep"]
    assert _wait_terminal(env, case["sweep_id"])["state_type"] == "COMPLETED"
    # One new aft-branch flow run, for the failed branch only; the healthy one came from its result.
    new_runs = {b: len(_branch_runs(farm, b, case["run_dir"])) - case["runs_before"][b] for b in (failing, healthy)}
    assert new_runs == {failing: 1, healthy: 0}, new_runs
    case = cases["branch"]
    rerun = _wait_terminal(env, failed_run["id"])
    assert rerun["state_type"] == "COMPLETED" and rerun["run_count"] == 2
    assert {b: len(_branch_runs(farm, b, case["run_dir"])) for b in (failing, healthy)} == case[
        "runs_before"
    ]  # no new run
    for retry, case in cases.items():
        assert (case["run_dir"] / "branches" / failing / "result.json").exists()
        assert case["healthy_result"].stat().st_mtime_ns == case["before"], f"{retry}: the completed branch ran again"
        print(f"retry of the {retry}: executed {failing} once more; {healthy} untouched")


@pytest.mark.parametrize("name", ["prefect.docker.yaml", "prefect.kubernetes.yaml"])
def test_container_work_pool_examples_are_valid_deployments(name):
    """The Docker/Kubernetes examples pass Prefect's own prefect.yaml schema, name real flows, carry valid
    parameters, and share one run folder between every flow run (the volume every worker mounts)."""
    import importlib

    import yaml
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.flows import Flow

    from flows.params import PipelineParams, SweepParams

    doc = yaml.safe_load((ROOT / "deploy" / name).read_text())
    PrefectYamlModel.model_validate(doc)
    assert doc["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/aft"
    flows = set()
    for deployment in doc["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
        assert isinstance(flow, Flow)
        flows.add(flow.name)
        pool = deployment["work_pool"]
        assert pool["job_variables"]["image"].split("/")[-1] == "aft:0.1.0"
        params = deployment.get("parameters", {})
        if function == "aft_pipeline":
            pipeline = PipelineParams.model_validate(params["params"])
            assert pipeline.run_dir.startswith("/shared/") and pipeline.sweep.runner == "deployment"
            assert pipeline.sweep.branch_deployment == f"aft-branch/{deployment['name']}"
        if function == "aft_sweep":
            assert SweepParams.model_validate(params["params"]).runner == "deployment"
            assert all(params[k].startswith("/shared/") for k in ("run_dir", "sft_model", "data"))
    assert {"aft-pipeline", "aft-branch"} <= flows
    if name == "prefect.docker.yaml":
        assert "/mnt/aft-shared:/shared" in doc["deployments"][0]["work_pool"]["job_variables"]["volumes"]


UI_SCREENSHOTS = ROOT / "test-output" / "prefect-ui"


def test_the_prefect_ui_shows_the_deployments_their_help_and_a_runs_branch_table(farm, chromium, tmp_path):
    """The UI served by the farm's own server, in headless chromium, as a user sees it. Screenshots are kept
    in test-output/prefect-ui/."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from flows.params import PRESETS

    env = farm["env"]
    # A finished pipeline run (through a worker), so there is an aft-branches table artifact to look at.
    params = {**PRESETS["tiny"], "run_dir": str(tmp_path / "pipeline")}
    started = _prefect(env, "deployment", "run", "aft-pipeline/tiny", "--param", f"params={json.dumps(params)}")
    pipeline_run = _wait_terminal(env, re.search(r"UUID:\s*([0-9a-f-]{36})", started).group(1))
    assert pipeline_run["state_type"] == "COMPLETED", pipeline_run["state"]
    deployment = _api(env, "GET", "/deployments/name/aft-sweep/tiny")

    ui = env["PREFECT_API_URL"].removesuffix("/api")
    UI_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium["browser"]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1500,1800",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromium["driver"]), options=options)

    def page(path: str, *texts: str, shot: str) -> str:
        driver.get(ui + path)
        try:
            WebDriverWait(driver, 60).until(lambda d: all(t in d.find_element("tag name", "body").text for t in texts))
        finally:
            driver.save_screenshot(str(UI_SCREENSHOTS / shot))
        return driver.find_element("tag name", "body").text

    try:
        listed = page("/deployments", "aft-pipeline", "aft-sweep", "aft-branch", shot="deployments.png")
        assert "towninfo-small" in listed and "multiwoz21" in listed and "dailydialog" in listed
        # The run form of aft-sweep/tiny: the parameters with the help texts of flows/params.py.
        form = page(
            f"/deployments/deployment/{deployment['id']}/run",
            "β values (weight of focus in R)",
            shot="aft-sweep-run-form.png",
        )
        assert "the SFT run's source budget" in form or "K values (samples per prompt)" in form
        # The finished pipeline run (its graph marks the artifacts it made); the aft-branches artifact is a table
        # of the branches, linked to that run.
        page(
            f"/runs/flow-run/{pipeline_run['id']}",
            pipeline_run["name"],
            "Completed",
            "Artifacts",
            shot="pipeline-run.png",
        )
        (table,) = _api(
            env,
            "POST",
            "/artifacts/filter",
            {"artifacts": {"key": {"any_": ["aft-branches"]}, "flow_run_id": {"any_": [pipeline_run["id"]]}}},
        )
        summary = json.loads((tmp_path / "pipeline" / "summary.json").read_text())
        page(
            f"/artifacts/artifact/{table['id']}",
            "branch_id",
            "final_label",
            pipeline_run["name"],
            *[b["branch_id"] for b in summary["branches"]],
            shot="aft-branches-artifact.png",
        )
    finally:
        driver.quit()
    assert {p.name for p in UI_SCREENSHOTS.glob("*.png")} >= {
        "deployments.png",
        "aft-sweep-run-form.png",
        "pipeline-run.png",
        "aft-branches-artifact.png",
    }
