"""Published numbers (benchmarks/publish.py): every block in README.md, docs/ and
benchmarks/README.md is what its results file renders, and a number edited by hand is caught."""

import json
import shutil

import pytest

from benchmarks import publish
from tests.conftest import ROOT


def _copy(tmp_path):
    """README.md, docs/, benchmarks/README.md and every results file behind them."""
    for name in ["README.md", "benchmarks/README.md", "reports/metrics.json"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copytree(ROOT / "benchmarks/results", tmp_path / "benchmarks/results")
    return tmp_path


def test_published_blocks_match_their_results_files():
    assert publish.publish(check=True) == []
    readme = (ROOT / "README.md").read_text()
    assert all(f"<!-- publish:{name} -->" in readme for name in ("answer-table", "dvc-default"))


def test_a_number_edited_by_hand_fails_the_check_and_publishing_restores_it(tmp_path):
    root = _copy(tmp_path)
    readme = root / "README.md"
    original = readme.read_text()
    start = original.index("<!-- publish:answer-table -->")
    row = original.index("| 32 |", start)
    edited = original[:row] + original[row:].replace("0.", "0.9", 1)  # one digit more
    readme.write_text(edited)
    assert publish.publish(root, check=True) == ["README.md: publish:answer-table"]
    assert readme.read_text() == edited  # --check writes nothing
    assert publish.publish(root) == ["README.md: publish:answer-table"]
    assert readme.read_text() == original and publish.publish(root, check=True) == []


def test_results_that_no_longer_support_the_prose_stop_publishing(tmp_path):
    root = _copy(tmp_path)
    path = root / "benchmarks/results/digits_answer.json"
    results = json.loads(path.read_text())
    point = results["points"][0]
    point["scratch_test_accuracy"] = point["test_accuracy"] - 0.1  # the autoencoder now wins
    path.write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="from scratch beats the frozen encoder"):
        publish.publish(root, check=True)


def test_an_unknown_block_or_a_missing_results_file_is_named(tmp_path):
    root = _copy(tmp_path)
    (root / "docs/x.md").write_text("<!-- publish:nope -->\n<!-- /publish:nope -->\n")
    with pytest.raises(SystemExit, match="unknown block publish:nope; known: answer-intro"):
        publish.publish(root, check=True)
    (root / "docs/x.md").unlink()
    (root / "reports/metrics.json").unlink()
    with pytest.raises(SystemExit, match="reports/metrics.json not found: block publish:dvc"):
        publish.publish(root, check=True)


SPEED_BLOCKS = ["head-epochs", "overhead", "sweep-against", "sweep-shared", "throughput",
                "tracking", "log-model", "pipeline-tax", "startup", "evaluation-raw",
                "evaluation-tsne"]  # fmt: skip


def test_every_speed_table_of_benchmarks_readme_is_a_published_block():
    text = (ROOT / "benchmarks/README.md").read_text()
    assert all(f"<!-- publish:{name} -->" in text for name in SPEED_BLOCKS)
    assert set(SPEED_BLOCKS) <= set(publish.BLOCKS)


def test_a_speed_number_edited_by_hand_fails_the_check(tmp_path):
    root = _copy(tmp_path)
    page = root / "benchmarks/README.md"
    original = page.read_text()
    start = original.index("<!-- publish:startup -->")
    row = original.index("| python -m src.train --help | ", start)
    cut = row + len("| python -m src.train --help | ")
    page.write_text(original[:cut] + "9" + original[cut:])  # one digit more
    assert publish.publish(root, check=True) == ["benchmarks/README.md: publish:startup"]
    assert publish.publish(root) == ["benchmarks/README.md: publish:startup"]
    assert page.read_text() == original


def test_met_and_missed_follow_the_numbers_not_the_text(tmp_path):
    root = _copy(tmp_path)
    path = root / "benchmarks/results/startup.json"
    results = json.loads(path.read_text())
    results["commands"]["python -m src.train --help"]["median"] = 9.0  # over its 1.5 s target
    results["commands"]["python -m src.train --help"]["met"] = True  # a stale verdict is ignored
    path.write_text(json.dumps(results))
    assert publish.publish(root) == ["benchmarks/README.md: publish:startup"]
    text = (root / "benchmarks/README.md").read_text()
    assert "| python -m src.train --help | 9.00 | " in text
    row = text[text.index("| python -m src.train --help | 9.00 | ") :].splitlines()[0]
    assert "| missed |" in row


