"""A sweep's summary (src/sweeps/summary.py): points over seeds with t intervals, the paired
comparison of the best point with the runner-up, the label budget, the CSV files and the
terminal tables."""

import csv

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from src.sweeps import summary


def _row(bottleneck, dropout, seed, val, test, **keys):
    return {"status": "FINISHED", "bottleneck": bottleneck, "dropout": dropout, "seed": seed,
            "val_accuracy": val, "test_accuracy": test, **keys}  # fmt: skip


def _t_interval(values):
    """Student's t 95 % interval of the mean, from scipy directly."""
    return scipy_stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values)
    )


def test_points_over_seeds_rank_on_validation_with_t_intervals():
    rows = [
        _row(8, 0.0, s, v, t) for s, v, t in [(0, 0.90, 0.99), (1, 0.91, 0.98), (2, 0.92, 0.97)]
    ]
    rows += [
        _row(32, 0.5, s, v, t) for s, v, t in [(0, 0.95, 0.90), (1, 0.96, 0.91), (2, 0.94, 0.93)]
    ]
    rows.append({"status": "FAILED", "bottleneck": 32, "dropout": 0.5, "seed": 3})
    points, comparison = summary.summarize(rows)
    best, other = points
    assert (best["bottleneck"], best["n"], best["seeds"]) == (32, 3, "0 1 2")  # not test acc
    half = scipy_stats.t.ppf(0.975, 2) * np.std([0.95, 0.96, 0.94], ddof=1) / np.sqrt(3)
    assert best["val_accuracy_ci_high"] - best["val_accuracy_mean"] == pytest.approx(half)
    low, high = _t_interval([0.90, 0.91, 0.92])
    assert (other["val_accuracy_ci_low"], other["val_accuracy_ci_high"]) == pytest.approx(
        (low, high)
    )
    expected = scipy_stats.ttest_rel([0.90, 0.91, 0.93], [0.99, 0.98, 0.97]).pvalue
    assert comparison == pytest.approx(
        {"metric": "test_accuracy", "n": 3, "difference": -0.0667, "p_value": expected}, abs=1e-4
    )
    text = summary.points_table(points, comparison)
    assert "on 3 paired seeds: test accuracy -0.0667, paired t-test p = " in text
    assert text.splitlines()[1].startswith("*         32")
    mean, low, high = summary.interval([0.9])
    assert mean == 0.9 and np.isnan(low) and np.isnan(high)
    values = [0.99, 1.0, 0.97]
    near_one, _ = summary.summarize([_row(8, 0.0, s, v, v) for s, v in enumerate(values)])
    assert near_one[0]["val_accuracy_ci_high"] == 1.0  # an accuracy's interval stops at 1
    assert summary.interval(values)[2] == pytest.approx(_t_interval(values)[1])
    assert summary.interval(values)[2] > 1.0  # a plain interval is not clipped


def test_one_seed_says_no_interval_is_possible():
    points, comparison = summary.summarize(
        [_row(8, 0.0, 0, 0.9, 0.9), _row(16, 0.0, 0, 0.8, 0.95)]
    )
    assert points[0]["bottleneck"] == 8 and np.isnan(points[0]["val_accuracy_ci_low"])
    assert np.isnan(points[0]["test_accuracy_ci_high"]) and points[0]["n"] == 1
    assert comparison["n"] == 1 and np.isnan(comparison["p_value"])
    assert "one seed per point: no confidence interval" in summary.points_table(points, comparison)
    assert summary.summarize([]) == ([], None)
    assert summary.summarize([{"status": "FAILED", "seed": 0}]) == ([], None)


def test_equal_values_give_a_zero_width_interval_and_no_p_value():
    rows = [_row(b, 0.0, s, v, v) for b, v in [(8, 0.5), (4, 0.25)] for s in (0, 1)]
    points, comparison = summary.summarize(rows)
    assert points[0]["val_accuracy_ci_low"] == points[0]["val_accuracy_ci_high"] == 0.5
    assert comparison["difference"] == 0.25 and np.isnan(comparison["p_value"])
    assert "paired t-test p not defined (equal differences)" in summary.comparison_line(
        points, comparison, summary.POINT_KEYS
    )


