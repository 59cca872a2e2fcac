"""Write every published block of README.md, docs/*.md and benchmarks/README.md from the results
file behind it; `--check` only compares and fails when a block differs from its results.

A block sits between `<!-- publish:NAME -->` and `<!-- /publish:NAME -->`; BLOCKS names the
results file and the function that renders it. The results files are written by the commands
that measure them (benchmarks/answer.py, benchmarks/sweep.py, `dvc repro`), never by hand.

Usage: python -m benchmarks.publish [--check | --list]
"""

import argparse
import json
import re
import statistics
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from benchmarks._common import BLAS, table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ["README.md", "docs/*.md", "benchmarks/README.md"]
LADDER = "Ladder network, joint"  # benchmarks/label_budget.py --ladder's method
BLOCK = re.compile(r"(<!-- publish:([\w-]+) -->\n)(.*?)(<!-- /publish:\2 -->)", re.DOTALL)


def _f(x: float, digits: int = 3) -> str:
    """0.969; a negative number with a true minus sign, as the prose writes it."""
    return f"{x:.{digits}f}".replace("-", "−")


def _diff(x: float) -> str:
    return ("+" if x >= 0 else "") + _f(x)


def answer_intro(r: dict) -> str:
    sizes = ", ".join(str(p["bottleneck"]) for p in r["points"])
    load = r["load_at_start"].split("/")[0]
    prose = (f"for the bottleneck sizes {sizes} (one Hydra sweep, {r['seconds']:.0f} s on "
             f"{r['machine']}, load {load} at the start; {r['date']}, commit {r['commit']}; "
             f"`{r['command']}`):")  # fmt: skip
    sweep = f"{r['sweep']}     # metrics in multirun/<date>/<time>/<job>/reports/"
    return f"{textwrap.fill(prose, 95, break_on_hyphens=False)}\n\n```bash\n{sweep}\n```\n"


ANSWER_COLUMNS = [
    ("autoencoder + head", "test_accuracy", _f),
    ("PCA + same head", "pca_test_accuracy", _f),
    ("raw pixels + logistic regression", "raw_test_accuracy", _f),
    ("same network from scratch", "scratch_test_accuracy", _f),
    ("autoencoder − PCA", "ae_minus_pca_accuracy", _diff),
    ("reconstruction MSE, autoencoder", "test_reconstruction_mse", lambda x: f"{x:.4f}"),
    ("reconstruction MSE, PCA", "pca_reconstruction_mse", lambda x: f"{x:.4f}"),
    ("5-NN on t-SNE map, autoencoder codes", "latent_knn_accuracy", _f),
    ("5-NN on t-SNE map, PCA codes", "pca_latent_knn_accuracy", _f),
]


def answer_table(r: dict) -> str:
    lines = ["| bottleneck | " + " | ".join(c for c, _, _ in ANSWER_COLUMNS) + " |",
             "|---:|" + "---:|" * len(ANSWER_COLUMNS)]  # fmt: skip
    for p in r["points"]:
        cells = [fmt(p[key]) for _, key, fmt in ANSWER_COLUMNS]
        lines.append(f"| {p['bottleneck']} | " + " | ".join(cells) + " |")
    seeds = sorted({p["seed"] for p in r["points"]})
    return "\n".join(lines) + (f"\n\nThe figures are test accuracy on the test images, with one "
                               f"seed ({', '.join(map(str, seeds))}).\n")  # fmt: skip


PROGRESS = re.compile(r"\[\d+/\d+\] .*")


def answer_console(r: dict) -> str:
    """The progress lines the answer's sweep printed (docs/sweeps.md's example)."""
    lines = [m.group(0) for line in r["console"] if (m := PROGRESS.search(line))]
    return f"```\n{chr(10).join(lines)}\n```\n"


def _claim(holds: bool, claim: str) -> None:
    """Stop when the results no longer support the words around their numbers."""
    if not holds:
        raise SystemExit(f"error: the results no longer support: {claim}; rewrite that prose in "
                         "benchmarks/publish.py")  # fmt: skip


def answer_bullets(r: dict) -> str:
    """README's reading of the table: each sentence checked against the numbers it quotes."""
    p = {q["bottleneck"]: q for q in r["points"]}
    small, large = [p[b] for b in (2, 8)], p[32]
    better = all(q["test_accuracy"] > q["pca_test_accuracy"] and q["test_reconstruction_mse"]
                 < q["pca_reconstruction_mse"] for q in small)  # fmt: skip
    _claim(better, "at 2 and 8 units the autoencoder classifies and reconstructs better than PCA")
    knn = {b: (p[b]["latent_knn_accuracy"], p[b]["pca_latent_knn_accuracy"]) for b in (2, 8)}
    _claim(knn[2][0] - knn[2][1] > 0.1, "at 2 units the codes separate the classes much better")
    _claim(abs(knn[8][0] - knn[8][1]) < 0.03, "at 8 units both maps separate them about equally")
    pca_wins = large["pca_test_accuracy"] > large["test_accuracy"] and (
        large["pca_reconstruction_mse"] < large["test_reconstruction_mse"])  # fmt: skip
    _claim(pca_wins, "at 32 units PCA classifies and reconstructs better")
    raw = large["raw_test_accuracy"]
    beats = all(raw > max(q["test_accuracy"], q["pca_test_accuracy"]) for q in small)
    ties = abs(raw - large["test_accuracy"]) < 0.015 and raw < large["pca_test_accuracy"]
    _claim(beats and ties, "raw pixels beat 2-D and 8-D, tie the 32-unit codes, lose to PCA(32)")
    scratch = [q["scratch_test_accuracy"] for q in p.values()]
    _claim(all(q["scratch_test_accuracy"] > q["test_accuracy"] for q in p.values()),
           "the same network from scratch beats the frozen encoder at every size")  # fmt: skip
    return (
        "- The autoencoder helps where compression is strong. With a 2- or 8-unit code it\n"
        "  classifies and reconstructs better than PCA with as many components.\n"
        f"- At 2 units its codes separate the classes much better on a t-SNE map (5-NN "
        f"{_f(knn[2][0], 2)} against\n  {_f(knn[2][1], 2)}). At 8 both maps separate them about "
        f"equally well ({_f(knn[8][0])} and {_f(knn[8][1])}).\n"
        "- At 32 of 64 dimensions PCA keeps almost everything. It classifies and reconstructs "
        f"better\n  ({_f(large['pca_test_accuracy'])} against {_f(large['test_accuracy'])}).\n"
        f"- Logistic regression on all 64 raw pixels ({_f(raw)}) beats both 2-D and both 8-D "
        "inputs, about\n  ties the 32-unit autoencoder codes, and loses to PCA with 32 "
        "components.\n"
        "- The obvious rival wins: the same encoder architecture with the same head, randomly\n"
        "  initialised and trained end to end on the same labels, beats the frozen pretrained "
        f"encoder\n  at every size ({', '.join(_f(x) for x in scratch)}). With all the training "
        "labels, autoencoder pretraining\n  does not pay on digits.\n"
    )


def dvc_default(m: dict) -> str:
    return textwrap.fill(_dvc_default(m), 95, break_on_hyphens=False) + "\n"


def _dvc_default(m: dict) -> str:
    accuracies = ", ".join(
        f"{m[k]:.4f}" for k in ("test_accuracy", "pca_test_accuracy", "raw_test_accuracy")
    )
    return (
        "evaluate logs one line `test accuracy: autoencoder …, PCA …, raw pixels …, from "
        f"scratch …`; here {accuracies} and {m['scratch_test_accuracy']:.4f} (bottleneck "
        f"{m['bottleneck']}, dropout {m['dropout']}). `reports/metrics.json` then holds test "
        f"accuracy {_f(m['test_accuracy'])}, test loss {_f(m['test_loss'])} and reconstruction "
        f"MSE {m['test_reconstruction_mse']:.4f}."
    )


def sweep_against(r: dict) -> str:
    lines = [
        _source(r)
        if "blas_env" in r
        else f"`{r['command']}`: {r['date']}, commit {r['commit']}, {r['machine']}, load "
        f"{r['load_at_start']} at the start and {r['load_at_end']} at the end (`OPENBLAS_*` "
        "as on this machine).",
        "",
        "| tree | wall time (s), median | runs | mean test accuracy |",
        "|---|---|---|---|",
    ]
    for name, runs in r["seconds"].items():
        each = ", ".join(f"{t:.1f}" for t in runs)
        accuracy = r["mean_test_accuracy"][name]
        lines.append(f"| {name} | {statistics.median(runs):.1f} | {each} | {accuracy:.4f} |")
    ratio = f"{r['ratio']:.2f}×"
    lines += ["", f"This tree takes {ratio} the time of {r['against']} for the same sweep."]
    return "\n".join(lines) + "\n"


