"""The `aft` command: thin argument parsing over the library's entry points.

    aft data towninfo --out DIR [--dialogues N] [--seed S]   write the built-in synthetic corpus
    aft data stats PATH                                      one JSON object describing a corpus
    aft data holdout PATH --out DIR                          a single-split corpus divided by dialogue
    aft sft --data PATH --model PRESET|DIR --out DIR [...]   supervised fine-tuning (resumable)
    aft train-branch --sft DIR --data PATH --out DIR [...]   one AFT branch: train (resumable), then judge
    aft classify BRANCH_DIR [--thresholds sft|paper] [--threshold KEY=VALUE ...]
                                                             judge a finished branch: labels, ★ (no retraining)
    aft evaluate --sft DIR [--branch DIR ...] --data PATH --out DIR   test evaluation (Table 1)
    aft report RUN_DIR                                       (re)build RUN_DIR/report.html
    aft converse RUN_DIR | --sft DIR [--branch DIR ...] --data PATH --out DIR [--mode both] [--goals N] [--samples N]
                                                             closed-loop conversations with the user simulator

Bad input prints one line (file, field, fix) and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aft_core.config import CANDIDATES_EVERY, AFTConfig, ConversationConfig, EvalConfig, SFTConfig, settings_of
from aft_core.errors import AftInputError


def add_config_options(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """One --option per dataclass field, typed and helped from the field itself."""
    for f in settings_of(cls):
        if f.name in skip:
            continue
        kind = _parse_bool if isinstance(f.default, bool) else type(f.default)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=kind,
            default=None,
            help=f"{f.metadata.get('help', '')} (default: {f.default!r})",
        )


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not true or false")


def config_from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    cfg = cls(**{**given, **fixed})
    cfg.validate()
    return cfg


def cmd_towninfo(args: argparse.Namespace) -> int:
    from aft_core.data.towninfo import generate_towninfo

    out = generate_towninfo(args.out, dialogues=args.dialogues, seed=args.seed)
    print(json.dumps({"corpus": str(out)}))
    return 0


def cmd_holdout(args: argparse.Namespace) -> int:
    from aft_core.data.corpus import hold_out_splits

    print(json.dumps({"corpus": str(args.out), **hold_out_splits(args.path, args.out)}, indent=2))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from aft_core.data.corpus import load_corpus

    print(json.dumps(load_corpus(args.path).stats(), indent=2))
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    from aft_core.sft import run_sft

    cfg = config_from_args(SFTConfig, args)
    result = run_sft(cfg, args.out, progress=not args.quiet)
    print(json.dumps({k: v for k, v in result.items() if k != "dev_history"}, indent=2))
    print(f"SFT model: {result['model_dir']}", file=sys.stderr)
    return 0


def thresholds_from_args(args: argparse.Namespace) -> Any:
    """The named threshold set with each --threshold KEY=VALUE (VALUE as JSON) applied."""
    from aft_core.attractors import thresholds_from

    overrides = {}
    for item in args.threshold or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise AftInputError(
                "--threshold", item, "expects KEY=VALUE", "write e.g. --threshold unique_min_fraction=0.5"
            )
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return thresholds_from(args.thresholds, overrides, "--threshold")


def add_threshold_options(parser: argparse.ArgumentParser) -> None:
    from aft_core.attractors import THRESHOLD_SETS

    parser.add_argument(
        "--thresholds",
        default="sft",
        choices=sorted(THRESHOLD_SETS),
        help="classifier threshold set: sft (relative to the branch's step-0 probe row; default) "
        "or paper (the paper's absolute values)",
    )
    parser.add_argument(
        "--threshold",
        action="append",
        metavar="KEY=VALUE",
        help="override one threshold of the set, e.g. primary_min_delta_entity_accuracy=0 (repeatable)",
    )


def cmd_train_branch(args: argparse.Namespace) -> int:
    from aft_core.aft import run_branch
    from aft_core.judging import judge_branch
    from aft_core.layout import verdict_fields

    cfg = config_from_args(AFTConfig, args, sft_model=args.sft)
    thresholds = thresholds_from_args(args)
    result = run_branch(
        cfg, args.out, progress=not args.quiet, thresholds=thresholds, candidates_every=args.log_candidates_every
    )
    print(json.dumps({**result, **verdict_fields(judge_branch(args.out, thresholds))}, indent=2))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from aft_core.judging import judge_branch

    verdict = judge_branch(args.branch_dir, thresholds_from_args(args))
    keys = (
        "final_label",
        "healthy_until",
        "primary_step",
        "primary_delta_focus",
        "primary_delta_bertscore",
        "primary_delta_entity_accuracy",
    )
    print(json.dumps({k: verdict.get(k) for k in keys}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from aft_core.evaluation import branch_systems, evaluate_systems, table1_markdown
    from aft_core.layout import BranchLayout

    systems = {"SFT": {"model": args.sft}}
    if args.base:  # the pretrained model before SFT: Table 1's Base row (AFT_SPEC §7)
        systems["Base"] = {"model": args.base}
    for folder in args.branch or []:
        branch = BranchLayout(Path(folder))
        if not branch.finished():
            raise AftInputError(
                folder,
                branch.result.name,
                "the branch has not finished",
                "finish it with `aft train-branch` (same --out) or leave it out",
            )
        systems.update(branch_systems(args.sft, folder))
    table = evaluate_systems(systems, config_from_args(EvalConfig, args), args.out)
    print(table1_markdown(table))
    return 0


def cmd_converse(args: argparse.Namespace) -> int:
    from aft_core.dialogue.closed_loop import conversation_markdown, converse_systems
    from aft_core.evaluation import branch_systems
    from aft_core.layout import BranchLayout, RunLayout

    if args.run_dir:  # a pipeline run: its SFT model, every judged branch's ★ and last checkpoint, its corpus
        run = RunLayout(args.run_dir)
        if not run.sft.finished():
            raise AftInputError(
                args.run_dir,
                run.sft.result.name,
                "the run has no finished SFT model",
                "pass a pipeline run folder whose SFT stage finished, or --sft DIR",
            )
        args.sft = args.sft or str(run.sft.model)
        args.data = args.data or run.sft.read_config()["data"]
        args.out = args.out or str(run.conversations.root)
        args.branch = (args.branch or []) + [
            str(run.branch(r["branch_id"]).root)
            for r in run.branch_rows()
            if r.get("status") != "failed" and run.branch(r["branch_id"]).verdict.exists()
        ]
    if not args.sft or not args.out:
        raise AftInputError(
            "aft converse",
            "--sft/--out",
            "no SFT model or output folder given",
            "pass a pipeline run folder, or --sft DIR --data CORPUS_DIR --out DIR",
        )
    systems = {"SFT": {"model": args.sft}}
    for folder in args.branch or []:
        branch = BranchLayout(Path(folder))
        if not branch.finished() or not branch.verdict.exists():
            raise AftInputError(
                folder,
                branch.verdict.name,
                "the branch has not finished or not been judged",
                "finish it with `aft train-branch` (same --out) or leave it out",
            )
        systems.update(branch_systems(args.sft, folder))
    table = converse_systems(
        systems,
        config_from_args(ConversationConfig, args),
        args.out,
        on_system=lambda name: print(f"conversations: {name}", file=sys.stderr, flush=True),
    )
    print(conversation_markdown(table))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from aft_core.evaluation import qualitative_comparison
    from aft_core.layout import RunLayout
    from aft_core.report import build_report

    run = RunLayout(args.run_dir)
    run.evaluation.read_table()  # a run without a test evaluation is named with the fix
    if args.recompute_pairs or run.evaluation.read_qualitative() is None:
        qualitative_comparison(run)
    print(build_report(run.root))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from aft_core.demo_app import launch

    print(f"AFT demo of {args.run_dir}: http://127.0.0.1:{args.port} (Ctrl+C stops it)", flush=True)
    launch(args.run_dir, port=args.port)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from aft_core.export import export_model

    print(json.dumps(export_model(args.source, args.out, step=args.step, merge=args.merge), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    parser = argparse.ArgumentParser(
        prog="aft", description="Attention Fine-Tuning (AFT) for encoder–decoder and decoder-only dialogue models."
    )
    try:
        installed = version("aft")
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "unknown (not installed)"
    parser.add_argument("--version", action="version", version=f"aft {installed}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="corpus tools").add_subparsers(dest="data_command", required=True)
    towninfo = data.add_parser("towninfo", help="write the built-in synthetic TownInfo corpus")
    towninfo.add_argument("--out", required=True, help="folder to write (must be empty or hold the same corpus)")
    towninfo.add_argument("--dialogues", type=int, default=3000, help="number of dialogues (default: 3000)")
    towninfo.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    towninfo.set_defaults(func=cmd_towninfo)
    stats = data.add_parser("stats", help="print format, dialogues and examples per split, history lengths")
    stats.add_argument("path", help="corpus file or folder")
    stats.set_defaults(func=cmd_stats)

    holdout = data.add_parser(
        "holdout",
        help="divide a single-split corpus (a MultiWOZ validation file, one chat JSONL file) into train/validation/"
        "test by dialogue, as aft-pipeline does; the folder written is what --data then takes (nothing is copied)",
    )
    holdout.add_argument("path", help="corpus file or folder with one split")
    holdout.add_argument("--out", required=True, help="folder to write (links and list files)")
    holdout.set_defaults(func=cmd_holdout)

    sft = sub.add_parser("sft", help="supervised fine-tuning (resumes an interrupted run in the same --out)")
    add_config_options(sft, SFTConfig)
    sft.add_argument("--out", required=True, help="run folder")
    sft.add_argument("--quiet", action="store_true", help="no progress bar")
    sft.set_defaults(func=cmd_sft)

    branch = sub.add_parser("train-branch", help="one AFT branch from an SFT model (resumes in the same --out)")
    branch.add_argument("--sft", required=True, help="the SFT model folder (e.g. runs/main/sft/model)")
    add_config_options(branch, AFTConfig, skip=("sft_model",))
    branch.add_argument("--out", required=True, help="branch folder")
    branch.add_argument("--quiet", action="store_true", help="no progress bar")
    branch.add_argument(
        "--log-candidates-every",
        type=int,
        default=CANDIDATES_EVERY,
        help=f"every N steps, keep the first prompt's K candidates with rewards and weights "
        f"(candidates/, and the tracker); 0 = never (default {CANDIDATES_EVERY})",
    )
    add_threshold_options(branch)
    branch.set_defaults(func=cmd_train_branch)

    classify = sub.add_parser(
        "classify", help="re-label a finished branch's checkpoints and pick its ★ (no retraining)"
    )
    classify.add_argument("branch_dir", help="a finished branch folder (holds result.json)")
    add_threshold_options(classify)
    classify.set_defaults(func=cmd_classify)

    evaluate = sub.add_parser(
        "evaluate", help="greedy test evaluation of SFT and branches' ★/last checkpoints (Table 1)"
    )
    evaluate.add_argument("--sft", required=True, help="the SFT model folder")
    evaluate.add_argument("--branch", action="append", help="a finished branch folder (repeatable)")
    evaluate.add_argument(
        "--base",
        help="the pretrained model the SFT run started from (a folder or hf:<org>/<name>): adds Table 1's Base row",
    )
    add_config_options(evaluate, EvalConfig)
    evaluate.add_argument("--out", required=True, help="folder for per_example.parquet, table.json, table1.md")
    evaluate.set_defaults(func=cmd_evaluate)

    converse = sub.add_parser(
        "converse",
        help="SFT and branches' ★/last checkpoints in whole conversations with the "
        "user simulator: Inform, Success, degradation, attention by turn",
    )
    converse.add_argument(
        "run_dir",
        nargs="?",
        help="a pipeline run folder: its SFT model, each judged branch's ★ and "
        "last checkpoint and its corpus (default --out: RUN_DIR/conversations)",
    )
    converse.add_argument("--sft", help="the SFT model folder (without a run folder)")
    converse.add_argument("--branch", action="append", help="a finished, judged branch folder (repeatable)")
    add_config_options(converse, ConversationConfig)
    converse.add_argument("--mode", dest="reveal", help="the same as --reveal: full, sharded, agenda or both")
    converse.add_argument("--out", help="folder for conversations.jsonl and table.json")
    converse.set_defaults(func=cmd_converse)

    report = sub.add_parser("report", help="(re)build the self-contained HTML report of a pipeline run")
    report.add_argument("run_dir", help="the pipeline's run folder")
    report.add_argument(
        "--recompute-pairs",
        action="store_true",
        help="choose the qualitative pairs and compute their attention maps again (default: only when missing)",
    )
    report.set_defaults(func=cmd_report)

    export = sub.add_parser(
        "export",
        help="an SFT model or a branch checkpoint as a model folder (--merge: adapters "
        "merged into plain weights that transformers loads without PEFT)",
    )
    export.add_argument("source", help="an SFT model folder, or a branch folder")
    export.add_argument("--out", required=True, help="the folder to write")
    export.add_argument(
        "--step",
        default="",
        help="a branch's checkpoint: star, last or a step number (default: ★ when the branch has one, else last)",
    )
    export.add_argument(
        "--merge",
        action="store_true",
        help="merge adapters into the weights (default: an adapter stays an adapter, in PEFT's layout)",
    )
    export.set_defaults(func=cmd_export)

    demo = sub.add_parser("demo", help="the interactive demo of a pipeline run in the browser, on 127.0.0.1")
    demo.add_argument("run_dir", help="the pipeline's run folder")
    demo.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AftInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
