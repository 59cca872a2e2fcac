"""A sweep's summary: its runs (summary.csv), its points over seeds with 95 % intervals, best
mean validation accuracy first (points.csv), a paired test of the best point against the
runner-up, and the label budget (label_budget.csv and its figure: each method against the same
network from scratch, paired over seeds), as CSV files and terminal tables.

A point is a setting of every key the sweep varies except `seed`; its seeds are repeats."""

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np  # pandas and scipy load on first use: src.train imports short_number

from src.files import atomic_path

log = logging.getLogger(__name__)
Row = dict[str, Any]

METRICS = ("val_accuracy", "test_accuracy")
POINT_KEYS = ("bottleneck", "dropout")  # a point's identity when a sweep varies nothing else
LABELS, FINETUNE = "classify.labels_per_class", "classify.finetune"
CI = ("mean", "ci_low", "ci_high")
COLUMNS = ["point", "bottleneck", "dropout", "seed", "status", "val_accuracy", "test_accuracy",
           "scratch_test_accuracy", "test_loss", "test_reconstruction_mse", "train_seconds",
           "run_id", "autoencoder_run_id", "error"]  # fmt: skip
POINT_COLUMNS = ["bottleneck", "dropout", "n", "seeds", *(f"{m}_{s}" for m in METRICS for s in CI)]
VS_SCRATCH = ("n", "difference", "p", "p_adjusted")  # paired over seeds; p_adjusted: over budgets
BUDGET_COLUMNS = [
    "setting",
    "labels_per_class",
    "x",
    "method",
    "n",
    "seeds",
    *(f"test_accuracy_{s}" for s in CI),
    *(f"vs_scratch_{c}" for c in VS_SCRATCH),
]
SCRATCH = "from scratch"
# The label budget's methods: (its test accuracy in a run's result, the classify.finetune of the
# points it comes from; a run without that key has the sweep's fixed value). The autoencoder's
# two methods come from the points with their finetune. Each baseline comes from one setting
# only, so that a seed counts once: from scratch from the fine-tuned points (there it trains as
# many epochs as the fine-tuned classifier: head and fine-tuning together), PCA + same head and
# raw pixels from the frozen ones (the raw-pixel baseline is the same in both); from the other
# points when the sweep ran only one setting.
BUDGET_METHODS = {
    "autoencoder, frozen": ("test_accuracy", False),
    "autoencoder, fine-tuned": ("test_accuracy", True),
    SCRATCH: ("scratch_test_accuracy", True),
    "PCA + same head": ("pca_test_accuracy", False),
    "raw pixels, logistic regression": ("raw_test_accuracy", False),
}
AUTOENCODER_METHODS = ("autoencoder, frozen", "autoencoder, fine-tuned")


def _t_interval(mean: Any, sem: Any, n: Any) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of Student's t 95 % intervals: NaN for one value, the mean for equal ones."""
    from scipy import stats

    with np.errstate(invalid="ignore"):  # one value: no degree of freedom, NaN
        low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=sem)
    return np.where(sem == 0, mean, low), np.where(sem == 0, mean, high)


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): Student's t 95 % interval of the mean; low = high = NaN for one value."""
    import pandas as pd

    v = pd.Series(values, dtype=float)
    low, high = _t_interval(v.mean(), v.sem(), len(v))
    return float(v.mean()), float(low), float(high)


def over_seeds(groups: list[tuple], seeds: list, values: dict[str, list]) -> dict[tuple, Row]:
    """Per group (first seen first): n, seeds, mean and 95 % interval in [0, 1] of each value."""
    import pandas as pd

    if not groups:
        return {}
    # pandas would read a null key as NaN and 1 beside 0.5 as 1.0: group by the keys' numbers
    ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    frame = pd.DataFrame({"group": [ids[g] for g in groups], "seed": seeds, **values})
    by = frame.groupby("group")
    table = by["seed"].agg(n="size", seeds=lambda s: " ".join(map(str, sorted(s))))
    moments = by[list(values)].agg(["mean", "sem", "count"])
    for m in values:
        mean = moments[(m, "mean")]
        low, high = _t_interval(mean, moments[(m, "sem")], moments[(m, "count")])
        table[f"{m}_mean"], table[f"{m}_ci_low"], table[f"{m}_ci_high"] = (
            mean, np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0))  # fmt: skip
    return dict(zip(ids, table.to_dict("records"), strict=True))


def identity(row: Row, keys: Sequence[str]) -> tuple:
    """A run's point: its values of `keys` (every swept key but seed)."""
    return tuple(row.get(k) for k in keys)


