"""Sweep points over seeds: mean and 95 % confidence interval per point, the best point chosen
on validation accuracy, a paired test of the best point against the runner-up, and the label
budget: test accuracy of every method per number of labels per class."""

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

METRICS = ("val_accuracy", "test_accuracy")
POINT_KEYS = ("bottleneck", "dropout")  # a point's identity when a sweep varies nothing else


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


def _sortable(value: Any) -> tuple:
    """A sort key for a config value of any type (null, numbers, strings) among its kind."""
    return (value is None, type(value).__name__, value if value is not None else 0)


def identity(row: dict[str, Any], keys: Sequence[str]) -> tuple:
    """A run's point: its values of `keys` (every swept key but seed)."""
    return tuple(row.get(k) for k in keys)


def by_point(rows: list[dict[str, Any]], keys: Sequence[str] = POINT_KEYS) -> list[dict[str, Any]]:
    """One row per point (the values of `keys`) over its FINISHED seeds: n, seeds, and mean and
    95 % interval (clipped to [0, 1]) of validation and test accuracy; best mean validation
    accuracy first."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["status"] == "FINISHED":
            groups[identity(r, keys)].append(r)
    points = []
    for values, runs in groups.items():
        point: dict[str, Any] = {
            **dict(zip(keys, values, strict=True)),
            "n": len(runs),
            "seeds": " ".join(str(s) for s in sorted(r["seed"] for r in runs)),
        }
        for m in METRICS:  # an accuracy's interval stops at 0 and 1
            point.update(clipped(f"{m}_", [r[m] for r in runs]))
        points.append(point)
    return sorted(
        points, key=lambda p: (-p["val_accuracy_mean"], *(_sortable(p[k]) for k in keys))
    )


def clipped(prefix: str, values: list[float]) -> dict[str, float]:
    """{prefix}mean, {prefix}ci_low, {prefix}ci_high: the 95 % interval of an accuracy, which
    stops at 0 and 1."""
    mean, low, high = interval(values)
    return {f"{prefix}mean": mean, f"{prefix}ci_low": max(low, 0.0),
            f"{prefix}ci_high": min(high, 1.0)}  # fmt: skip


def paired_comparison(
    rows: list[dict[str, Any]],
    best: dict[str, Any],
    other: dict[str, Any],
    metric: str,
    keys: Sequence[str] = POINT_KEYS,
) -> dict[str, Any]:
    """`metric` of two points on the seeds both ran: n, mean difference (best - other) and the
    two-sided p-value of a paired t-test (NaN below 2 seeds or when every difference is equal)."""

    def values(point: dict) -> dict[int, float]:
        return {
            r["seed"]: r[metric]
            for r in rows
            if r["status"] == "FINISHED" and identity(r, keys) == identity(point, keys)
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


LABELS, FINETUNE = "classify.labels_per_class", "classify.finetune"
# method: (its test accuracy in a point's result, the classify.finetune of the points it comes
# from). The autoencoder's rows are the classifier's; a baseline counts once per seed.
BUDGET_METHODS = {
    "autoencoder, frozen": ("test_accuracy", False),
    "autoencoder, fine-tuned": ("test_accuracy", True),
    "from scratch": ("scratch_test_accuracy", True),
    "PCA + same head": ("pca_test_accuracy", False),
    "raw pixels, logistic regression": ("raw_test_accuracy", False),
}
AUTOENCODER_METHODS = ("autoencoder, frozen", "autoencoder, fine-tuned")


def budget_x(labels: int | float | None, per_class: float) -> float:
    """Where a labels_per_class value lies on the label-budget axis: N labels per class, a
    fraction of the training images per class, or all of them (null)."""
    if labels is None:
        return per_class
    return labels * per_class if isinstance(labels, float) else float(labels)


def label_budget(
    rows: list[dict[str, Any]], finetune: bool, settings: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Test accuracy per labels per class and method (BUDGET_METHODS) over the FINISHED seeds:
    n, seeds, mean and 95 % interval (clipped to [0, 1]).

    The autoencoder's two methods come from the points with their `classify.finetune` (a row
    without that key has `finetune`, the sweep's fixed value). Each baseline comes from one
    setting only, so that a seed counts once: from scratch from the fine-tuned points (there it
    trains as many epochs as the fine-tuned classifier: head and fine-tuning together), PCA +
    same head and raw pixels from the frozen ones (the raw-pixel baseline is the same in both);
    from the other points when the sweep ran only one setting. `settings`: other swept keys;
    one curve per their values. "all" (null) lies at the training images per class."""
    done = [r for r in rows if r["status"] == "FINISHED"]
    present = {r.get(FINETUNE, finetune) for r in done}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in done:
        for method, (_, source) in BUDGET_METHODS.items():
            baseline = method not in AUTOENCODER_METHODS
            if r.get(FINETUNE, finetune) == source or (baseline and source not in present):
                groups[(identity(r, settings), r.get(LABELS), method)].append(r)
    per_class = [r["train_images_per_class"] for r in done if "train_images_per_class" in r]
    if per_class:
        all_x = float(np.mean(per_class))
    else:  # results from before the count was recorded: a decade above the rest
        counts = [r[LABELS] for r in done if isinstance(r.get(LABELS), int)]
        all_x = 10.0 * max(counts, default=1)
    budget = []
    for (setting, labels, method), runs in groups.items():
        budget.append({
            "setting": " ".join(f"{k}={v}" for k, v in zip(settings, setting, strict=True)),
            "labels_per_class": "all" if labels is None else labels,
            "x": budget_x(labels, all_x),
            "method": method,
            "n": len(runs),
            "seeds": " ".join(str(s) for s in sorted(r["seed"] for r in runs)),
            **clipped("test_accuracy_", [r[BUDGET_METHODS[method][0]] for r in runs]),
        })  # fmt: skip
    order = list(BUDGET_METHODS)
    return sorted(budget, key=lambda b: (b["setting"], b["x"], order.index(b["method"])))
