"""Comet experiment tracking behind the library's `Tracker` protocol.

Online when COMET_API_KEY is set (the key is read from the environment only and never written
anywhere); otherwise an offline archive `<run_dir>/comet/<experiment>.zip` and no network attempt:
comet-ml phones home by default even offline (environment details, error tracking), so both are
switched off here before comet_ml is imported. Auto-logging is off: we log what we mean to log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aft_core.layout import RunLayout

COMET_PROJECT = os.environ.get("COMET_PROJECT_NAME", "aft")


def comet_online() -> bool:
    return bool(os.environ.get("COMET_API_KEY"))


def _quiet_offline_environment() -> None:
    if not comet_online():
        os.environ["COMET_AUTO_LOG_ENV_DETAILS"] = "false"
        os.environ["COMET_ERROR_TRACKING_ENABLE"] = "false"
        os.environ["COMET_AUTO_LOG_CO2"] = "false"
    os.environ.setdefault("COMET_DISABLE_AUTO_LOGGING", "1")  # we log explicitly; no import-order warnings


class CometTracker:
    """One Comet experiment; implements aft_core.tracking.Tracker."""

    def __init__(self, run_dir: str | Path, name: str, tags: Sequence[str] = ()) -> None:
        _quiet_offline_environment()
        import comet_ml

        self.offline_dir = RunLayout(run_dir).comet
        self.offline_dir.mkdir(parents=True, exist_ok=True)
        config = comet_ml.ExperimentConfig(
            name=name,
            tags=list(tags),
            offline_directory=str(self.offline_dir),
            display_summary_level=0,
            log_code=False,
            log_graph=False,
            parse_args=False,
            log_git_metadata=False,
            log_git_patch=False,
            log_env_details=False,
            log_env_gpu=False,
            log_env_host=False,
            log_env_cpu=False,
            log_env_network=False,
            log_env_disk=False,
            auto_output_logging=False,
            auto_param_logging=False,
            auto_metric_logging=False,
            auto_log_co2=False,
        )
        self.experiment = comet_ml.start(project_name=COMET_PROJECT, online=comet_online(), experiment_config=config)

    def log_params(self, params: dict[str, Any]) -> None:
        self.experiment.log_parameters({k: v for k, v in params.items() if v is not None})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.experiment.log_metrics(metrics, step=step)

    def log_table(self, name: str, path: str | Path) -> None:
        """A parquet table goes to Comet as a CSV table (without long text columns); other files as assets."""
        path = Path(path)
        if path.suffix == ".parquet":
            import pandas as pd

            frame = pd.read_parquet(path)
            frame = frame.drop(columns=[c for c in ("samples",) if c in frame])
            self.experiment.log_table(f"{name}.csv", tabular_data=frame)
        else:
            self.experiment.log_asset(str(path), file_name=f"{name}{path.suffix}")

    def end(self) -> None:
        self.experiment.end()


class ProgressLog:
    """A Tracker that turns evaluation metrics into log lines with an ETA (progress in Prefect's logs)."""

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter,
        label: str,
        total_steps: int,
        prefixes: Sequence[str] = ("dev/", "probe/"),
    ) -> None:
        self.logger, self.label, self.total, self.prefixes = logger, label, total_steps, tuple(prefixes)
        self.started, self.first_step = time.monotonic(), None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.first_step is None:
            self.first_step = step - 1
        shown = {k: v for k, v in metrics.items() if k.startswith(self.prefixes) and isinstance(v, (int, float))}
        if not shown:
            return
        done = max(step - self.first_step, 1)
        eta = (time.monotonic() - self.started) / done * max(self.total - step, 0)
        keys = [k for k in shown if k.endswith(("loss", "focus", "bertscore", "delta_focus", "mean_length"))]
        values = ", ".join(f"{k} {shown[k]:.4f}" for k in keys)
        self.logger.info(
            "%s step %d/%d (%.0f%%, ETA %.0fs): %s",
            self.label,
            step,
            self.total,
            100 * step / max(self.total, 1),
            eta,
            values,
        )

    def log_table(self, name: str, path: str | Path) -> None:
        pass