def point_keys(swept: Sequence[str]) -> list[str]:
    """A point's identity: bottleneck, dropout and every other swept key but seed."""
    return [*POINT_KEYS, *(k for k in swept if k not in (*POINT_KEYS, "seed"))]


def _sortable(value: Any) -> tuple:
    """A sort key for a config value of any type (null, numbers, strings) among its kind."""
    return (value is None, type(value).__name__, value if value is not None else 0)


def summarize(rows: list[Row], keys: Sequence[str] = POINT_KEYS) -> tuple[list[Row], Row | None]:
    """(points over FINISHED seeds, best mean val accuracy first; best vs runner-up or None)."""
    done = [r for r in rows if r["status"] == "FINISHED"]
    metrics = {m: [r[m] for r in done] for m in METRICS}
    per_point = over_seeds([identity(r, keys) for r in done], [r["seed"] for r in done], metrics)
    points = sorted(
        ({**dict(zip(keys, point, strict=True)), **s} for point, s in per_point.items()),
        key=lambda p: (-p["val_accuracy_mean"], *(_sortable(p[k]) for k in keys)),
    )
    if len(points) < 2:
        return points, None
    return points, paired(done, points[0], points[1], keys)


def paired_test(a: "Any", b: "Any") -> tuple[int, float, float]:
    """(n, mean of a - b, paired t-test p) over the seeds (index) both have; p is NaN below 2
    seeds or when every difference is equal (not defined)."""
    import pandas as pd
    from scipy import stats

    both = pd.concat({"a": a, "b": b}, axis=1).dropna()
    diff = both["a"] - both["b"]
    p_value = math.nan
    if len(both) >= 2 and diff.nunique() > 1:
        p_value = float(stats.ttest_rel(both["a"], both["b"]).pvalue)
    return len(both), float(diff.mean()) if len(both) else math.nan, p_value


def paired(done: list[Row], best: Row, other: Row, keys: Sequence[str]) -> Row:
    """Test accuracy of two points on the seeds both ran: n, mean of best - other, t-test p."""
    import pandas as pd

    metric = "test_accuracy"
    sides = {"best": identity(best, keys), "other": identity(other, keys)}
    runs = pd.DataFrame([{"side": side, "seed": r["seed"], metric: r[metric]}
                         for r in done for side, point in sides.items()
                         if identity(r, keys) == point])  # fmt: skip
    wide = runs.drop_duplicates(["side", "seed"], keep="last")  # a repeated seed: its last run
    wide = wide.pivot(index="seed", columns="side", values=metric)
    n, difference, p_value = paired_test(wide["best"], wide["other"])
    return {"metric": metric, "n": n, "difference": difference, "p_value": p_value}


def budget_x(labels: int | float | None, per_class: float) -> float:
    """Where labels_per_class lies on the budget axis: N, a fraction of `per_class`, or all."""
    if labels is None:
        return per_class
    return labels * per_class if isinstance(labels, float) else float(labels)


def _all_x(done: list[Row]) -> float:
    """Where "all" (null) lies: the training images per class, else a decade above the rest."""
    per_class = [r["train_images_per_class"] for r in done if "train_images_per_class" in r]
    if per_class:
        return float(np.mean(per_class))
    return 10.0 * max((r[LABELS] for r in done if isinstance(r.get(LABELS), int)), default=1)


def _by_method(done: list[Row], finetune: bool) -> list[tuple[Row, str]]:
    """(run, method) for each method a FINISHED run counts in: see BUDGET_METHODS' comment."""
    present = {r.get(FINETUNE, finetune) for r in done}
    return [(r, method) for r in done for method, (_, source) in BUDGET_METHODS.items()
            if r.get(FINETUNE, finetune) == source
            or (method not in AUTOENCODER_METHODS and source not in present)]  # fmt: skip


def label_budget(rows: list[Row], finetune: bool, settings: Sequence[str] = ()) -> list[Row]:
    """Test accuracy per labels per class, method and setting over FINISHED seeds, with CIs, and
    each method against the same network from scratch (the vs_scratch_ columns)."""
    done = [r for r in rows if r["status"] == "FINISHED"]
    runs = _by_method(done, finetune)  # `settings`: other swept keys, a curve per their values
    groups = [(identity(r, settings), r.get(LABELS), method) for r, method in runs]
    seeds = [r["seed"] for r, _ in runs]
    values = [r[BUDGET_METHODS[method][0]] for r, method in runs]
    per_group = over_seeds(groups, seeds, {"test_accuracy": values})
    all_x, order = _all_x(done), list(BUDGET_METHODS)
    budget = [{"setting": " ".join(f"{k}={v}" for k, v in zip(settings, setting, strict=True)),
               "labels_per_class": "all" if labels is None else labels,
               "x": budget_x(labels, all_x), "method": method, **s,
               **vs_scratch(groups, seeds, values, (setting, labels, method))}
              for (setting, labels, method), s in per_group.items()]  # fmt: skip
    budget = sorted(budget, key=lambda b: (b["setting"], b["x"], order.index(b["method"])))
    return adjust_over_budgets(budget)


