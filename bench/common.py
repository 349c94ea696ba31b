"""Shared set-up and measurements for the benchmarks: a model to time, peak memory, and the machine's matmul rate."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from aft_core.config import PRESETS, SFTConfig
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, tokenizer_texts
from aft_core.data.towninfo import generate_towninfo
from aft_core.models import build_model, load_model, save_model, train_tokenizer
from aft_core.sft import run_sft


def prepare_model(out: Path, sft: str | None, model: str | None, sft_steps: int) -> tuple[str, str]:
    """The corpus folder and a saved model to time.

    `sft`: an existing SFT model folder (its corpus is regenerated, deterministically, beside it);
    `model`: a preset built from config with untrained weights (for timing a large model on a GPU);
    neither: a short SFT run of the `small` preset, so sampled responses have realistic lengths.
    """
    corpus_dir = generate_towninfo(out / "towninfo")
    if sft:
        return str(corpus_dir), sft
    if model:
        preset = PRESETS[model]
        train_table = corpus_to_dataset(load_corpus(corpus_dir))["train"]
        tokenizer = train_tokenizer(tokenizer_texts(train_table), min(preset.vocab_size, PRESETS["small"].vocab_size))
        built = build_model(model, tokenizer)
        if preset.vocab_size > built.config.vocab_size:  # time the preset's full vocabulary
            built.resize_token_embeddings(preset.vocab_size)
        save_model(built, tokenizer, out / f"{model}-untrained")
        return str(corpus_dir), str(out / f"{model}-untrained")
    result = run_sft(
        SFTConfig(data=str(corpus_dir), model="small", max_steps=sft_steps, warmup_steps=min(200, sft_steps // 4)),
        out / "sft",
        progress=False,
    )
    return str(corpus_dir), result["model_dir"]


def load_pair(model_dir: str, device: torch.device) -> tuple[Any, Any, Any]:
    """Policy and frozen reference (both eval mode: no dropout, as in AFT) and the tokenizer."""
    policy, tokenizer = load_model(model_dir)
    reference, _ = load_model(model_dir)
    return policy.eval().to(device), reference.eval().requires_grad_(False).to(device), tokenizer


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak of memory allocated by `fn` above what was allocated when it started.

    CUDA: the caching allocator's peak statistic. CPU: every allocation and free that torch makes
    is recorded by the profiler (profile_memory) and the running total's maximum is taken, which is
    exact for tensors and independent of what malloc returns to the operating system.
    """
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """FLOP/s of an n×n×n matrix product on this device, the median of `repeats` (the machine's practical peak)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    return 2 * n**3 / median_seconds(lambda: a @ b, device, repeats)


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
