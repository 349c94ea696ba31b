"""Statistics of the test table: bootstrap confidence intervals, paired comparisons, distinct-n.

All resampling uses a seeded numpy Generator, so every figure is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap interval of the mean at `level`.

    A constant sample gives a point (low = mean = high); an empty one gives NaNs.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)  # [samples]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    mean = float(x.mean())
    return mean, float(min(low, mean)), float(max(high, mean))


def paired_bootstrap_p(deltas: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value for H0: mean(delta) = 0.

    p = min(1, 2 · min(P*(mean ≤ 0), P*(mean ≥ 0))) over bootstrap resamples of the per-example
    differences. Identical systems (all deltas 0) give p = 1.
    """
    d = np.asarray(deltas, dtype=float)
    if d.size == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(samples, d.size))].mean(axis=1)
    return float(min(1.0, 2.0 * min((means <= 0).mean(), (means >= 0).mean())))


def paired_comparison(system: Sequence[float], baseline: Sequence[float], seed: int = 0) -> dict[str, float]:
    """Per-example comparison of one metric against the baseline on the same examples.

    share_improved: share of examples where the system is strictly higher; share_worse likewise lower;
    median_delta: median of system − baseline; p_value: paired bootstrap (two-sided).
    """
    a, b = np.asarray(system, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same examples: {a.shape} vs {b.shape}")
    delta = a - b
    return {
        "share_improved": float((delta > 0).mean()) if delta.size else float("nan"),
        "share_worse": float((delta < 0).mean()) if delta.size else float("nan"),
        "median_delta": float(np.median(delta)) if delta.size else float("nan"),
        "mean_delta": float(delta.mean()) if delta.size else float("nan"),
        "p_value": paired_bootstrap_p(delta, seed=seed),
    }


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: distinct word n-grams over all n-grams of all texts (0 when there are none)."""
    total, seen = 0, set()
    for text in texts:
        words = text.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0