def vs_scratch(groups: list[tuple], seeds: list, values: list, group: tuple) -> Row:
    """A method's test accuracy at one budget against from scratch's, paired over seeds."""
    import pandas as pd

    (setting, labels, method), empty = group, dict.fromkeys(VS_SCRATCH, math.nan)
    if method == SCRATCH:
        return {f"vs_scratch_{c}": v for c, v in empty.items()}
    frame = pd.DataFrame({"group": groups, "seed": seeds, "value": values})

    def side(g: tuple) -> "pd.Series":
        return frame[frame["group"] == g].drop_duplicates("seed", keep="last").set_index(
            "seed")["value"]  # fmt: skip

    n, difference, p = paired_test(side(group), side((setting, labels, SCRATCH)))
    return {"vs_scratch_n": n, "vs_scratch_difference": difference, "vs_scratch_p": p,
            "vs_scratch_p_adjusted": math.nan}  # fmt: skip


def adjust_over_budgets(budget: list[Row]) -> list[Row]:
    """vs_scratch_p_adjusted: Benjamini-Hochberg over the budgets of each setting and method
    (scipy.stats.false_discovery_control), so that a curve's many tests are read together."""
    import pandas as pd
    from scipy import stats

    frame = pd.DataFrame(budget)
    tested = frame[frame["vs_scratch_p"].notna()]
    for _, family in tested.groupby(["setting", "method"]).groups.items():
        adjusted = stats.false_discovery_control(frame.loc[family, "vs_scratch_p"])
        for i, p in zip(family, adjusted, strict=True):
            budget[i]["vs_scratch_p_adjusted"] = float(p)
    return budget


def with_keys(columns: list[str], keys: Sequence[str]) -> list[str]:
    """`columns` with the point's keys other than bottleneck and dropout after "dropout"."""
    extra = [k for k in keys if k not in columns]
    i = columns.index("dropout") + 1
    return [*columns[:i], *extra, *columns[i:]]


def write_csv(rows: list[Row], path: Path, columns: list[str] = COLUMNS) -> None:
    """`columns` of `rows` as csv.DictWriter writes them (null: empty, NaN: nan), atomically."""
    import pandas as pd

    cells = [["" if r.get(c) is None else r[c] for c in columns] for r in rows]
    frame = pd.DataFrame(cells, columns=columns, dtype=object)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, na_rep="nan", lineterminator="\r\n")


def short_number(value: str) -> str:
    """A float with many digits (a search's sample) to 3 significant ones; the rest as is."""
    try:
        return f"{float(value):.3g}" if len(value) > 6 else value
    except ValueError:
        return value


def as_text(value: Any) -> str:
    """A config value as it is written on the command line: null, true, 0.5."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return short_number(str(value))


def _header(keys: Sequence[str]) -> tuple[list[str], str]:
    """(the point's keys but bottleneck and dropout, the table header's point columns)."""
    extra = [k for k in keys if k not in POINT_KEYS]
    return extra, f"{'bottleneck':>10} {'dropout':>7}{''.join(f' {k}' for k in extra)}"


def _point_cells(row: Row, extra: list[str]) -> str:
    """A row's point columns: bottleneck, dropout and each other key as wide as its name."""
    cells = "".join(f" {as_text(row.get(k)):>{len(k)}}" for k in extra)
    return f"{row['bottleneck']:>10} {short_number(str(row['dropout'])):>7}{cells}"


def _run_line(r: Row, extra: list[str]) -> str:
    """A run in the runs table; one that did not finish with its status and error."""
    if r["status"] != "FINISHED":
        return f"{r.get('point')}: {r['status']} ({r.get('error')})"
    return (
        f"{_point_cells(r, extra)} {r['seed']:>5} {r['val_accuracy']:>12.4f} "
        f"{r['test_accuracy']:>13.4f} {r['test_loss']:>9.4f} "
        f"{r['test_reconstruction_mse']:>23.5f} {r['train_seconds']:>13.1f}  FINISHED"
    )