def test_the_paired_test_takes_the_seeds_both_points_ran():
    best = [(0, 0.95, 0.90), (1, 0.96, 0.92), (2, 0.97, 0.95), (3, 0.98, 0.99)]
    rows = [_row(32, 0.0, s, v, t) for s, v, t in best]
    other = [(0, 0.2), (0, 0.80), (1, 0.85), (2, 0.81), (5, 0.1)]  # seed 0 twice: the last
    rows += [_row(8, 0.0, s, 0.5, t) for s, t in other]
    points, comparison = summary.summarize(rows)
    assert [p["seeds"] for p in points] == ["0 1 2 3", "0 0 1 2 5"]
    shared_best, shared_other = [0.90, 0.92, 0.95], [0.80, 0.85, 0.81]
    expected = scipy_stats.ttest_rel(shared_best, shared_other).pvalue
    assert comparison["n"] == 3 and comparison["p_value"] == pytest.approx(expected)
    assert comparison["difference"] == pytest.approx(np.mean(shared_best) - np.mean(shared_other))


def test_ties_sort_by_the_key_values_numbers_then_strings_then_null():
    keys = summary.point_keys(["bottleneck", "seed", "model.kind"])
    assert keys == ["bottleneck", "dropout", "model.kind"]
    kinds = ["b", None, 10, "a", 2, 0.5]
    rows = [_row(8, 0.0, 0, 0.7, 0.7, **{"model.kind": k}) for k in kinds]
    rows.append(_row(8, 0.0, 0, 0.9, 0.1, **{"model.kind": None}))  # best on validation
    points, _ = summary.summarize(rows, keys)
    assert [p["model.kind"] for p in points] == [None, 0.5, 2, 10, "a", "b"]
    assert points[0]["n"] == 2 and points[-1]["n"] == 1


def test_points_keep_label_budgets_and_finetune_apart():
    rows = [_budget_row(labels, ft, s, v + 0.01 * s, 0, 0, 0)
            for labels, ft, v in [(1, False, 0.3), (1, True, 0.4), (None, False, 0.9),
                                  (None, True, 0.95)] for s in (0, 1)]  # fmt: skip
    keys = summary.point_keys(["classify.labels_per_class", "classify.finetune", "seed"])
    assert keys == ["bottleneck", "dropout", "classify.labels_per_class", "classify.finetune"]
    points, comparison = summary.summarize(rows, keys)
    assert len(points) == 4 and all(p["n"] == 2 for p in points)
    best = points[0]
    assert (best["classify.labels_per_class"], best["classify.finetune"]) == (None, True)
    assert comparison["n"] == 2 and comparison["difference"] == pytest.approx(0.05)
    text = summary.points_table(points, comparison, keys)
    assert "classify.labels_per_class=null, classify.finetune=true) vs runner-up" in text
    assert len(summary.summarize(rows)[0]) == 1  # bottleneck x dropout alone merges them


def test_points_table_and_comparison_line_as_docs_sweeps_md_shows_them():
    points = [
        _point(32, 0.0, (0.9759, 0.9412, 1.0), (0.9731, 0.9470, 0.9993)),
        _point(32, 0.5, (0.9741, 0.9256, 1.0), (0.9713, 0.9434, 0.9992)),
        _point(8, 0.0, (0.9574, 0.9000, 1.0), (0.9602, 0.9380, 0.9824)),
        _point(8, 0.5, (0.9426, 0.9028, 0.9824), (0.9491, 0.9269, 0.9713)),
    ]
    comparison = {"metric": "test_accuracy", "n": 3, "difference": 0.0019, "p_value": 0.1842}
    assert summary.points_table(points, comparison, ["bottleneck", "dropout"]) == (
        "  bottleneck dropout   n  val_accuracy [95 % CI]            test_accuracy [95 % CI]\n"
        "*         32     0.0   3  0.9759 [0.9412, 1.0000]           0.9731 [0.9470, 0.9993]\n"
        "          32     0.5   3  0.9741 [0.9256, 1.0000]           0.9713 [0.9434, 0.9992]\n"
        "           8     0.0   3  0.9574 [0.9000, 1.0000]           0.9602 [0.9380, 0.9824]\n"
        "           8     0.5   3  0.9426 [0.9028, 0.9824]           0.9491 [0.9269, 0.9713]\n"
        "* best point: highest mean validation accuracy (test accuracy is not used)\n"
        "best (bottleneck=32, dropout=0.0) vs runner-up (bottleneck=32, dropout=0.5) on 3 paired "
        "seeds: test accuracy +0.0019, paired t-test p = 0.184"
    )
    assert summary.comparison_line(points[:1], None, ["bottleneck"]) == (
        "one point: nothing to compare"
    )


