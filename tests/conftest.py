"""Shared fixtures: a hermetic environment (no hub, no stray files) and small corpora built on the fly."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The one bound on any wait in the suite. It guards against hangs and assumes nothing about speed: every wait is
# a poll that ends as soon as its condition holds, and no test sleeps in the hope that something has happened.
HANG_S = 900
SHARED_DATA = ROOT.parent / "shared" / "data"

_scratch = Path(tempfile.mkdtemp(prefix="aft-tests-"))
for var, sub in (("MPLCONFIGDIR", "mpl"), ("HF_HOME", "hf"), ("PREFECT_HOME", "prefect"), ("TMPDIR", "tmp")):
    os.environ.setdefault(var, str(_scratch / sub))
    Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
# Under pytest-xdist (the default: `-n 2` in pyproject.toml) each worker process has one core: torch (and every
# process a test starts) runs one thread. Two workers of two OpenMP threads each on two cores spin-wait on each
# other's cores: an SFT step measured 10x slower that way. A worker inherits the controlling process's
# environment, which this file has already given AFT_THREADS, so a worker does not read it back: it takes
# AFT_WORKER_THREADS (default 1). One process alone (-n 0) takes AFT_THREADS, as a user sets it, or 2.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_THREADS = os.environ.get("AFT_WORKER_THREADS", "1") if _WORKER else (os.environ.get("AFT_THREADS") or "2")
os.environ.update(
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    COMET_AUTO_LOG_ENV_DETAILS="false",
    COMET_ERROR_TRACKING_ENABLE="false",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    AFT_THREADS=_THREADS,
    OMP_NUM_THREADS=_THREADS,
    MKL_NUM_THREADS=_THREADS,
)


# Test files by what they cost, the long ones first (seconds of one worker's time, measured in a suite of 355 s):
# under xdist's loadfile each worker takes the next file when it is free, so the long ones start at once and the
# short ones fill the end (the suite's tail). test_demo, test_dialogue and test_multiworker's farm read the shared
# tiny pipeline run that test_flows builds, so they come after it (the farm, the dearest, third: test_flows is
# building that run meanwhile). pyproject.toml passes --no-loadscope-reorder, without which xdist puts the files
# with the most tests first and ignores this order. Files not named keep their order, after.
FILE_ORDER = (
    "test_flows.py",  # 106 s
    "test_hub_models.py",  # 66 s
    "test_multiworker.py",  # 159 s; after test_hub_models: its farm reads the tiny pipeline run test_flows builds
    "test_real_corpora.py",  # 89 s
    "test_reliability.py",  # 66 s
    "test_dialogue.py",  # 63 s
    "test_aft.py",  # 28 s
    "test_adapters.py",  # 27 s
    "test_demo.py",  # 16 s
    "test_sft.py",  # 12 s
    "test_model_folders.py",  # 10 s
    "test_docs.py",  # 7 s
    "test_fast_step.py",
)


@pytest.fixture(autouse=True)
def _library_log_handlers_write_to_an_open_stream():
    """transformers binds its log handler to the sys.stderr of its first log call. When that call falls inside a
    capsys test, the handler keeps that test's stream, which is closed after it, and a later test's warning prints
    '--- Logging error --- Traceback ...' into that test's stderr (test_bad_input.py run alone failed on it). A
    handler left with a closed stream is pointed at the current one before each test."""
    import logging
    import sys

    for handler in logging.getLogger("transformers").handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
            # not setStream, which flushes the closed stream; transformers also pinned `flush` to it
            handler.stream, handler.flush = sys.stderr, sys.stderr.flush  # type: ignore[method-assign]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FILE_ORDER)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FILE_ORDER)))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the test is skipped (with the reason) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present at {path} (the shared data folder lives beside the project)")
    return path


@pytest.fixture(scope="module")
def harness():
    """A temporary Prefect server on loopback for one test module."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=HANG_S):
        yield


@pytest.fixture(scope="session")
def towninfo_dir(tmp_path_factory) -> Path:
    from aft_core.data.towninfo import generate_towninfo

    return generate_towninfo(tmp_path_factory.mktemp("towninfo") / "corpus", dialogues=200, seed=3)


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory, towninfo_dir) -> str:
    """A tiny SFT model on the session's TownInfo corpus (seconds to train)."""
    from aft_core.config import SFTConfig
    from aft_core.sft import run_sft

    cfg = SFTConfig(
        data=str(towninfo_dir),
        model="tiny",
        max_steps=60,
        eval_every=30,
        warmup_steps=5,
        dev_examples=64,
        batch_size=16,
        max_source_tokens=96,
        learning_rate=3e-3,
    )
    return run_sft(cfg, tmp_path_factory.mktemp("sft") / "run", progress=False)["model_dir"]