def runs_table(rows: list[Row], keys: Sequence[str] = POINT_KEYS) -> str:
    """A short fixed-width table of the runs for the terminal."""
    extra, header = _header(keys)
    return "\n".join([f"{header} {'seed':>5} val_accuracy test_accuracy test_loss "
                      "test_reconstruction_mse train_seconds  status",
                      *(_run_line(r, extra) for r in rows)])  # fmt: skip


def _mean_ci(row: Row, m: str) -> str:
    """0.9759 [0.9412, 1.0000]; the mean alone, padded, without an interval."""
    if math.isnan(row[f"{m}_ci_low"]):
        return f"{row[f'{m}_mean']:.4f}{'':>18}"
    return f"{row[f'{m}_mean']:.4f} [{row[f'{m}_ci_low']:.4f}, {row[f'{m}_ci_high']:.4f}]"


def points_table(
    points: list[Row], comparison: Row | None, keys: Sequence[str] = POINT_KEYS
) -> str:
    """Points over seeds with 95 % CIs, best (mean validation accuracy) marked; comparison."""
    extra, header = _header(keys)
    lines = [f"  {header} {'n':>3}  {'val_accuracy [95 % CI]':<33} test_accuracy [95 % CI]"]
    lines += [f"{'*' if i == 0 else ' '} {_point_cells(p, extra)} {p['n']:>3}  "
              f"{_mean_ci(p, 'val_accuracy'):<33} {_mean_ci(p, 'test_accuracy')}"
              for i, p in enumerate(points)]  # fmt: skip
    lines.append("* best point: highest mean validation accuracy (test accuracy is not used)")
    lines.append(comparison_line(points, comparison, keys))
    return "\n".join(lines)


def point_label(point: Row, keys: Sequence[str] = POINT_KEYS) -> str:
    """bottleneck=32, dropout=0.2, classify.labels_per_class=10: a point in words."""
    return ", ".join(f"{k}={as_text(point[k])}" for k in keys)


def comparison_line(
    points: list[Row], comparison: Row | None, keys: Sequence[str] = POINT_KEYS
) -> str:
    """The best point against the runner-up in one line, or why there is no comparison."""
    if comparison is None:
        return "one point: nothing to compare"
    if comparison["n"] < 2:
        return ("one seed per point: no confidence interval or paired test possible; repeat "
                "over seeds (e.g. seed=0,1,2) to tell points apart")  # fmt: skip
    p = comparison["p_value"]
    test = "p not defined (equal differences)" if math.isnan(p) else f"p = {p:.3g}"
    return (
        f"best ({point_label(points[0], keys)}) vs runner-up ({point_label(points[1], keys)}) on "
        f"{comparison['n']} paired seeds: test accuracy {comparison['difference']:+.4f}, "
        f"paired t-test {test}"
    )


def _vs_scratch_cell(b: Row) -> str:
    """+0.0280 (p 0.009, adj. 0.027): a method against from scratch; blank where untested."""
    if math.isnan(b["vs_scratch_difference"]):
        return ""
    p, adjusted = b["vs_scratch_p"], b["vs_scratch_p_adjusted"]
    test = "p n/a" if math.isnan(p) else f"p {p:.2g}, adj. {adjusted:.2g}"
    return f"{b['vs_scratch_difference']:+.4f} ({test})"


def budget_table(budget: list[Row]) -> str:
    """The label budget for the terminal: one line per labels per class and method, with its
    paired difference to from scratch."""
    lines = [
        f"{'labels/class':>12}  {'method':<32} {'n':>3}  {'test_accuracy [95 % CI]':<33} "
        "vs from scratch (paired t-test; adj.: Benjamini-Hochberg over budgets)"
    ]
    lines += [f"{b['labels_per_class']!s:>12}  {b['method']:<32} {b['n']:>3}  "
              f"{_mean_ci(b, 'test_accuracy'):<33} {_vs_scratch_cell(b)}".rstrip()
              + (f"  ({b['setting']})" if b["setting"] else "")
              for b in budget]  # fmt: skip
    return "\n".join(lines)


def write_label_budget(
    rows: list[Row], swept: Sequence[str], finetune: bool, folder: Path
) -> list[Row]:
    """label_budget.csv and .png in `folder` (a curve per other swept keys); the rows."""
    from src import plots

    settings = [k for k in swept if k not in (LABELS, FINETUNE, "seed")]
    budget = label_budget(rows, finetune, settings)
    if budget:
        write_csv(budget, folder / "label_budget.csv", BUDGET_COLUMNS)
        plots.label_budget(budget, folder / "label_budget.png")
        log.info("label budget (%s):\n%s", folder / "label_budget.csv", budget_table(budget))
    return budget