def test_runs_table_shows_finished_runs_and_why_the_others_did_not():
    done = _row(16, 0.123456789, 2, 0.91234, 0.9, test_loss=0.25, train_seconds=12.34,
                test_reconstruction_mse=0.012345, **{"classify.finetune": True})  # fmt: skip
    failed = {"point": "bottleneck=4", "status": "FAILED", "error": "no result"}
    keys = ["bottleneck", "dropout", "classify.finetune"]
    assert summary.runs_table([done, failed], keys).splitlines() == [
        "bottleneck dropout classify.finetune  seed val_accuracy test_accuracy test_loss "
        "test_reconstruction_mse train_seconds"
        "  status",
        "        16   0.123              true     2       0.9123        0.9000    0.2500"
        "                 0.01235          12.3  FINISHED",
        "bottleneck=4: FAILED (no result)",
    ]


def test_short_numbers_and_config_values_as_text():
    assert summary.short_number("0.123456789") == "0.123"
    assert summary.short_number("0.5") == "0.5" and summary.short_number("abcdefgh") == "abcdefgh"
    assert [summary.as_text(v) for v in (None, True, 0.5, 1e-05, "a")] == [
        "null", "true", "0.5", "1e-05", "a"
    ]  # fmt: skip
    assert summary.point_label({"bottleneck": 4, "x": None}, ["bottleneck", "x"]) == (
        "bottleneck=4, x=null"
    )


def _point(bottleneck, dropout, val, test):
    ci = {f"{m}_{s}": v for m, values in [("val_accuracy", val), ("test_accuracy", test)]
          for s, v in zip(summary.CI, values, strict=True)}  # fmt: skip
    return {"bottleneck": bottleneck, "dropout": dropout, "n": 3, "seeds": "0 1 2", **ci}


def _budget_row(labels, finetune, seed, ae, scratch, pca, raw):
    return {"status": "FINISHED", "bottleneck": 32, "dropout": 0.2, "seed": seed,
            "classify.labels_per_class": labels, "classify.finetune": finetune,
            "val_accuracy": ae, "test_accuracy": ae, "scratch_test_accuracy": scratch,
            "pca_test_accuracy": pca, "raw_test_accuracy": raw,
            "train_images_per_class": 5400.0}  # fmt: skip


