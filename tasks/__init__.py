"""Thin Prefect tasks over aft_core.

Importing this package switches off the telemetry of the libraries it drives unless the user set
these variables: Prefect's server analytics (and any library honouring DO_NOT_TRACK). Comet's
environment and error reporting are switched off in tasks/tracking.py when no COMET_API_KEY is set.
It also keeps the console of a flow run to the flow's own log lines: no per-file "Loading weights" /
"Writing model shards" bars (Hugging Face), no datasets bars, Comet's console at WARNING (the offline
archives' paths are in the README and the run folder). Set the variables to see them again.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("COMET_LOGGING_CONSOLE", "WARNING")
# The temporary local API that `aft-pipeline` starts when no server is configured: on a busy 2-core machine
# it took longer than Prefect's default 20 s to come up (seen while a sweep ran beside it).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")
