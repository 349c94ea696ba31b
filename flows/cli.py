"""`aft-pipeline`: run the whole pipeline from the command line (a Prefect flow run; ephemeral API if none is set).

    aft-pipeline                                   the built-in TownInfo corpus, preset towninfo-small
    aft-pipeline --preset tiny --run-dir runs/t    another preset / run folder
    aft-pipeline --set sweep.grid.beta=[0.5,1] --set sft.max_steps=1000
    aft-pipeline --params params.json              parameters from a JSON file (PipelineParams)
    aft-pipeline --preset paper --check            check the parameters, print the projected cost, run nothing
Rerunning the same command resumes: finished stages and branches are not executed again.
Every parameter is checked before anything starts; a bad one prints its path and the fix and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import tasks  # noqa: F401 - telemetry defaults, before Prefect is imported


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from aft_core.errors import AftInputError
    from aft_core.layout import RunLayout
    from flows.params import PRESETS, check_parameters, deep_merge, parse_override, preset

    parser = argparse.ArgumentParser(
        prog="aft-pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="towninfo-small", choices=sorted(PRESETS), help="named parameter set")
    parser.add_argument("--params", help="JSON file of PipelineParams (overrides the preset)")
    parser.add_argument("--run-dir", help="run folder (default: the preset's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. sweep.grid.eta_kl=[0.05,0.1] (repeatable)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the parameters and print the projected cost; run nothing, download nothing",
    )
    args = parser.parse_args(argv)
    try:
        overrides: dict = {}
        if args.params:
            try:
                overrides = json.loads(Path(args.params).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise AftInputError(
                    args.params, "<root>", f"unreadable parameters ({e})", "pass a JSON object of pipeline parameters"
                ) from e
        for item in args.set:
            overrides = deep_merge(overrides, parse_override(item))
        if args.run_dir:
            overrides["run_dir"] = args.run_dir
        params = preset(args.preset, overrides)
        check_parameters(params)  # every stage's settings, the corpus and the run folder, before any work
    except (ValueError, ValidationError, AftInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        from flows.params import projected_cost

        print(json.dumps({"parameters": "ok", "projected": projected_cost(params)}, indent=2))
        return 0

    from flows.pipeline import aft_pipeline

    state = aft_pipeline(params, return_state=True)
    run = RunLayout(params.run_dir)
    print(f"\nrun folder: {run.root.resolve()}")
    if run.summary_markdown.exists():
        print(run.summary_markdown.read_text())
    if run.report.exists():
        print(f"report: {run.report.resolve()}")
        print(f"demo (SFT and AFT side by side in the browser): aft demo {run.root}")
    if not state.is_completed():
        print(f"error: the pipeline ended {state.name}: {state.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
