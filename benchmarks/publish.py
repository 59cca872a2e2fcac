"""Write every published block of README.md, docs/*.md and benchmarks/README.md from the results
file behind it; `--check` only compares and fails when a block differs from its results.

A block sits between `<!-- publish:NAME -->` and `<!-- /publish:NAME -->`; BLOCKS names the
results file and the function that renders it. The results files are written by the commands
that measure them (benchmarks/answer.py, benchmarks/sweep.py, `dvc repro`), never by hand.

Usage: python -m benchmarks.publish [--check]
"""

import argparse
import json
import re
import statistics
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ["README.md", "docs/*.md", "benchmarks/README.md"]
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
        f"`{r['command']}`: {r['date']}, commit {r['commit']}, {r['machine']}, load "
        f"{r['load_at_start']} at the start and {r['load_at_end']} at the end (`OPENBLAS_*` "
        "set as on this machine).",
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


BLOCKS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "answer-intro": ("benchmarks/results/digits_answer.json", answer_intro),
    "answer-table": ("benchmarks/results/digits_answer.json", answer_table),
    "answer-bullets": ("benchmarks/results/digits_answer.json", answer_bullets),
    "dvc-default": ("reports/metrics.json", dvc_default),
    "sweep-against": ("benchmarks/results/sweep_against.json", sweep_against),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    stale = publish(check=parser.parse_args().check)
    verb = "differs from its results file" if "--check" in sys.argv else "rewritten"
    for block in stale:
        print(f"{block} {verb}")
    if stale and "--check" in sys.argv:
        raise SystemExit(f"error: {len(stale)} published block(s) differ from their results "
                         "files: run python -m benchmarks.publish")  # fmt: skip


if __name__ == "__main__":
    main()
