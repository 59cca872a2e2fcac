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
    assert "the Ladder network +0.200" in publish.budget_answer(merged)
    again = label_budget.with_ladder(merged, ladder_rows, ladder, tmp_path / "figure.png")
    assert len(again["rows"]) == len(merged["rows"])  # a rerun replaces, not adds