def sweep_shared(r: dict) -> str:
    """benchmarks/README.md's sweep table: shared work against independent runs."""
    rows = [[x["setting"], f"{x['seconds']:.1f}",
             f"{x['mean_test_accuracy']:.4f}" if x["mean_test_accuracy"] else "–"]
            for x in r["rows"]]  # fmt: skip
    ratio, parallel = r["ratios"]["sweep / independent"], r["ratios"]["joblib 2 jobs / sequential"]
    verdict = (f"The sweep takes {ratio:.2f}× the time of its points run one by one (target ≤ "
               f"{r['target']}: **{_verdict(ratio <= r['target'])}**); the joblib launcher with "
               f"2 jobs {parallel:.2f}× the sequential one.")  # fmt: skip
    return (f"{_source(r)}\n\n{table(['setting', 'wall time (s)', 'mean test accuracy'], rows)}"
            f"\n\n{verdict}\n")  # fmt: skip


def _budget(r: dict) -> tuple[list, list, dict]:
    """label_budget.csv's rows as (budgets, methods, {(budget, method): row}), in its order."""
    budgets = list(dict.fromkeys(row["labels_per_class"] for row in r["rows"]))
    methods = list(dict.fromkeys(row["method"] for row in r["rows"]))
    return budgets, methods, {(row["labels_per_class"], row["method"]): row for row in r["rows"]}


def _budget_label(budget: object, rows: dict, method: str) -> str:
    return f"all ({rows[(budget, method)]['x']:.0f})" if budget == "all" else str(budget)


def _per_class(budget: object, rows: dict, method: str) -> str:
    """'1 label per class', '10 labels per class', 'all (5400) labels per class'."""
    return f"{_budget_label(budget, rows, method)} label{'' if budget == 1 else 's'} per class"