def test_a_number_of_the_mnist_table_edited_by_hand_fails_the_check(tmp_path):
    root = _copy(tmp_path)
    page = root / "docs/mnist.md"
    original = page.read_text()
    start = original.index("<!-- publish:mnist-table -->")
    cell = original.index("| **0.", start) + len("| **0.")
    page.write_text(original[:cell] + "1" + original[cell:])  # one digit more
    assert publish.publish(root, check=True) == ["docs/mnist.md: publish:mnist-table"]
    assert publish.publish(root) == ["docs/mnist.md: publish:mnist-table"]
    assert page.read_text() == original


def test_the_listing_names_every_block_its_results_file_and_command():
    listing = publish.listing()
    for path in [ROOT / "README.md", ROOT / "benchmarks/README.md", *ROOT.glob("docs/*.md")]:
        for m in publish.BLOCK.finditer(path.read_text()):
            row = next(r for r in listing.splitlines() if r.startswith(f"| {m.group(2)} | "))
            source = publish.BLOCKS[m.group(2)][0]
            assert f"| {source} | `" in row and (ROOT / source).is_file()


def test_the_ladders_rows_join_the_label_budget_and_publish_where_it_ran(tmp_path):
    from benchmarks import label_budget

    root = _copy(tmp_path)
    path = root / "benchmarks/results/mnist_label_budget.json"
    results = json.loads(path.read_text())
    frozen = [r for r in results["rows"] if r["method"] == "autoencoder, frozen"]
    ladder_rows = [{**r, "vs_scratch_difference": 0.2}
                   for r in frozen if r["labels_per_class"] in (10, 100)]  # fmt: skip
    ladder = {**{k: results[k] for k in ("command", "commit", "date", "machine")},
              "load_at_start": "1/1/1", "sweep": "python -m src.train ...", "seconds": 600,
              "epochs": 5}  # fmt: skip
    merged = label_budget.with_ladder(results, ladder_rows, ladder, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0
    assert [r["labels_per_class"] for r in merged["rows"] if r["method"] == label_budget.LADDER] \
        == [10, 100]  # fmt: skip
    path.write_text(json.dumps(merged))
    stale = publish.publish(root)
    assert "docs/mnist.md: publish:budget-table" in stale
    table = publish.budget_table(merged)
    row_1 = next(line for line in table.splitlines() if line.startswith("| 1 |"))
    assert row_1.endswith("| – |")  # the Ladder did not run with 1 label per class
    answer = " ".join(publish.budget_answer(merged).split())
    assert f"the Ladder network (joint, {ladder_rows[0]['n']} seeds) +0.200" in answer
    tuned = next(r for r in merged["rows"] if r["labels_per_class"] == 100
                 and r["method"] == "autoencoder, fine-tuned")  # fmt: skip
    assert f"against fine-tuned's {tuned['test_accuracy_mean']:.3f} [" in answer
    again = label_budget.with_ladder(merged, ladder_rows, ladder, tmp_path / "figure.png")
    assert len(again["rows"]) == len(merged["rows"])  # a rerun replaces, not adds


def _few_label_results(seeds: list[int]) -> dict:
    """A few-label results file as benchmarks/few_labels.py writes it, with made-up rows: each
    recipe of the chain one point better than the one before, on every seed."""
    from benchmarks import few_labels

    recipes = ["spread", "+ finetune", "+ finetune + predictions x1",
               "+ finetune + predictions x2", "+ finetune + spreading x1",
               "+ finetune + spreading x2", "+ finetune + spreading x3"]  # fmt: skip
    rows = [{"recipe": name, "seed": seed, "small_val": 0.9 + 0.01 * i + 0.001 * seed,
             "test": 0.91 + 0.01 * i + 0.001 * seed, "n_labels": 50000, "pseudo_right": 0.95,
             "seconds": 100.0, "cpu_seconds": 180.0, "commit": f"c{seed}",
             "date": f"2026-12-0{seed} 10:00 UTC"}
            for seed in seeds for i, name in enumerate(recipes)]  # fmt: skip
    return {"command": "python -m benchmarks.few_labels", "commit": "c9", "date": "2026-12-09",
            "machine": "2 cores", "load_at_start": "1/1/1", "load_at_end": "2/2/2",
            "seeds": seeds, "chosen": recipes[-1], "summary": few_labels.summary(rows),
            "rows": rows}  # fmt: skip


def test_the_few_label_blocks_follow_the_seeds_and_sittings_of_their_results():
    r = _few_label_results([1, 2, 3, 4, 5])
    table = publish.few_labels_table(r)
    assert "over the 5 seeds" in table and "2026-12-01 at c1; 2026-12-02 at c2" in table
    chosen = next(line for line in table.splitlines() if "(chosen)" in line)
    assert "**0.9730**" in chosen  # mean of 0.97 + 0.001 * seed over seeds 1..5
    assert "0.9710 0.9720 0.9730 0.9740 0.9750" in chosen
    reading = " ".join(publish.few_labels_reading(r).split())  # unwrapped
    assert "over 5 seeds" in reading and "the weakest seed (1) reaches 0.9710" in reading
    seeds = " ".join(publish.few_labels_seeds(r).split())
    assert "beats spread alone on 5 of 5 seeds" in seeds
    assert "spreading x1 against predictions x1 on 5 of 5 seeds" in seeds
    # the chosen recipe is its chain: spread, + finetune and three spreading rounds
    assert "500 s of wall time and 900 s of CPU time" in " ".join(
        publish.few_labels_time(r).split()
    )
    answer = " ".join(publish.few_labels_answer(r).split())
    assert "fine-tuned with it, then 3 self-training rounds on the labels spread again" in answer
    assert "reaches 0.9730 over 5 seeds" in answer
    three = _few_label_results([1, 2, 3])
    assert "over 3 seeds" in " ".join(publish.few_labels_reading(three).split())
    assert "on 3 of 3 seeds" in " ".join(publish.few_labels_seeds(three).split())


def test_the_search_against_the_grid_says_how_many_trials_each_search_needed():
    pruners = json.loads((ROOT / "benchmarks/results/digits_search.json").read_text())
    values = [(0.9 + 0.005 * i, "") for i in range(20)]  # the grid's best is its last point
    grid = {"run": "grid 5 x 4 (in its order)", "pruner": "-", "seed": "-", "values": values,
            "seconds": 900.0, "pruned": 0, "best": 0.995,
            "reached": [[20, ""], [19, ""]]}  # fmt: skip
    searches = [{**x, "reached": [["not reached", ""], [n, 60.0]]}
                for x, n in zip(pruners["runs"][:3], [2, 4, 3], strict=True)]  # fmt: skip
    searches[1]["reached"][1] = ["not reached", ""]
    r = {**pruners, "reference": 0.995, "reference_from": "grid", "tolerances": [0.005, 0.006],
         "runs": [grid, *searches]}  # fmt: skip
    text = publish.search_grid(r)
    assert "| trials to ≥ 0.9890 (grid best − 0.006) |" in text
    assert "| grid 5 x 4 (in its order) | 20 | – | 900 s | 0.9950 | 20 | 19 |" in text
    flat = " ".join(text.split())
    assert "TPE needed 2 to 3 trials in the 2 of 3 searches that got there" in flat
    assert "the grid, in its order, 19 points" in flat


def _ladder_results() -> dict:
    """A results file as benchmarks/ladder.py writes it, with made-up numbers: all three parts."""
    when = {"command": "python benchmarks/ladder.py steps mnist digits", "commit": "abc1234",
            "date": "2026-12-05 10:00 UTC", "machine": "2 cores, AMD EPYC",
            "load_at_start": "7.00/6.00/5.00", "load_at_end": "9.00/8.00/7.00",
            "blas_env": {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}}  # fmt: skip
    steps = {**when, "steps": 100, "preset_epochs": 150, "steps_per_epoch": 540,
             "jit_compile": {"off": {"first": 24.5, "second": 12.5},
                             "on": {"first": 185.4, "second": 114.7}}}  # fmt: skip

    def setting(variant: str, top: float, epochs: int, test: float, overrides: list) -> dict:
        return {"overrides": overrides, "variant": variant, "top_weight": top, "epochs": epochs,
                "preset_epochs": 150, "seed": 42, "labels_per_class": 10,
                "steps_per_epoch": 540, "seconds": 491.0, "cpu_seconds": 800.0,
                "epoch_min": 83.0, "epoch_mean": 98.0, "epoch_max": 115.0, "val_labels": 100,
                "val_labels_accuracy": 0.96, "n_val": 6000, "val_accuracy": 0.9613,
                "n_test": 10000, "test_accuracy": test}  # fmt: skip

    settings = {
        "full": setting("full", 0.1, 5, 0.9636, ["experiment=mnist_ladder", "model.epochs=5"]),
        "gamma": setting("gamma", 0.5, 10, 0.9471,
                         ["experiment=mnist_ladder_gamma", "model.epochs=10"]),
        "gamma-top-0.1": setting("gamma", 0.1, 10, 0.9244, ["experiment=mnist_ladder_gamma",
                                 "model.epochs=10", "model.denoising_weights=[0,0,0,0,0,0,0.1]"]),
    }  # fmt: skip
    train = {"command": "python -m src.train experiment=digits_ladder mlflow.enabled=false",
             "seconds": 183.0, "cpu_seconds": 105.0, "epochs": 30, "labels_per_class": 10,
             "seed": 42, "test_accuracy": 0.925, "pca_test_accuracy": 0.85,
             "raw_test_accuracy": 0.8556, "scratch_test_accuracy": 0.6694,
             "val_accuracy": 0.9444}  # fmt: skip
    dvc = {"clone_commit": "abc1234", "params_seconds": 3.0, "params_cpu_seconds": 3.0,
           "seconds": 234.0, "cpu_seconds": 125.0,
           "stages": ["prepare", "pretrain", "classify", "evaluate"]}  # fmt: skip
    digits = {**when, "overrides": [], "train": train, "dvc": dvc, "target_seconds": 120,
              "target_met": False}  # fmt: skip
    return {"load_at_end": "1/1/1", "parts": {"steps": steps, "mnist": {**when, "settings":
            settings}, "digits": digits}}  # fmt: skip


def test_the_ladder_blocks_read_their_numbers_and_verdicts_off_the_results():
    assert publish.BLOCKS["ladder-speed"] == ("benchmarks/results/ladder.json",
                                              publish.ladder_speed)  # fmt: skip
    assert publish.BLOCKS["ladder-accuracy"][0] == "benchmarks/results/ladder.json"
    r = _ladder_results()
    speed = publish.ladder_speed(r)
    flat = " ".join(speed.split())
    assert "| full Ladder, 100 steps, `jit_compile` off / on (second pass) | 12.5 s / 114.7 s |" \
        in speed  # fmt: skip
    assert "| full Ladder, first 100 steps, tracing included, `jit_compile` off / on | " \
        "24.5 s / 185.4 s |" in speed  # fmt: skip
    assert "| full Ladder, one MNIST epoch (5-epoch run) | 83 to 115 s, 98 s on average |" in speed
    assert "| full Ladder, the preset's 150 epochs, extrapolated | 4.1 h per seed at 98 s an " \
        "epoch; 2.8 h at the 12.5 s per 100 steps measured above |" in speed  # fmt: skip
    assert "took 9.2 times as long as with it off" in flat and "XLA made a step slower" in flat
    assert "| 234 s wall, 125 s CPU" in speed and "(4 stages)" in speed
    assert "took 234 s of wall time against the target of 120 s: **missed**" in flat
    assert "not measured" not in speed and "`git` " not in speed
    assert "`python benchmarks/ladder.py steps mnist digits`: 2026-12-05 10:00 UTC, commit " \
        "abc1234" in flat  # fmt: skip
    r["parts"]["digits"]["dvc"]["seconds"] = 100.0  # the stale target_met False is ignored
    assert "took 100 s of wall time against the target of 120 s: **met**" in " ".join(
        publish.ladder_speed(r).split()
    )
    accuracy = publish.ladder_accuracy(r)
    assert "| model | epochs | validation accuracy, 100 labels | validation accuracy, all " \
        "6000 | test accuracy |" in accuracy  # fmt: skip
    assert "| full Ladder (`experiment=mnist_ladder model.epochs=5`) | 5 | 0.96 | 0.9613 | " \
        "0.9636 |" in accuracy  # fmt: skip
    assert "| Γ-model, top denoising weight 0.1 (`experiment=mnist_ladder_gamma model.epochs=10 " \
        "model.denoising_weights=[0,0,0,0,0,0,0.1]`) | 10 | 0.96 | 0.9613 | 0.9244 |" \
        in accuracy  # fmt: skip
    flat = " ".join(accuracy.split())
    assert "reaches 0.9636 after 5 epochs, 0.0258 below it" in flat
    assert "the Ladder's classifier reaches test accuracy 0.9250" in flat
    assert "The highest of the four is the Ladder's classifier's." in flat


def test_a_ladder_part_not_measured_renders_as_such():
    r = _ladder_results()
    del r["parts"]["steps"], r["parts"]["digits"]
    del r["parts"]["mnist"]["settings"]["gamma"]
    speed = publish.ladder_speed(r)
    assert "| full Ladder on MNIST, steps with `jit_compile` off / on | not measured |" in speed
    assert "| `experiment=mnist_ladder_gamma`, 10 epochs: MNIST epochs and the whole schedule | " \
        "not measured |" in speed  # fmt: skip
    assert "digits, `experiment=digits_ladder`: `python -m src.train`, `dvc repro` | not " \
        "measured |" in speed  # fmt: skip
    flat = " ".join(speed.split())
    assert "under 2 minutes: not measured" in flat and "**m" not in flat  # no met, no missed
    assert "- `steps`: not measured." in speed and "- `digits`: not measured." in speed
    assert "4.1 h per seed" in speed and "at the 12.5 s" not in speed  # no steps to extrapolate
    accuracy = publish.ladder_accuracy(r)
    assert "| `experiment=mnist_ladder_gamma`, 10 epochs | – | not measured | not measured | " \
        "not measured |" in accuracy  # fmt: skip
    assert "Digits (`experiment=digits_ladder`): not measured." in " ".join(accuracy.split())
    assert "| not measured |" in publish.ladder_accuracy({"parts": {}})


def test_the_ladder_benchmark_reads_srcs_test_accuracy_line():
    from benchmarks.ladder import test_accuracies, weights_override

    log = ("[2026-12-05 10:00:00] src.evaluate test accuracy: autoencoder 0.9250, PCA 0.8500, "
           "raw pixels 0.8556, from scratch nan\n[...] src.train outputs in run/")  # fmt: skip
    found = test_accuracies(log)
    assert found["test_accuracy"] == 0.925 and found["raw_test_accuracy"] == 0.8556
    assert found["scratch_test_accuracy"] != found["scratch_test_accuracy"]  # nan
    assert test_accuracies("no such line") is None
    assert weights_override([0, 0, 0.5], 0.1) == "model.denoising_weights=[0,0,0.1]"


def test_the_repeat_check_names_what_dvc_repro_changed_in_the_clean_clone():
    ci = json.loads((ROOT / "benchmarks/results/ci.json").read_text())
    full = ci["tiers"]["full"]
    clean = {**full, "exit_code": 0, "seconds": 95.0, "changed": []}
    moved = {**clean, "changed": [" M dvc.lock", " M reports/metrics.json"]}
    assert "`git status` showed nothing changed" in publish.repro_check(
        {"tiers": {"repro": clean}}
    )
    text = " ".join(publish.repro_check({"tiers": {"repro": moved}}).split())
    assert "1 min 35 s" in text and "showed 2 changed: `dvc.lock`, `reports/metrics.json`" in text
    assert "Not measured yet" in publish.repro_check({"tiers": {"full": full}})
