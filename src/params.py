"""Write params.yaml from conf/, exactly as `dvc exp run -S` does with Hydra composition on.

Usage: python -m src.params [override ...]
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(overrides: list[str]) -> None:
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(
        ROOT / "params.yaml", str(ROOT / "conf"), None, "config", str(ROOT), overrides
    )


if __name__ == "__main__":
    main(sys.argv[1:])
