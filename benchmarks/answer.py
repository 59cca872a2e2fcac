"""README's answer on digits: `python -m src.train bottleneck=2,8,32 -m` at default settings, each
point's reports/metrics.json collected into benchmarks/results/digits_answer.json (then
`python -m benchmarks.publish` writes README's table and bullets from it), and the smallest
bottleneck's t-SNE maps and reconstructions copied to docs/ (README shows them).

Usage: python benchmarks/answer.py [--bottlenecks 2,8,32] [override ...]
Runs with its own temporary MLflow store, cache and sweep folder.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: benchmarks._common from the repository root
from benchmarks._common import meta, train_sweep, write_results  # noqa: E402


def seed_of(job: Path) -> int:
    """The seed a sweep job ran with, from the config Hydra saved in its folder."""
    return yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["seed"]


def copy_figures(reports: Path) -> None:
    """The t-SNE maps and reconstructions of one sweep point, as README shows them."""
    k = json.loads((reports / "metrics.json").read_text())["bottleneck"]
    for name in ("tsne", "reconstructions"):
        shutil.copyfile(
            reports / "figures" / f"{name}.png", ROOT / "docs" / f"{name}_bottleneck{k}.png"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bottlenecks", default="2,8,32")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    a = parser.parse_args()
    started = meta()
    args = [f"bottleneck={a.bottlenecks}", *a.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        seconds, console = train_sweep(args, Path(tmp))
        jobs = sorted(Path(tmp, "multirun").glob("*/reports/metrics.json"))
        points = [{**json.loads(p.read_text()), "seed": seed_of(p.parent.parent)} for p in jobs]
        copy_figures(min(jobs, key=lambda p: json.loads(p.read_text())["bottleneck"]).parent)
    points.sort(key=lambda m: m["bottleneck"])
    values = {"sweep": f"python -m src.train {' '.join(args)} -m", "seconds": seconds,
              "points": points, "console": console}  # fmt: skip
    write_results("digits_answer", values, started)


if __name__ == "__main__":
    main()
