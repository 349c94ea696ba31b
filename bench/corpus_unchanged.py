"""Check: a `rollout: corpus` branch trained by this working tree equals, bit for bit, the same branch trained by the
code at an earlier git revision (issue 30: the self-play work must leave corpus branches unchanged).

One process prepares a TownInfo corpus and a tiny SFT model; then the same short branch (4 steps, probes at 0, 2
and 4) is trained twice from that model, once by each code version (the revision is checked out in a temporary
git worktree), in separate processes on this machine. Weights are compared by SHA-256 over every tensor, probe
rows value by value. Prints both and exits 1 on any difference.

    python bench/corpus_unchanged.py [--ref 3c3bb45]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PREPARE = """
import sys
from pathlib import Path
from aft_core.config import SFTConfig
from aft_core.data.towninfo import generate_towninfo
from aft_core.sft import run_sft
root = Path(sys.argv[1])
data = generate_towninfo(root / "corpus", dialogues=200, seed=3)
cfg = SFTConfig(data=str(data), model="tiny", max_steps=60, eval_every=30, warmup_steps=5, dev_examples=64,
                batch_size=16)
print(run_sft(cfg, root / "sft", progress=False)["model_dir"])
"""

BRANCH = """
import sys
from aft_core.aft import run_branch
from aft_core.config import AFTConfig
cfg = AFTConfig(sft_model=sys.argv[2], data=sys.argv[3], steps=4, checkpoint_every=2, probe_size=16, batch_size=4,
                k=2, max_new_tokens=12, max_source_tokens=96, learning_rate=1e-3)
run_branch(cfg, sys.argv[1], progress=False)
"""


def run(code: str, cwd: Path, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(cwd)}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed in {cwd}:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def fingerprint(branch: Path) -> dict:
    import pandas as pd
    from safetensors.torch import load_file

    weights = load_file(str(branch / "checkpoints" / "step-0000004" / "model.safetensors"))
    digest = hashlib.sha256(b"".join(weights[k].numpy().tobytes() for k in sorted(weights))).hexdigest()
    probe = pd.read_parquet(branch / "probe.parquet")
    return {"weights_sha256": digest, "probe": json.loads(probe.to_json(orient="records", double_precision=15))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="3c3bb45", help="the earlier revision (default: before the self-play work)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="aft-corpus-unchanged-"))
    model_dir = run(PREPARE, ROOT, str(scratch))
    corpus = str(scratch / "corpus")
    before = scratch / "before-code"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(before), args.ref], cwd=ROOT, check=True)
    try:
        run(BRANCH, before, str(scratch / "before"), model_dir, corpus)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    run(BRANCH, ROOT, str(scratch / "after"), model_dir, corpus)
    a, b = fingerprint(scratch / "before"), fingerprint(scratch / "after")
    same_weights, same_probe = a["weights_sha256"] == b["weights_sha256"], a["probe"] == b["probe"]
    print(f"weights at {args.ref}: {a['weights_sha256']}")
    print(f"weights now:     {b['weights_sha256']}")
    print(f"weights identical: {same_weights}; probe rows identical: {same_probe} ({len(a['probe'])} rows)")
    return 0 if same_weights and same_probe else 1


if __name__ == "__main__":
    sys.exit(main())
