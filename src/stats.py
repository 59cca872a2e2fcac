"""Sweep points over seeds: mean and 95 % confidence interval per point, the best point chosen
on validation accuracy, and a paired test of the best point against the runner-up."""

import math
from collections import defaultdict
from typing import Any

import numpy as np
from scipy import stats

METRICS = ("val_accuracy", "test_accuracy")


def interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean; low = high = NaN for one value."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    sem = float(stats.sem(v))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(level, len(v) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def by_point(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (bottleneck, dropout) over its FINISHED seeds: n, seeds, and mean and 95 %
    interval (clipped to [0, 1]) of validation and test accuracy; best mean validation accuracy
    first."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["status"] == "FINISHED":
            groups[(r["bottleneck"], r["dropout"])].append(r)
    points = []
    for (bottleneck, dropout), runs in groups.items():
        point: dict[str, Any] = {
            "bottleneck": bottleneck,
            "dropout": dropout,
            "n": len(runs),
            "seeds": " ".join(str(s) for s in sorted(r["seed"] for r in runs)),
        }
        for m in METRICS:  # an accuracy's interval stops at 0 and 1
            mean, low, high = interval([r[m] for r in runs])
            low, high = max(low, 0.0), min(high, 1.0)
            point.update({f"{m}_mean": mean, f"{m}_ci_low": low, f"{m}_ci_high": high})
        points.append(point)
    return sorted(points, key=lambda p: (-p["val_accuracy_mean"], p["bottleneck"], p["dropout"]))


def paired_comparison(
    rows: list[dict[str, Any]], best: dict[str, Any], other: dict[str, Any], metric: str
) -> dict[str, Any]:
    """`metric` of two points on the seeds both ran: n, mean difference (best - other) and the
    two-sided p-value of a paired t-test (NaN below 2 seeds or when every difference is equal)."""

    def values(point: dict) -> dict[int, float]:
        return {
            r["seed"]: r[metric]
            for r in rows
            if r["status"] == "FINISHED"
            and (r["bottleneck"], r["dropout"]) == (point["bottleneck"], point["dropout"])
        }

    a, b = values(best), values(other)
    seeds = sorted(a.keys() & b.keys())
    diff = np.array([a[s] - b[s] for s in seeds])
    p_value = math.nan
    if len(seeds) >= 2 and np.ptp(diff) > 0:
        p_value = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    return {
        "metric": metric,
        "n": len(seeds),
        "difference": float(diff.mean()) if len(seeds) else math.nan,
        "p_value": p_value,
    }
