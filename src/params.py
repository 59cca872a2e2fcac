"""Write params.yaml from conf/, as `dvc exp run -S` does with DVC's Hydra composition on.

Usage: python -m src.params [override ...]
"""

import sys
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent


def compose_params(overrides: list[str]) -> dict[str, Any]:
    """conf/config.yaml composed with the overrides and resolved: what params.yaml holds."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def main(overrides: list[str]) -> None:
    text = yaml.safe_dump(compose_params(overrides), sort_keys=False)
    (ROOT / "params.yaml").write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
