"""Prefect flows of the AFT workflow: `aft-pipeline`, `aft-sweep` and `aft-branch`."""

import tasks  # noqa: F401 - telemetry defaults, before Prefect is imported