@pytest.fixture(scope="session")
def causal_sft_model(tmp_path_factory, towninfo_dir) -> str:
    """A tiny decoder-only (Llama-shaped) SFT model on the session's TownInfo corpus."""
    from aft_core.config import SFTConfig
    from aft_core.sft import run_sft

    cfg = SFTConfig(
        data=str(towninfo_dir),
        model="causal-tiny",
        max_steps=60,
        eval_every=30,
        warmup_steps=5,
        dev_examples=64,
        batch_size=16,
        max_source_tokens=96,
        learning_rate=3e-3,
    )
    return run_sft(cfg, tmp_path_factory.mktemp("causal-sft") / "run", progress=False)["model_dir"]


COMET_SECRET = "aft-test-secret-comet-key-4f9c"


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> dict:
    """`aft-pipeline --preset tiny` once per test session, shared read-only by every test that reads a whole run.

    Run as a user starts it (a process of its own with an ephemeral Prefect API, console captured, third-party
    progress settings unset) and under the strictest conditions any of those tests needs: a Comet API key is
    set (Comet stays offline) and every connection beyond loopback is refused and recorded
    (tests/guarded_pipeline.py). Returns {"run_dir", "console", "attempts"}. No test changes it: one that runs the
    pipeline again on a folder builds its own (run folders name their corpus and models by path: not copied)."""
    import subprocess
    import sys

    from filelock import FileLock

    # Under xdist the run is built once for all workers: the first to ask builds it under a lock in the session's
    # shared folder (named by this test run's id, so no earlier session's folder is ever reused); the others read
    # it. Test files are ordered so that its readers in other files come after test_flows (pytest_collection_
    # modifyitems below), so a worker rarely waits.
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    root = tmp_path_factory.getbasetemp()
    folder = (root.parent / f"tiny-pipeline-{run_id}") if run_id else (root / "tiny-pipeline")
    folder.mkdir(parents=True, exist_ok=True)
    run_dir, attempts, done = folder / "run", folder / "network-attempts.txt", folder / "console.txt"
    with FileLock(str(folder / ".lock")):
        if done.exists():
            return {"run_dir": run_dir, "console": done.read_text(), "attempts": attempts.read_text().splitlines()}
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "COMET_LOGGING_CONSOLE")
        }
        env["COMET_API_KEY"] = COMET_SECRET
        run = subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "guarded_pipeline.py"),
                str(attempts),
                "--preset",
                "tiny",
                "--run-dir",
                str(run_dir),
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=HANG_S,
        )
        console = run.stdout + run.stderr
        assert run.returncode == 0, console[-3000:]
        done.write_text(console)  # last: its presence marks a finished run
    return {"run_dir": run_dir, "console": console, "attempts": attempts.read_text().splitlines()}


def branch_config(sft_model, towninfo_dir, **over):
    """A tiny branch config: 4 steps, checkpoints every 2."""
    from aft_core.config import AFTConfig

    settings = dict(
        sft_model=sft_model,
        data=str(towninfo_dir),
        steps=4,
        checkpoint_every=2,
        probe_size=16,
        batch_size=4,
        k=2,
        max_new_tokens=12,
        max_source_tokens=96,
        learning_rate=1e-3,
    )
    return AFTConfig(**{**settings, **over})


@pytest.fixture(scope="session")
def chromium() -> dict[str, str]:
    """Debian's chromium and chromedriver; the test set-up installs them (apt, as root) when they are missing."""
    import shutil
    import subprocess

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.skip(
                "Debian chromium + chromium-driver are not installed and this test set-up can only install "
                "them with apt-get as root: run `apt-get install -y chromium chromium-driver`"
            )
        done = subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
            capture_output=True,
            text=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        assert done.returncode == 0, (
            f"apt-get install chromium chromium-driver failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
        browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return {"browser": browser, "driver": driver}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server, timeout: float = HANG_S) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=30) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"prefect server not healthy at {url} after {timeout}s")


def stop_process_group(process, timeout: float = 60.0) -> None:
    """SIGTERM a process started with start_new_session=True and its children; SIGKILL what is left."""
    stop_process_groups([process], timeout)


def stop_process_groups(processes, timeout: float = 60.0) -> None:
    """`stop_process_group` for several at once: all are told to stop first, then waited for within one shared
    `timeout` (stopping three workers one after the other had cost three timeouts)."""
    import signal
    import subprocess
    import time

    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def prefect_server_env(folder: Path):
    """A real `prefect server` on a free loopback port with its home in `folder`; yields the environment
    that points at it (PREFECT_API_URL, AFT_PROJECT_DIR for prefect.yaml's pull step). Stopped on exit."""
    import subprocess
    import sys

    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(folder / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "AFT_PROJECT_DIR": str(ROOT),
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    with open(folder / "server.log", "w") as log:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("prefect")),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_healthy(env["PREFECT_API_URL"], server)
            yield env
        finally:
            stop_process_group(server)


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: to prove nothing on disk changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