def _and(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


def _bullets(lines: list[str]) -> str:
    """Lines wrapped at 95 characters, a bullet's continuation indented under its text."""
    indent = ["  " if line.startswith("- ") else "" for line in lines]
    return "\n".join(textwrap.fill(line, 95, subsequent_indent=i, break_on_hyphens=False)
                     for line, i in zip(lines, indent, strict=True)) + "\n"  # fmt: skip


def budget_intro(r: dict) -> str:
    seeds = sorted({int(s) for row in r["rows"] for s in str(row["seeds"]).split()})
    load = r["load_at_start"].split("/")[0]
    prose = (f"Measured {r['date']} at commit {r['commit']} by `{r['command']}` "
             f"(results file `benchmarks/results/mnist_label_budget.json`): "
             f"{2 * len(_budget(r)[0]) * len(seeds)} points (frozen and fine-tuned) over seeds "
             f"{', '.join(map(str, seeds))}, {r['seconds'] / 60:.0f} min of wall time on "
             f"{r['machine']} (load {load} at the start).")  # fmt: skip
    intro = f"{textwrap.fill(prose, 95, break_on_hyphens=False)}\n\n```bash\n{r['sweep']}\n```\n"
    if (x := r.get("ladder")) is None:
        return intro
    ladder = (f"The Ladder network's rows: its own sweep, {x['epochs']} epochs, measured "
              f"{x['date']} at commit {x['commit']} by `{x['command']}`, {x['seconds'] / 60:.0f} "
              f"min on {x['machine']} (load {x['load_at_start'].split('/')[0]} at the start); "
              "it is tested against its own network (784-1000-500-250-250-250-10) trained from "
              "scratch on the same labels:")  # fmt: skip
    return (f"{intro}\n{textwrap.fill(ladder, 95, break_on_hyphens=False)}\n\n```bash\n"
            f"{x['sweep']}\n```\n")  # fmt: skip


def _mean_ci(x: dict, digits: int) -> str:
    return (f"{_f(x['test_accuracy_mean'], digits)} [{_f(x['test_accuracy_ci_low'], digits)}, "
            f"{_f(x['test_accuracy_ci_high'], digits)}]")  # fmt: skip


def _budget_cell(rows: dict, b: object, m: str, render: Callable[[dict], str]) -> str:
    """A budget table's cell: `render(row)`, or – where the method did not run at that budget."""
    return render(rows[(b, m)]) if (b, m) in rows else "–"


def budget_table(r: dict) -> str:
    """Mean test accuracy [95 % t-interval] per budget and method."""
    budgets, methods, rows = _budget(r)
    lines = ["| labels per class | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for b in budgets:
        digits = 4 if b == "all" else 3
        cells = [_budget_cell(rows, b, m, lambda x, d=digits: _mean_ci(x, d)) for m in methods]
        lines.append(f"| {_budget_label(b, rows, methods[0])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def budget_tests(r: dict) -> str:
    """Each method against the same network from scratch: difference, p, p adjusted."""
    budgets, methods, rows = _budget(r)
    tested = [
        m
        for m in methods
        if any(row["vs_scratch_p"] is not None for (_, method), row in rows.items() if method == m)
    ]
    lines = ["| labels per class | " + " | ".join(tested) + " |", "|---|" + "---|" * len(tested)]
    for b in budgets:
        cells = [_budget_cell(rows, b, m, _versus) for m in tested]
        lines.append(f"| {_budget_label(b, rows, methods[0])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _leader(budget: object, methods: list, rows: dict) -> tuple[dict, str]:
    """({method: its row} at one budget, the method with the highest mean test accuracy)."""
    at = {m: rows[(budget, m)] for m in methods if (budget, m) in rows}
    return at, max(at, key=lambda m: at[m]["test_accuracy_mean"])


def _versus(x: dict) -> str:
    """'+0.028 (p 0.009, adjusted 0.02)': a method against from scratch at one budget."""
    return (f"{_diff(x['vs_scratch_difference'])} (p {x['vs_scratch_p']:.2g}, adjusted "
            f"{x['vs_scratch_p_adjusted']:.2g})")  # fmt: skip


def budget_reading(r: dict) -> str:
    """A bullet per budget: the highest mean, the methods whose intervals overlap it, and each
    autoencoder against from scratch, all read off the results."""
    budgets, methods, rows = _budget(r)
    out = []
    for b in budgets:
        at, best = _leader(b, methods, rows)
        low = at[best]["test_accuracy_ci_low"]
        overlap = [m for m in at if m != best and at[m]["test_accuracy_ci_high"] >= low]
        ties = (f"its interval overlaps those of {_and(overlap)}" if overlap
                else "no other interval reaches its own")  # fmt: skip
        versus = "; ".join(f"{m} {_versus(at[m])}" for m in at
                           if m.startswith("autoencoder") or m == LADDER)  # fmt: skip
        out.append(f"- **{_per_class(b, rows, methods[0])}**: highest mean "
                   f"{best} ({_f(at[best]['test_accuracy_mean'])}); {ties}. Against the same "
                   f"network from scratch: {versus}.")  # fmt: skip
    return _bullets(out)


def _joint_vs_tuned(ladder: dict, tuned: dict) -> str:
    """The Ladder's mean and interval against the fine-tuned autoencoder's (their seeds differ
    in number, and the results keep no per-seed values: no paired test between the two)."""
    return f"{_mean_ci(ladder, 3)} against fine-tuned's {_mean_ci(tuned, 3)}"


def budget_answer(r: dict) -> str:
    """README's label-budget bullets: per budget the highest mean and each autoencoder against
    from scratch (adjusted p)."""
    budgets, methods, rows = _budget(r)
    n = max(row["n"] for row in r["rows"])
    out = [f"Over {n} seeds; each autoencoder against the same network from scratch, paired over "
           "the seeds, p adjusted over the budgets:"]  # fmt: skip
    for b in budgets:
        at, best = _leader(b, methods, rows)
        versus = ", ".join(f"{m.removeprefix('autoencoder, ')} "
                           f"{_diff(at[m]['vs_scratch_difference'])} "
                           f"(p {at[m]['vs_scratch_p_adjusted']:.2g})"
                           for m in at if m.startswith("autoencoder"))  # fmt: skip
        if LADDER in at:
            versus += (
                f"; the Ladder network (joint, {at[LADDER]['n']} seeds) "
                f"{_diff(at[LADDER]['vs_scratch_difference'])} "
                f"(p {at[LADDER]['vs_scratch_p_adjusted']:.2g}) against its own"
            )
            if (tuned := at.get("autoencoder, fine-tuned")) is not None:
                versus += f", {_joint_vs_tuned(at[LADDER], tuned)}"
        out.append(
            f"- **{_per_class(b, rows, methods[0])}**: highest mean "
            f"{best} ({_f(at[best]['test_accuracy_mean'])}); autoencoder {versus}."
        )
    return _bullets(out)


MNIST_SETTINGS = {  # benchmarks/accuracy.py's settings as docs/mnist.md's table names them
    "dense32": "dense32: dense AE, frozen encoder + head",
    "conv": "conv: conv AE, fine-tuned",
    "labels100": "labels100: conv AE, 10 labels per class, spread, fine-tuned, self-training",
}


def mnist_table(r: dict) -> str:
    """docs/mnist.md's results table, a row per setting benchmarks/accuracy.py measured."""
    lines = ["| setting | k | test accuracy | PCA(k) + same head | target | met | val accuracy | "
             "PCA val | train time | peak RSS | reference | measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, x in r["rows"].items():
        target, met = x["target"], x["test"] >= (x["target"] or x["pca_test"])
        refs = [f"PCA({x['k']})+LR {x['pca_lr_test']:.3f}"]
        refs += [f"raw-pixel LR {x['raw_lr_test']:.3f}"] if "raw_lr_test" in x else []
        refs += [x["reference"]] if x["reference"] else []
        when = f"{x['date'][:10]}, {x['commit']}, load {x['load_at_start'].split('/')[0]}"
        cells = [MNIST_SETTINGS.get(name, name), x["k"], f"**{x['test']:.4f}**",
                 f"{x['pca_test']:.4f}", f"≥ {target:.3f}" if target else "> PCA",
                 "yes" if met else "no", f"{x['val']:.4f}", f"{x['pca_val']:.4f}",
                 f"{x['time']:.0f} s", f"{x['peak_mb'] / 1024:.2f} GiB", ", ".join(refs),
                 when]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def _minutes(seconds: float) -> str:
    return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


CI_TIERS = {  # docs/testing.md's two tiers: (command, what runs)
    "fast": ('`pytest -m "not e2e"`', "everything in process: library modules, the stages' "
             "`run()`, bad input, and whole sweeps and searches of `src.train` run through Hydra "
             "in the test process (`tests/sweeping.py`)"),
    "full": ("`pytest`", "everything: the in-process tests and the tests marked `e2e`"),
}  # fmt: skip


def ci_times(r: dict) -> str:
    """docs/testing.md's tier table from benchmarks/ci.py's results."""
    lines = ["| command | what runs | time |", "|---|---|---|"]
    for tier, (command, what) in CI_TIERS.items():
        if (x := r["tiers"].get(tier)) is None:
            continue
        load = x["load_at_start"].split("/")[0]
        when = f"{x['date']} at {x['commit']}, load {load} at the start"
        time = f"{_minutes(x['pytest_seconds'])} ({x['passed']} tests passed, {x['failed']} failed"
        if "seconds" in x:
            time += f"; `.ci/run` with its install {_minutes(x['seconds'])}"
        lines.append(f"| {command} | {what} | {time}; {when}) |")
    return "\n".join(lines) + "\n"


def repro_check(r: dict) -> str:
    """docs/testing.md's repeat check: README's `dvc repro` in a clean clone (benchmarks/ci.py
    --repro) and what `git status` showed changed after it."""
    if (x := r["tiers"].get("repro")) is None:
        return "Not measured yet: `python benchmarks/ci.py --repro`.\n"
    files = [line[3:] for line in x["changed"]]
    after = (
        "`git status` showed nothing changed"
        if not files
        else f"`git status` showed {len(files)} changed: {', '.join(f'`{f}`' for f in files)}"
    )
    failed = "" if x["exit_code"] == 0 else f" and failed with exit code {x['exit_code']}"
    text = (f"`python benchmarks/ci.py --repro` ran README's first command in a clean clone of "
            f"{x['commit']} ({x['date']}, {x['machine']}): its install, then `dvc repro`, "
            f"which took {_minutes(x['seconds'])}{failed}; {after}.")  # fmt: skip
    return textwrap.fill(text, 95, break_on_hyphens=False) + "\n"


def mnist_answer(r: dict) -> str:
    """README's MNIST paragraph, from benchmarks/accuracy.py's rows."""
    rows = r["rows"]
    dense = {x["k"]: x for name, x in rows.items() if name.startswith("dense")}
    small, large = dense[min(dense)], dense[32]
    _claim(
        all(x["test"] > x["pca_test"] for x in dense.values()),
        "on MNIST the autoencoder beats PCA with the same head at every code size",
    )
    _claim(small["test"] - small["pca_test"] > large["test"] - large["pca_test"],
           "by more the smaller the code")  # fmt: skip
    just = "but only just" if large["test"] - large["pca_test"] < 0.005 else "and still"
    text = (f"On MNIST the autoencoder beats PCA with the same head at every code size "
            f"({', '.join(map(str, sorted(dense)))} units), by more the smaller the code "
            f"({small['test']:.4f} against {small['pca_test']:.4f} at {small['k']} units), {just} "
            f"at 32 units ({large['test']:.4f} against {large['pca_test']:.4f}).")  # fmt: skip
    if "conv" in rows:
        text += f" A fine-tuned convolutional autoencoder reaches {rows['conv']['test']:.4f}."
    seeds = sorted({x["seed"] for x in rows.values()})
    text += (f" One seed ({', '.join(map(str, seeds))}) per setting, test accuracy on the 10000 "
             "test images, settings chosen on the validation split; `python -m "
             "benchmarks.accuracy`. The full table, settings and commands are in "
             "[docs/mnist.md](docs/mnist.md).")  # fmt: skip
    return textwrap.fill(text, 95, break_on_hyphens=False) + "\n"


def search_pruners(r: dict) -> str:
    """docs/search.md's pruner table from benchmarks/search.py's runs, and what it measured."""
    ref, tol = r["reference"], r["tolerances"][-1]
    lines = [f"| run | trials | pruned | wall time | best val accuracy | trials to ≥ "
             f"{ref - tol:.4f} | seconds to it |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for x in r["runs"]:
        trials, seconds = x["reached"][-1]
        seconds = f"{seconds:.0f}" if isinstance(seconds, float) else "–"
        cells = [x["run"], len(x["values"]), x["pruned"], f"{x['seconds']:.0f} s",
                 f"{x['best']:.4f}", trials, seconds]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    source = (
        "the best validation accuracy any of these searches reached"
        if r["reference_from"] == "searches"
        else "the grid's best validation accuracy"
    )
    load = f"{r['load_at_start'].split('/')[0]} at the start, {r['load_at_end'].split('/')[0]}"
    text = (f"`{r['command']}` at {r['commit']}, {r['date']} ({r['machine']}; load average "
            f"{load} at the end): {r['trials']} trials per search on digits with the default "
            f"epochs, each with its own cache. The target is {_f(ref, 4)} ({source}) less "
            f"{tol} (one of digits' 180 validation images).")  # fmt: skip
    return "\n".join(lines) + "\n\n" + textwrap.fill(text, 95, break_on_hyphens=False) + "\n"


def search_grid(r: dict) -> str:
    """docs/search.md's TPE-against-the-grid table, and what it says, from benchmarks/search.py
    run with the grid as the reference."""
    ref, tolerances = r["reference"], r["tolerances"]
    head = "| run | trials | pruned | wall time | best val accuracy |"
    for t in tolerances:
        head += f" trials to ≥ {ref - t:.4f} (grid best − {t}) |"
    lines = [head, "|---|---:|---:|---:|---:|" + "---:|" * len(tolerances)]
    for x in r["runs"]:
        cells = [x["run"], len(x["values"]), x["pruned"] if x["pruner"] != "-" else "–",
                 f"{x['seconds']:.0f} s", f"{x['best']:.4f}",
                 *(trials for trials, _ in x["reached"])]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    load = f"{r['load_at_start'].split('/')[0]} at the start, {r['load_at_end'].split('/')[0]}"
    searches = [x for x in r["runs"] if x["pruner"] != "-"]
    grid = next(x for x in r["runs"] if x["pruner"] == "-")
    one = [x["reached"][-1][0] for x in searches]
    found = [n for n in one if isinstance(n, int)]
    text = (f"`{r['command']}` at {r['commit']}, {r['date']} ({r['machine']}; load average "
            f"{load} at the end): the grid, then {len(searches)} searches of {r['trials']} "
            "trials on digits with the default epochs, each run with its own cache.")  # fmt: skip
    within = (
        f"TPE needed {min(found)} to {max(found)} trials in the {len(found)} of "
        f"{len(searches)} searches that got there"
        if found
        else "no search got there"
    )
    bullet = (f"- **Within one validation image of the grid's best** ({ref - tolerances[-1]:.4f}"
              f" or more; the grid's best is {ref:.4f}), {within}; the grid, in its order, "
              f"{grid['reached'][-1][0]} points. The best any search reached: "
              f"{max(x['best'] for x in searches):.4f}.")  # fmt: skip
    return ("\n".join(lines) + "\n\n" + textwrap.fill(text, 95, break_on_hyphens=False) + "\n\n"
            + _bullets([bullet]))  # fmt: skip


def mnist_reading(r: dict) -> str:
    """docs/mnist.md's reading of its table: each sentence checked against its numbers."""
    rows = r["rows"]
    dense = {x["k"]: x for name, x in rows.items() if name.startswith("dense")}
    small, large = dense[min(dense)], dense[32]
    _claim(all(x["test"] > x["pca_test"] for x in dense.values()), "beats PCA at every k")
    _claim(small["test"] - small["pca_test"] > large["test"] - large["pca_test"],
           "by more the smaller the code")  # fmt: skip
    images = round((large["test"] - large["pca_test"]) * 10000)
    out = [f"- The autoencoder beats PCA with the same head at every k, by more the smaller the "
           f"code ({small['test']:.4f} vs {small['pca_test']:.4f} at k = {small['k']}); at k = 32 "
           f"by {large['test'] - large['pca_test']:.4f} ({large['test']:.4f} vs "
           f"{large['pca_test']:.4f}, {images} test images).",
           f"- A nonlinear head lifts PCA above logistic regression on the same PCA components "
           f"(the reference column): at k = 32, {large['pca_test']:.4f} against "
           f"{large['pca_lr_test']:.4f}."]  # fmt: skip
    _claim(large["pca_test"] > large["pca_lr_test"], "a nonlinear head lifts PCA above LR")
    if (conv := rows.get("conv")) is not None:
        above = round((conv["test"] - conv["target"]) * 10000)
        verdict = (
            f"{above} test images above the {conv['target']} target"
            if above >= 0
            else f"{-above} test images short of the {conv['target']} target"
        )
        out.append(f"- **conv, fine-tuned: {conv['test']:.4f}**, {verdict}; one standard error "
                   f"of a 10000-image accuracy near it is "
                   f"{(conv['test'] * (1 - conv['test']) / 10000) ** 0.5:.4f}.")  # fmt: skip
    seeds = sorted({x["seed"] for x in rows.values()})
    out.append(f"- One seed ({', '.join(map(str, seeds))}) per row, so a difference of a few "
               "test images between two rows may be the seed's doing.")  # fmt: skip
    return _bullets(out)


def _source(r: dict) -> str:
    """A speed benchmark's provenance line: command, date, commit, machine, load, BLAS env."""
    line = (f"`{r['command']}`: {r['date']}, commit {r['commit']}, {r['machine']}, load "
            f"{r['load_at_start']} at the start and {r['load_at_end']} at the end")  # fmt: skip
    if (env := r.get("blas_env")) is not None:
        if all(env.get(k) is None for k in BLAS):
            line += f"; {' and '.join(BLAS)} unset, as on this machine"
        else:
            line += "; " + ", ".join(f"{k}={env.get(k)}" for k in BLAS)
            line += " as on this machine"
    return line + "."


def _runs(seconds: list[float], digits: int = 1) -> str:
    return ", ".join(f"{t:.{digits}f}" for t in seconds)


def _n(count: int, noun: str) -> str:
    """'1 repeat', '3 repeats'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def head_epochs(r: dict) -> str:
    """benchmarks/head_epochs.py: a small head's fit, numpy input against one tf.data pipeline."""
    rows = [[name, f"{x['median']:.2f}", _runs(x["seconds"], 2), f"{x['x_before']:.2f}",
             f"{1000 * x['median'] / r['epochs']:.1f}", f"{x['val_accuracy']:.4f}"]
            for name, x in r["variants"].items()]  # fmt: skip
    columns = ["variant", "fit (s, median)", "runs (s)", "x before", "ms per epoch",
               "val accuracy (last)"]  # fmt: skip
    pipelines = [x for name, x in r["variants"].items() if "tf.data" in name]
    same = len({x["val_accuracy"] for x in pipelines}) == 1
    pair = "train identically (same val accuracy)" if same else "end at different val accuracies"
    reading = (f"`src.training.fit`'s setting (the last row) takes {pipelines[-1]['x_before']:.2f}"
               f"× the time of Keras' numpy input with 1 step per call ({r['epochs']} epochs, "
               f"batch {r['batch']}, {_n(r['repeats'], 'repeat')}, round-robin). The two "
               f"`tf.data` rows {pair}; the numpy rows shuffle differently.")  # fmt: skip
    return f"{_source(r)}\n\n{table(columns, rows)}\n\n{reading}\n"


def overhead(r: dict) -> str:
    """benchmarks/overhead.py: python -m src.train against the same training in bare Keras."""
    rows = [[name, f"{x['median']:.1f}", _runs(x["seconds"]), f"{x['x_bare']:.2f}",
             f"{x['test_accuracy']:.4f}"] for name, x in r["commands"].items()]  # fmt: skip
    columns = ["command", "wall (s, median)", "runs (s)", "x bare Keras", "test accuracy (last)"]
    overrides = " ".join(r["train_overrides"])
    note = (f"`src.train` runs `experiment=mnist {overrides}`; {_n(r['repeats'], 'repeat')}, "
            "round-robin.")  # fmt: skip
    return f"{_source(r)}\n\n{table(columns, rows)}\n\n{note}\n"


def throughput(r: dict) -> str:
    """benchmarks/throughput.py's table, and the target (<= 0.5 x the reference's epoch time at
    equal or better val loss) judged from it."""
    v, ref = r["variants"], r["reference"]
    rows = [[name, x["jit_compile_used"], f"{x['epoch_1']:.2f}", f"{x['later_epochs']:.2f}",
             f"{x['x_ref']:.2f}", f"{x['gflops']:.0f} ({x['gflops'] / r['peak_gflops']:.0%})",
             f"{x['val_loss']:.5f}", f"{x['seconds_to_ref_loss']:.1f}",
             f"{x['x_ref_to_loss']:.2f}"] for name, x in v.items()]  # fmt: skip
    columns = ["variant", "jit_compile used", "epoch 1 (s)", "later epochs (s, median)", "x ref",
               "GFLOP/s (of peak)", f"val loss after {r['epochs']}",
               f"s to ref's final val loss {r['ref_val_loss']:.5f}", "x ref, to loss"]  # fmt: skip
    equal = {n: x for n, x in v.items()
             if not n.startswith("tutorial") and x["val_loss"] <= r["ref_val_loss"]}  # fmt: skip
    if equal:
        best = min(equal, key=lambda n: equal[n]["x_ref"])
        verdict = (f"**{_verdict(equal[best]['x_ref'] <= 0.5)}** (best at equal or better val "
                   f"loss: {equal[best]['x_ref']:.2f}×, {best})")  # fmt: skip
    else:
        verdict = "**missed** (no variant reached the reference's val loss)"
    note = (f"Reference: {ref}. {r['n_train']} training + {r['n_val']} validation images, "
            f"{r['gflop_per_epoch']:.0f} GFLOP per epoch; tf.matmul fp32 peak "
            f"{r['peak_gflops']:.0f} GFLOP/s (2048×2048, best of 10); "
            f"{_n(r['repeats'], 'repeat')} × {_n(r['epochs'], 'epoch')}. Target ≤ 0.5 × the "
            f"reference's epoch time at equal or better val loss: {verdict}.")  # fmt: skip
    return f"{_source(r)}\n\n{table(columns, rows)}\n\n{note}\n"


def tracking(r: dict) -> str:
    """benchmarks/tracking.py: MLflow on against off, each run with MLflow on judged against the
    target (tracking overhead <= 3 % of the run without it)."""
    rows = []
    if (p := r.get("in_process")) is not None:
        name = f"pretrain stage in process, MNIST {_n(p['epochs'], 'epoch')}"
        for key, share, logged in (("off", None, "-"), ("on", p["overhead"], p["log_model"])):
            runs = p[f"mlflow {key}"]
            rows.append([f"{name}, mlflow {key}", f"{p[key]:.2f}", _runs([x[0] for x in runs], 2),
                         _share(p["on"] - p["off"], share), _cell(logged),
                         f"val loss {statistics.median(x[2] for x in runs):.5f}"])  # fmt: skip
    if (c := r.get("cli")) is not None:
        for key, runs in c["runs"].items():
            share = c["overhead"].get(key)
            rows.append([f"python -m src.train, digits, {c['epochs']} + {c['epochs']} epochs, "
                         f"{key}",
                         f"{c['medians'][key]:.2f}", _runs([x[0] for x in runs], 2),
                         _share(c["medians"][key] - c["off"], share), "-",
                         f"test acc {statistics.median(x[1] for x in runs):.4f}"])  # fmt: skip
    columns = ["run", "wall (s, median)", "runs (s)", "tracking overhead: ≤ 3 %",
               "of which log_model (s)", "reached (median)"]  # fmt: skip
    note = f"{_n(r['repeats'], 'repeat')}, alternating."
    return f"{_source(r)}\n\n{table(columns, rows)}\n\n{note}\n"


def _cell(x: float | str) -> str:
    return f"{x:.2f}" if isinstance(x, float) else x


def _share(extra: float, share: float | None) -> str:
    """'+0.52 s (+4.1 %): missed' against the 3 % target; '-' without MLflow."""
    if share is None:
        return "-"
    return f"{extra:+.2f} s ({share:+.1%}): {_verdict(share <= 0.03)}"


def log_model(r: dict) -> str:
    """benchmarks/log_model.py: where src.tracking.log_model's time goes, per model."""
    rows = [[name, f"{x['median']:.3f}", _runs(x["seconds"], 3)] for name, x in r["steps"].items()]
    note = f"{_n(r['repeats'], 'repeat')} after the first call in the process."
    return f"{_source(r)}\n\n{table(['step', 'seconds (median)', 'runs (s)'], rows)}\n\n{note}\n"


def pipeline_tax(r: dict) -> str:
    """benchmarks/pipeline_tax.py, each pipeline command judged against the target (<= 1.10 x
    the plain script)."""
    rows = []
    for i, (name, x) in enumerate(r["commands"].items()):
        met = "-" if i == 0 else _verdict(x["x_plain"] <= r["target"])
        rows.append([name, f"{x['median']:.2f}", _runs(x["seconds"], 2), f"{x['x_plain']:.2f}",
                     f"{x['extra']:+.2f}", met, x["reached"][-1]])  # fmt: skip
    columns = ["command", "wall (s, median)", "runs (s)", "x plain", "extra (s)",
               f"≤ {r['target']:.2f} × plain", "reached (last repeat)"]  # fmt: skip
    note = (f"{_n(r['epochs'], 'epoch')}, batch {r['batch']}, learning rate "
            f"{r['learning_rate']:g}; {_n(r['repeats'], 'repeat')}, round-robin; every command a "
            "fresh process.")  # fmt: skip
    return f"{_source(r)}\n\n{table(columns, rows)}\n\n{note}\n"


def startup(r: dict) -> str:
    """benchmarks/startup.py, each target judged from the median."""
    rows = []
    for name, x in r["commands"].items():
        t, target = x["median"], x["target"]
        met = "-" if target is None else _verdict(t < target if x["below"] == "<" else t <= target)
        limit = "-" if target is None else f"{x['below']} {target:g}"
        rows.append([name, f"{t:.2f}", _runs(x["seconds"], 2), limit, met, x["heavy"]])
    columns = ["command", "wall (s, median)", "runs (s)", "target (s)", "target",
               "heavy modules imported"]  # fmt: skip
    return f"{_source(r)}\n\n{table(columns, rows)}\n\n{_n(r['repeats'], 'repeat')} each.\n"


RAW_BUDGET = 0.003  # the most val accuracy the raw baseline may lose for speed
TSNE_BUDGET = 0.005  # the most 5-NN accuracy on the map tsne_map may lose (src/metrics.py)


def evaluation_raw(r: dict) -> str:
    """benchmarks/evaluation.py's raw-baseline table, and fit_raw_baseline against before."""
    rows = [[x["variant"], x["solver"], f"{x['tol']:g}", x["max_iter"], x["input"],
             x["threads"], x["n_iter"], f"{x['fit (s, median)']:.2f}", _runs(x["seconds"], 2),
             f"{x['x before']:.2f}", f"{x['val acc']:.4f}", f"{x['test acc']:.4f}",
             x["BLAS env"]] for x in r["raw"]]  # fmt: skip
    columns = ["variant", "solver", "tol", "max_iter", "input", "threads", "n_iter",
               "fit (s, median)", "runs (s)", "x before", "val acc", "test acc",
               "BLAS env"]  # fmt: skip
    before = r["raw"][0]
    after = next(x for x in r["raw"] if "fit_raw_baseline" in x["variant"])
    lost = before["val acc"] - after["val acc"]
    note = (f"`fit_raw_baseline` takes {after['x before']:.2f}× the time of the fit before, at "
            f"val accuracy {after['val acc'] - before['val acc']:+.4f} against it (budget: at "
            f"most {RAW_BUDGET} lower): **{_verdict(lost <= RAW_BUDGET)}**. scikit-learn "
            f"{r['sklearn']}; {_n(r['repeats'], 'repeat')}, round-robin.")  # fmt: skip
    return f"{_source(r)}\n\n{table(columns, rows)}\n\n{note}\n"


def evaluation_tsne(r: dict) -> str:
    """benchmarks/evaluation.py's t-SNE table, and tsne_map against before per code size."""
    rows = [[x["codes, points"], x["variant"], f"{x['time (s, median)']:.2f}",
             _runs(x["seconds"], 2), f"{x['x before']:.2f}", f"{x['5-NN acc on map']:.4f}",
             f"{x['vs before']:+.4f}", x["same map every repeat"]] for x in r["tsne"]]  # fmt: skip
    columns = ["codes, points", "variant", "time (s, median)", "runs (s)", "x before",
               "5-NN acc on map", "vs before", "same map every repeat"]  # fmt: skip
    after = [x for x in r["tsne"] if "tsne_map" in x["variant"]]
    ratios = [x["x before"] for x in after]
    knn = ", ".join(f"{x['vs before']:+.4f} ({x['codes, points']})" for x in after)
    kept = all(x["vs before"] >= -TSNE_BUDGET for x in after)
    note = (f"`tsne_map` takes {min(ratios):.2f}–{max(ratios):.2f}× the time of the map before; "
            f"5-NN accuracy on its map against before: {knn} (budget: at most {TSNE_BUDGET} "
            f"lower): **{_verdict(kept)}**; {_n(r['repeats'], 'repeat')}, "
            "round-robin.")  # fmt: skip
    return f"{_source(r)}\n\n{table(columns, rows)}\n\n{note}\n"


def sweep_load(r: dict) -> str:
    """docs/search.md's table of the search bookkeeping under load (benchmarks/sweep_load.py)."""
    from benchmarks.sweep_load import markdown

    _claim(all(x["ok"] for x in r["scales"]), "every scale passed its checks")
    settings = r["settings"]
    load = f"{r['load_at_start'].split('/')[0]} at the start, {r['load_at_end'].split('/')[0]}"
    text = (
        f"`{r['command']}` at {r['commit']}, {r['date']} ({r['machine']}; load average "
        f"{load} at the end). Each trial's training is a test double of "
        f"{settings['trial_seconds']} s on average; PostgreSQL with "
        f"{', '.join(settings['postgres'])}, `mlflow server "
        f"{' '.join(settings['mlflow_server'])}` with "
        f"{', '.join(f'{k}={v}' for k, v in settings['mlflow_server_env'].items())}."
    )
    return markdown(r["scales"]) + "\n\n" + textwrap.fill(text, 95, break_on_hyphens=False) + "\n"


def _when(r: dict) -> str:
    return (f"{r['date']}, commit {r['commit']}, {r['machine']}, load "
            f"{r['load_at_start'].split('/')[0]} at the start")  # fmt: skip


def seeds_console(r: dict) -> str:
    """The points table a sweep over seeds printed, and its best-vs-runner-up line."""
    start = next(i for i, line in enumerate(r["console"]) if "points over seeds" in line)
    lines = []
    for line in r["console"][start + 1 :]:
        if line.startswith("["):
            break
        lines.append(line.rstrip())
    return "```\n" + "\n".join(lines) + "\n```\n"


def seeds_reading(r: dict) -> str:
    """What the example over seeds says: its time, and whether the best point is told apart."""
    line = next(x for x in r["console"] if "vs runner-up" in x)
    m = re.search(r"test accuracy ([+-][\d.]+), paired t-test p = ([\d.]+)", line)
    _claim(m is not None, "the best-vs-runner-up line")
    difference, p = float(m.group(1)), float(m.group(2))
    verdict = (f"Here the best point and the runner-up cannot be told apart: {_diff(difference)} "
               f"in test accuracy, p = {p:.2f}." if p >= 0.05 else
               f"Here the best point beats the runner-up: {_diff(difference)} in test accuracy, "
               f"p = {p:.3f}.")  # fmt: skip
    text = (f"(`{r['command']}` ran that command: {r['runs']} runs in {_minutes(r['seconds'])}; "
            f"{_when(r)}. The intervals are clipped to [0, 1].) {verdict}")  # fmt: skip
    return textwrap.fill(text, 95, break_on_hyphens=False) + "\n"


def budget_digits(r: dict) -> str:
    """The digits label budget's size and time (docs/sweeps.md)."""
    text = (f"On digits, a small version ({r['runs']} points; {_minutes(r['seconds'])}, "
            f"{_when(r)}; `{r['command']}`):")  # fmt: skip
    return textwrap.fill(text, 95, break_on_hyphens=False) + "\n"


M1_M2, M1_TSVM = 0.9667, 0.882  # Kingma et al. (2014), 100 MNIST labels: published, not measured


def _interval(v: list[float], digits: int = 4, sep: str = ", ") -> str:
    """[low, high] of a (mean, low, high) triple, clipped to [0, 1] as accuracies are."""
    return f"[{max(v[1], 0.0):.{digits}f}{sep}{min(v[2], 1.0):.{digits}f}]"


def _chosen(r: dict) -> dict:
    return next(s for s in r["summary"] if s["recipe"] == r["chosen"])


def _measured(r: dict) -> str:
    """When and at which commit the seeds' rows were measured (over one or more sittings)."""
    when = {(x.get("commit", r["commit"]), x.get("date", r["date"])[:10]) for x in r["rows"]}
    return "; ".join(f"{date} at {commit}" for commit, date in sorted(when, key=lambda w: w[::-1]))


def few_labels_table(r: dict) -> str:
    """docs/mnist.md's 100-label recipes, from benchmarks/few_labels.py's results."""
    seeds = ", ".join(map(str, r["seeds"]))
    load = r["load_at_start"].split("/")[0]
    head = (f"Mean [95 % interval] over the {len(r['seeds'])} seeds (Student's t, "
            f"`src/sweeps/summary.py`), measured {_measured(r)} on {r['machine']} (load {load} "
            f"at the last start; wall times are upper bounds); `{r['command']}`:")  # fmt: skip
    lines = [textwrap.fill(head, 95, break_on_hyphens=False), "",
             "| recipe | small val accuracy (100 images, chooses) | test accuracy (10000 images) "
             f"| test per seed ({seeds}) | pseudo-labels right (diagnostic) | labels trained on "
             "| recipe time per seed |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in r["summary"]:
        chosen = s["recipe"] == r["chosen"]
        recipe, val, test = s["recipe"], f"{s['small_val'][0]:.3f}", f"{s['test'][0]:.4f}"
        if chosen:
            recipe, val, test = f"**{recipe} (chosen)**", f"**{val}**", f"**{test}**"
        cells = [recipe, f"{val} {_interval(s['small_val'], 3)}",
                 f"{test} {_interval(s['test'])}", " ".join(f"{x:.4f}" for x in s["tests"]),
                 f"{s['pseudo_right'][0]:.3f}", f"{s['n_labels'][0]:.0f}",
                 f"{s['total'][0]:.0f} s"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _recipe_words(recipe: str) -> str:
    """What a few-label recipe adds to the head on spread labels, in words ("" for spread)."""
    from benchmarks.few_labels import rounds

    if recipe == "spread":
        return ""
    words = ", the encoder then fine-tuned with it"
    if n := rounds(recipe):
        source = ("the labels spread again over its fine-tuned codes" if "spreading" in recipe
                  else "its own confident predictions")  # fmt: skip
        words += f", then {n} self-training round{'s' * (n > 1)} on {source}"
    return words + ","


def few_labels_answer(r: dict) -> str:
    """README's 100-label sentence."""
    s = _chosen(r)
    text = (
        f"With 100 labels in all, a head trained on the labels spread over the autoencoder's "
        f"codes{_recipe_words(r['chosen'])} reaches {s['test'][0]:.4f} over {s['n']} seeds "
        f"({_interval(s['test'])}; Kingma et al.'s "
        f"M1+M2: {M1_M2}), the recipe chosen among {len(r['summary'])} on 100 validation "
        "labels; but label spreading's `alpha` and the augmentation were tuned on the full "
        "validation split, and the 3-round candidate was added after seed 42's test "
        "accuracy had been printed ([what chose what](docs/mnist.md#results))."
    )
    return textwrap.fill(text, 95, break_on_hyphens=False) + "\n"


def _wins(r: dict, better: str, worse: str) -> str:
    """'k of n seeds' on which recipe `better` has the higher test accuracy than `worse`."""
    test = {(x["recipe"], x["seed"]): x["test"] for x in r["rows"]}
    wins = sum(test[better, seed] > test[worse, seed] for seed in r["seeds"])
    return f"{wins} of {len(r['seeds'])} seeds"


def few_labels_reading(r: dict) -> str:
    """docs/mnist.md's 100-label bullet: the chosen recipe's mean, interval and weakest seed."""
    s = _chosen(r)
    mean, low = s["test"][0], max(s["test"][1], 0.0)
    weakest = min(zip(s["tests"], r["seeds"], strict=True))
    per_seed = ", ".join(f"{x:.4f}" for x in s["tests"])
    lower = "is above it too" if low > M1_M2 else f"({low:.4f}) is not"
    return _bullets([
        f"- **100 labels: {mean:.4f}**, mean test accuracy over {s['n']} seeds (95 % interval "
        f"{_interval(s['test'], sep='–')[1:-1]}; per seed {per_seed}), "
        f"{'above' if mean > M1_M2 else 'below'} M1+M2's {M1_M2} and M1+TSVM's {M1_TSVM}. Like "
        "them this is semi-supervised: the autoencoder learns from all 54000 training images, "
        "label spreading carries the 100 labels over a 10-nearest-neighbour graph of their "
        "codes, and the classifier trains on the spread labels, then on labels spread again "
        "over its own fine-tuned codes. The recipe was chosen among its candidates on 10 "
        "validation labels per class; what else was tuned, and on what, is in the table above. "
        f"The mean is {abs(mean - M1_M2):.4f} {'above' if mean > M1_M2 else 'below'} M1+M2's; "
        f"the interval's lower end {lower}; the weakest seed "
        f"({weakest[1]}) reaches {weakest[0]:.4f}.",
    ])  # fmt: skip


def few_labels_seeds(r: dict) -> str:
    """docs/mnist.md's bullet on what the per-seed test accuracies say about the steps (the
    test column chose nothing)."""
    s, spread = _chosen(r), r["summary"][0]
    rounds = [x["recipe"] for x in r["summary"] if " x" in x["recipe"]]
    pairs = [(a, a.replace("spreading", "predictions")) for a in rounds if "spreading" in a]
    pairs = [(a, b) for a, b in pairs if b in rounds]
    respread = "; ".join(f"{a.split(' + ')[-1]} against {b.split(' + ')[-1]} on "
                         f"{_wins(r, a, b)}" for a, b in pairs)  # fmt: skip
    return _bullets([
        "- **Per seed, on test** (which chose nothing). The chosen recipe beats spread alone on "
        f"{_wins(r, r['chosen'], spread['recipe'])} and + finetune on "
        f"{_wins(r, r['chosen'], '+ finetune')}; re-spreading beats self-training on the "
        f"classifier's predictions round for round: {respread}. Spreading over the "
        f"autoencoder's codes gets {spread['pseudo_right'][0]:.1%} of the training labels right "
        f"(mean over the seeds); the rounds keep {s['n_labels'][0]:.0f} images whose labels "
        f"are {s['pseudo_right'][0]:.1%} right.",
    ])  # fmt: skip


def few_labels_time(r: dict) -> str:
    """docs/mnist.md's time bullet for the 100-label recipes."""
    s, spread = _chosen(r), r["summary"][0]
    load = (f"load average {r['load_at_start'].split('/')[0]} at the start and "
            f"{r['load_at_end'].split('/')[0]} at the end of the last sitting")  # fmt: skip
    cpu = (f" and {s['total_cpu'][0]:.0f} s of CPU time (all threads; less sensitive to what "
           "else runs)" if "total_cpu" in s else "")  # fmt: skip
    return _bullets([
        f"- **Time.** {s['total'][0]:.0f} s of wall time{cpu} per seed for the chosen recipe in "
        f"the benchmark (mean over the seeds; {spread['total'][0]:.0f} s of wall time of it the "
        f"conv autoencoder's pretraining and the first head with label spreading), {load}, "
        f"on {r['machine']}.",
    ])  # fmt: skip


NOT_MEASURED = "not measured"
LADDER_PAPER = 0.9894  # Rasmus et al. (2015): full MLP Ladder, 100 labels, 1.06 % test error


def _ladder_parts(r: dict) -> tuple[dict | None, dict, dict | None]:
    """benchmarks/ladder.py's parts: steps, mnist's settings ({} when not measured), digits."""
    parts = r.get("parts", {})
    return parts.get("steps"), (parts.get("mnist") or {}).get("settings", {}), parts.get("digits")


def _ladder_setting(name: str, x: dict | None) -> str:
    """Setting `name`'s label: 'full Ladder', 'Γ-model, top denoising weight 0.5' from its
    results `x`; without them, its preset and epochs as benchmarks/ladder.py runs them."""
    from benchmarks.ladder import SETTINGS

    if x is None:
        preset, epochs, top = SETTINGS[name]
        return f"`{preset}`, {epochs} epochs" + (f", top denoising weight {top:g}" if top else "")
    if x["variant"] == "full":
        return "full Ladder"
    return f"Γ-model, top denoising weight {x['top_weight']:g}"


def _ladder_sources(r: dict, parts: list[str]) -> str:
    """A bullet per part: what measured it (command, date, commit, machine, load), or that it
    has not been measured; and what a smoke test shortened."""
    lines = []
    for part in parts:
        x = r.get("parts", {}).get(part)
        if x is None:
            lines.append(f"- `{part}`: {NOT_MEASURED}.")
            continue
        line = f"- `{part}`: {_source(x)}"
        if x.get("overrides"):
            line += f" Overrides: `{' '.join(x['overrides'])}`."
        if x.get("max_steps"):
            line += f" Each fit stopped after {_n(x['max_steps'], 'step')} (a smoke test)."
        lines.append(line)
    return _bullets(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def ladder_speed(r: dict) -> str:
    """docs/ladder.md's speed table from benchmarks/ladder.py's parts; a part not measured is
    a row saying so. The XLA ratio and the digits target's verdict are read off the numbers."""
    from benchmarks.ladder import SETTINGS

    steps, settings, digits = _ladder_parts(r)
    rows, notes = [], []
    if steps is None:
        rows.append(["full Ladder on MNIST, steps with `jit_compile` off / on", NOT_MEASURED])
        notes.append(f"XLA against no XLA: {NOT_MEASURED}.")
    else:
        off, on, n = steps["jit_compile"]["off"], steps["jit_compile"]["on"], steps["steps"]
        rows += [[f"full Ladder, {n} steps, `jit_compile` off / on (second pass)",
                  f"{off['second']:.1f} s / {on['second']:.1f} s"],
                 [f"full Ladder, first {n} steps, tracing included, `jit_compile` off / on",
                  f"{off['first']:.1f} s / {on['first']:.1f} s"]]  # fmt: skip
        ratio = on["second"] / off["second"]
        than = (
            f"{ratio:.1f} times as long as" if ratio >= 1 else f"{1 / ratio:.1f} times faster than"
        )
        notes.append(f"With `jit_compile` on, {n} steps of the full Ladder's second pass took "
                     f"{than} with it off ({on['second']:.1f} s against {off['second']:.1f} s): "
                     f"XLA made a step {'slower' if ratio > 1 else 'no slower'} on these "
                     "cores.")  # fmt: skip
    for name in SETTINGS:
        label, x = _ladder_setting(name, settings.get(name)), settings.get(name)
        if x is None:
            rows.append([f"{label}: MNIST epochs and the whole schedule", NOT_MEASURED])
            continue
        rows += [[f"{label}, one MNIST epoch ({x['epochs']}-epoch run)",
                  f"{x['epoch_min']:.0f} to {x['epoch_max']:.0f} s, {x['epoch_mean']:.0f} s on "
                  "average"],
                 [f"{label}, a whole {x['epochs']}-epoch schedule",
                  f"{x['seconds']:.0f} s wall, {x['cpu_seconds']:.0f} s CPU"]]  # fmt: skip
    for name in ("full", "gamma"):  # the presets: what 150 epochs would take per seed
        if (x := settings.get(name)) is None:
            continue
        epochs = x["preset_epochs"]
        time = f"{_hours(epochs * x['epoch_mean'])} per seed at {x['epoch_mean']:.0f} s an epoch"
        if name == "full" and steps is not None:
            step = steps["jit_compile"]["off"]["second"] / steps["steps"]
            time += (f"; {_hours(epochs * x['steps_per_epoch'] * step)} at the "
                     f"{steps['jit_compile']['off']['second']:.1f} s per {steps['steps']} steps "
                     "measured above")  # fmt: skip
        rows.append([f"{_ladder_setting(name, x)}, the preset's {epochs} epochs, extrapolated",
                     time])  # fmt: skip
    if digits is None:
        rows.append(["digits, `experiment=digits_ladder`: `python -m src.train`, `dvc repro`",
                     NOT_MEASURED])  # fmt: skip
        notes.append(f"The digits Ladder's `dvc repro` under 2 minutes: {NOT_MEASURED}.")
    else:
        train, dvc, target = digits["train"], digits["dvc"], digits["target_seconds"]
        rows += [[f"digits, `experiment=digits_ladder`, `python -m src.train` ({train['epochs']} "
                  "epochs)", f"{train['seconds']:.0f} s wall, {train['cpu_seconds']:.0f} s CPU"],
                 [f"digits, `experiment=digits_ladder`, `dvc repro` in a fresh clone of "
                  f"{dvc['clone_commit']} ({_n(len(dvc['stages']), 'stage')})",
                  f"{dvc['seconds']:.0f} s wall, {dvc['cpu_seconds']:.0f} s CPU (and "
                  f"`python -m src.params` {dvc['params_seconds']:.0f} s before it)"]]  # fmt: skip
        met = dvc["seconds"] <= target
        cpu = "under" if dvc["cpu_seconds"] <= target else "over"
        notes.append(f"The digits Ladder's `dvc repro` took {dvc['seconds']:.0f} s of wall time "
                     f"against the target of {target} s: **{_verdict(met)}** (its CPU time, "
                     f"{dvc['cpu_seconds']:.0f} s, is {cpu} it).")  # fmt: skip
    text = table(["what", "time"], rows)
    prose = " ".join(notes) + " Wall times on a shared machine are upper bounds. Measured by:"
    return (f"{text}\n\n{textwrap.fill(prose, 95, break_on_hyphens=False)}\n\n"
            f"{_ladder_sources(r, ['steps', 'mnist', 'digits'])}")  # fmt: skip


def ladder_accuracy(r: dict) -> str:
    """docs/ladder.md's accuracy table (MNIST, short schedules) and the digits Ladder's test
    accuracy against its baselines, from benchmarks/ladder.py's parts."""
    from benchmarks.ladder import SETTINGS

    _, settings, digits = _ladder_parts(r)
    measured = list(settings.values())
    small = f"{measured[0]['val_labels']} labels" if measured else "few labels"
    every = f"all {measured[0]['n_val']}" if measured else "all"
    lines = [f"| model | epochs | validation accuracy, {small} | validation accuracy, {every} | "
             "test accuracy |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name in SETTINGS:
        if (x := settings.get(name)) is None:
            lines.append(f"| {_ladder_setting(name, None)} | – | {NOT_MEASURED} | "
                         f"{NOT_MEASURED} | {NOT_MEASURED} |")  # fmt: skip
            continue
        places = 2 if x["val_labels"] <= 100 else 4
        lines.append(f"| {_ladder_setting(name, x)} (`{' '.join(x['overrides'])}`) | "
                     f"{x['epochs']} | {x['val_labels_accuracy']:.{places}f} | "
                     f"{x['val_accuracy']:.4f} | {x['test_accuracy']:.4f} |")  # fmt: skip
    notes = []
    if measured:
        x = measured[0]
        best = max(settings, key=lambda m: settings[m]["test_accuracy"])
        b = settings[best]
        gap = b["test_accuracy"] - LADDER_PAPER
        notes.append(
            f"MNIST with {x['val_labels']} labels ({x['labels_per_class']} per class, seed "
            f"{x['seed']}) and shortened schedules: one seed of one short run each; the test "
            f"column (the {x['n_test']} test images) chose nothing. The paper reports "
            f"{LADDER_PAPER} test accuracy (1.06 % error) for the full MLP Ladder with 100 labels "
            f"after 150 epochs; the best here, the {_ladder_setting(best, b)}, reaches "
            f"{b['test_accuracy']:.4f} after {_n(b['epochs'], 'epoch')}, "
            f"{abs(gap):.4f} {'below' if gap < 0 else 'above'} it."
        )
    else:
        notes.append(f"MNIST: {NOT_MEASURED}.")
    if digits is None:
        notes.append(f"Digits (`experiment=digits_ladder`): {NOT_MEASURED}.")
    else:
        t = digits["train"]
        scores = {"the Ladder's classifier": t["test_accuracy"],
                  "PCA with the same head": t["pca_test_accuracy"],
                  "logistic regression on the raw pixels": t["raw_test_accuracy"],
                  "the same network from scratch": t["scratch_test_accuracy"]}  # fmt: skip
        top = max(scores, key=scores.__getitem__)
        notes.append(
            f"On digits (`{t['command']}`: {t['labels_per_class']} labels per class, seed "
            f"{t['seed']}, {t['epochs']} epochs), the Ladder's classifier reaches test accuracy "
            f"{t['test_accuracy']:.4f} (validation {t['val_accuracy']:.4f} on all the validation "
            f"images); with the same labels, PCA with the same head reaches "
            f"{t['pca_test_accuracy']:.4f}, logistic regression on the raw pixels "
            f"{t['raw_test_accuracy']:.4f}, and the same network trained from scratch "
            f"{t['scratch_test_accuracy']:.4f}. The highest of the four is {top}'s."
        )
    prose = textwrap.fill(" ".join(notes) + " Measured by:", 95, break_on_hyphens=False)
    return "\n".join(lines) + f"\n\n{prose}\n\n{_ladder_sources(r, ['mnist', 'digits'])}"


BLOCKS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "answer-intro": ("benchmarks/results/digits_answer.json", answer_intro),
    "answer-table": ("benchmarks/results/digits_answer.json", answer_table),
    "answer-bullets": ("benchmarks/results/digits_answer.json", answer_bullets),
    "answer-console": ("benchmarks/results/digits_answer.json", answer_console),
    "seeds-console": ("benchmarks/results/console_seeds.json", seeds_console),
    "seeds-reading": ("benchmarks/results/console_seeds.json", seeds_reading),
    "budget-digits": ("benchmarks/results/console_budget.json", budget_digits),
    "dvc-default": ("reports/metrics.json", dvc_default),
    "sweep-against": ("benchmarks/results/sweep_against.json", sweep_against),
    "sweep-shared": ("benchmarks/results/sweep_shared.json", sweep_shared),
    "mnist-answer": ("benchmarks/results/mnist_accuracy.json", mnist_answer),
    "mnist-table": ("benchmarks/results/mnist_accuracy.json", mnist_table),
    "mnist-reading": ("benchmarks/results/mnist_accuracy.json", mnist_reading),
    "ci-times": ("benchmarks/results/ci.json", ci_times),
    "repro-check": ("benchmarks/results/ci.json", repro_check),
    "few-labels-table": ("benchmarks/results/mnist_few_labels.json", few_labels_table),
    "few-labels-answer": ("benchmarks/results/mnist_few_labels.json", few_labels_answer),
    "few-labels-reading": ("benchmarks/results/mnist_few_labels.json", few_labels_reading),
    "few-labels-seeds": ("benchmarks/results/mnist_few_labels.json", few_labels_seeds),
    "few-labels-time": ("benchmarks/results/mnist_few_labels.json", few_labels_time),
    "search-pruners": ("benchmarks/results/digits_search.json", search_pruners),
    "search-grid": ("benchmarks/results/digits_search_grid.json", search_grid),
    "sweep-load": ("benchmarks/results/sweep_load.json", sweep_load),
    "budget-intro": ("benchmarks/results/mnist_label_budget.json", budget_intro),
    "budget-table": ("benchmarks/results/mnist_label_budget.json", budget_table),
    "budget-answer": ("benchmarks/results/mnist_label_budget.json", budget_answer),
    "budget-reading": ("benchmarks/results/mnist_label_budget.json", budget_reading),
    "budget-tests": ("benchmarks/results/mnist_label_budget.json", budget_tests),
    "head-epochs": ("benchmarks/results/head_epochs.json", head_epochs),
    "overhead": ("benchmarks/results/overhead.json", overhead),
    "throughput": ("benchmarks/results/throughput.json", throughput),
    "tracking": ("benchmarks/results/tracking.json", tracking),
    "log-model": ("benchmarks/results/log_model.json", log_model),
    "pipeline-tax": ("benchmarks/results/pipeline_tax.json", pipeline_tax),
    "startup": ("benchmarks/results/startup.json", startup),
    "evaluation-raw": ("benchmarks/results/evaluation.json", evaluation_raw),
    "evaluation-tsne": ("benchmarks/results/evaluation.json", evaluation_tsne),
    "ladder-speed": ("benchmarks/results/ladder.json", ladder_speed),
    "ladder-accuracy": ("benchmarks/results/ladder.json", ladder_accuracy),
}


def rendered(name: str, root: Path, cache: dict[str, dict]) -> str:
    """Block `name` rendered from its results file under `root` (read once per run)."""
    if name not in BLOCKS:
        raise SystemExit(f"error: unknown block publish:{name}; known: {', '.join(BLOCKS)}")
    source, render = BLOCKS[name]
    if source not in cache:
        path = root / source
        if not path.is_file():
            raise SystemExit(f"error: {source} not found: block publish:{name} is made from it")
        cache[source] = json.loads(path.read_text())
    return render(cache[source])


def publish(root: Path = ROOT, check: bool = False) -> list[str]:
    """Rewrite (or with check, compare) every block; return 'file: block' for each that differs.
    Every block is rendered before any file is written: an error changes nothing."""
    cache: dict[str, dict] = {}
    stale, texts = [], {}
    for path in sorted({p for pattern in DOCS for p in root.glob(pattern)}):

        def replace(m: re.Match, path: Path = path) -> str:
            new = rendered(m.group(2), root, cache)
            if new != m.group(3):
                stale.append(f"{path.relative_to(root)}: publish:{m.group(2)}")
            return m.group(1) + new + m.group(4)

        texts[path] = BLOCK.sub(replace, path.read_text())
    for path, text in texts.items():
        if not check and text != path.read_text():
            path.write_text(text)
    return stale


def _commands(path: Path) -> str:
    """The command(s) that wrote a results file: its own and those of its entries (rows,
    tiers, parts) and added parts (the label budget's Ladder rows)."""
    r = json.loads(path.read_text())
    entries = [
        r,
        *(
            x
            for key in ("rows", "tiers", "parts")
            if isinstance(r.get(key), dict)
            for x in r[key].values()
        ),
        *(x for x in r.values() if isinstance(x, dict)),
    ]
    commands = dict.fromkeys(x["command"] for x in entries if "command" in x)
    return ", ".join(f"`{c}`" for c in commands) or "`dvc repro`"


def listing(root: Path = ROOT) -> str:
    """A markdown table: each published block, the file it is in, its results file and the
    command that wrote that file."""
    rows = []
    for path in sorted({p for pattern in DOCS for p in root.glob(pattern)}):
        for m in BLOCK.finditer(path.read_text()):
            source = BLOCKS[m.group(2)][0]
            where = str(path.relative_to(root))
            rows.append([m.group(2), where, source, _commands(root / source)])
    return table(["block", "in", "results file", "written by"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    parser.add_argument("--list", action="store_true", help="each block: where, file, command")
    args = parser.parse_args()
    if args.list:
        return print(listing())
    stale = publish(check=args.check)
    verb = "differs from its results file" if "--check" in sys.argv else "rewritten"
    for block in stale:
        print(f"{block} {verb}")
    if stale and "--check" in sys.argv:
        raise SystemExit(f"error: {len(stale)} published block(s) differ from their results "
                         "files: run python -m benchmarks.publish")  # fmt: skip


if __name__ == "__main__":
    main()