def test_label_budget_csv_and_figure_take_each_method_from_its_points(tmp_path):
    from matplotlib.image import imread

    rows = []
    for labels, base in [(1, 0.3), (10, 0.6), (None, 0.9)]:
        for seed in (0, 1, 2):
            d = 0.01 * seed
            # frozen points: their scratch (trained for the head's epochs only) is not used
            rows.append(_budget_row(labels, False, seed, base + d, 0.0, base - 0.1 + d, 0.5 + d))
            rows.append(_budget_row(labels, True, seed, base + 0.05 + d, base + 0.02 + 2 * d,
                                    0.0, 0.5 + d))  # fmt: skip
    rows.append({"status": "FAILED", "seed": 3, "classify.labels_per_class": 1})
    swept = ["classify.labels_per_class", "classify.finetune", "seed"]
    budget = summary.write_label_budget(rows, swept, False, tmp_path)

    table = list(csv.DictReader((tmp_path / "label_budget.csv").open()))
    assert len(table) == len(budget) == 3 * 5  # 3 budgets x 5 methods
    cell = {(r["labels_per_class"], r["method"]): r for r in table}
    assert {r["x"] for r in table} == {"1.0", "10.0", "5400.0"}  # "all" at the images per class
    scratch = cell[("10", "from scratch")]  # from the fine-tuned points only, 3 seeds
    low, high = _t_interval([0.62, 0.64, 0.66])
    assert (scratch["n"], scratch["seeds"]) == ("3", "0 1 2")
    assert float(scratch["test_accuracy_mean"]) == pytest.approx(0.64)
    assert float(scratch["test_accuracy_ci_low"]) == pytest.approx(low)
    assert float(scratch["test_accuracy_ci_high"]) == pytest.approx(high)
    assert float(cell[("all", "autoencoder, frozen")]["test_accuracy_mean"]) == pytest.approx(0.91)
    assert float(cell[("all", "autoencoder, fine-tuned")]["test_accuracy_mean"]) == (
        pytest.approx(0.96)
    )
    assert float(cell[("1", "PCA + same head")]["test_accuracy_mean"]) == pytest.approx(0.21)
    raw = cell[("1", "raw pixels, logistic regression")]  # each seed once, not twice
    assert raw["n"] == "3" and float(raw["test_accuracy_mean"]) == pytest.approx(0.51)
    assert [(b["labels_per_class"], b["method"]) for b in budget[:2]] == [
        (1, "autoencoder, frozen"), (1, "autoencoder, fine-tuned")
    ]  # fmt: skip
    assert imread(tmp_path / "label_budget.png").shape[2] in (3, 4)

    # a sweep of the frozen encoder only: every baseline from its points
    frozen = [{k: v for k, v in r.items() if k != "classify.finetune"} for r in rows
              if r.get("classify.finetune") is False]  # fmt: skip
    only = summary.label_budget(frozen, False)
    assert {b["method"] for b in only} >= {"from scratch", "autoencoder, frozen"}
    assert "autoencoder, fine-tuned" not in {b["method"] for b in only}
    scratch = [b["test_accuracy_mean"] for b in only if b["method"] == "from scratch"]
    assert scratch == [0.0, 0.0, 0.0]  # the frozen points' own from-scratch runs


def test_label_budget_curves_per_setting_and_all_without_an_image_count():
    rows = [{**_budget_row(labels, False, s, 0.5, 0, 0, 0), "model.kind": kind}
            for labels in (1, 100, None) for kind in ("b", "a") for s in (0, 1)]  # fmt: skip
    for r in rows:
        del r["train_images_per_class"]  # results from before the count was recorded
    budget = summary.label_budget(rows, False, ["model.kind"])
    assert {b["x"] for b in budget if b["labels_per_class"] == "all"} == {1000.0}
    assert [b["setting"] for b in budget][::12] == ["model.kind=a", "model.kind=b"]
    assert "  (model.kind=a)" in summary.budget_table(budget).splitlines()[1]


def test_csvs_have_their_columns_and_read_back_with_pandas(tmp_path):
    keys = summary.point_keys(["bottleneck", "classify.labels_per_class", "seed"])
    rows = [_row(8, 0.0, s, v, v, **{"classify.labels_per_class": labels, "point": f"p{s}"})
            for labels in (None, 2) for s, v in [(0, 0.8), (1, 0.9)]]  # fmt: skip
    rows.append({"point": "p9", "status": "FAILED", "bottleneck": 8, "dropout": 0.0, "seed": 9,
                 "error": 'bad value: "x", y'})  # fmt: skip
    rows.append(_row(4, 0.5, 0, 0.7, 0.6, **{"classify.labels_per_class": 2}))  # one seed
    points, _ = summary.summarize(rows, keys)
    summary.write_csv(rows, tmp_path / "summary.csv", summary.with_keys(summary.COLUMNS, keys))
    columns = summary.with_keys(summary.POINT_COLUMNS, keys)
    summary.write_csv(points, tmp_path / "points.csv", columns)

    runs = pd.read_csv(tmp_path / "summary.csv")
    assert list(runs.columns) == [
        "point", "bottleneck", "dropout", "classify.labels_per_class", "seed", "status",
        "val_accuracy", "test_accuracy", "scratch_test_accuracy", "test_loss",
        "test_reconstruction_mse", "train_seconds", "run_id", "autoencoder_run_id", "error",
    ]  # fmt: skip
    assert list(runs["seed"]) == [0, 1, 0, 1, 9, 0]
    assert runs["error"].iloc[4] == 'bad value: "x", y' and runs["error"].iloc[:4].isna().all()
    assert runs["status"].tolist().count("FINISHED") == 5 and runs["run_id"].isna().all()

    read = pd.read_csv(tmp_path / "points.csv")
    assert list(read.columns) == columns == [
        "bottleneck", "dropout", "classify.labels_per_class", "n", "seeds", "val_accuracy_mean",
        "val_accuracy_ci_low", "val_accuracy_ci_high", "test_accuracy_mean",
        "test_accuracy_ci_low", "test_accuracy_ci_high",
    ]  # fmt: skip
    assert len(read) == 3 and list(read["n"]) == [2, 2, 1]
    pd.testing.assert_frame_equal(read, pd.DataFrame(points, columns=columns).astype(read.dtypes))
    low, high = _t_interval([0.8, 0.9])
    assert read["val_accuracy_ci_low"].iloc[0] == pytest.approx(low)
    assert high > 1.0 and read["val_accuracy_ci_high"].iloc[0] == 1.0  # clipped at 1
    assert read["val_accuracy_ci_low"].isna().tolist() == [False, False, True]  # one seed
    assert (tmp_path / "points.csv").read_bytes().count(b"\r\n") == 4  # as csv's writer
    text = list(csv.DictReader((tmp_path / "points.csv").open()))
    assert [p["classify.labels_per_class"] for p in text] == ["2", "", "2"]  # null: empty, last
    assert (text[2]["val_accuracy_ci_low"], text[2]["seeds"]) == ("nan", "0")
    assert [p["seeds"] for p in text[:2]] == ["0 1", "0 1"]


def test_label_budget_tests_each_method_against_scratch_paired_and_adjusted_over_budgets(
    tmp_path,
):
    rng = np.random.default_rng(0)
    rows = []
    for labels in (1, 10, None):
        for seed in (0, 1, 2, 3):
            ae, scratch, pca, raw = rng.uniform(0.5, 0.9, 4)
            rows.append(_budget_row(labels, True, seed, ae, scratch, pca, raw))
    rows = [r for r in rows if not (r["classify.labels_per_class"] == 10 and r["seed"] == 3)]
    budget = summary.write_label_budget(
        rows, ["classify.labels_per_class", "seed"], True, tmp_path
    )
    method, p_values = "autoencoder, fine-tuned", []
    for labels in (1, 10, None):
        mine = [r for r in rows if r["classify.labels_per_class"] == labels]
        ae = [r["test_accuracy"] for r in mine]
        scratch = [r["scratch_test_accuracy"] for r in mine]
        [row] = [b for b in budget if b["method"] == method
                 and b["labels_per_class"] == ("all" if labels is None else labels)]  # fmt: skip
        assert row["vs_scratch_n"] == len(mine)  # 4, 3 (seed 3 missing at 10), 4
        assert row["vs_scratch_difference"] == pytest.approx(np.mean(ae) - np.mean(scratch))
        assert row["vs_scratch_p"] == pytest.approx(scipy_stats.ttest_rel(ae, scratch).pvalue)
        p_values.append(row["vs_scratch_p"])
    adjusted = [b["vs_scratch_p_adjusted"] for b in budget if b["method"] == method]
    assert adjusted == pytest.approx(list(scipy_stats.false_discovery_control(p_values)))
    assert all(np.isnan(b["vs_scratch_p"]) for b in budget if b["method"] == "from scratch")
    table = list(csv.DictReader((tmp_path / "label_budget.csv").open()))
    assert [float(r["vs_scratch_p"]) for r in table if r["method"] == method] == pytest.approx(
        p_values
    )
    assert "adj." in summary.budget_table(budget)
