"""Small file helpers: checksums, atomic writes, and a stage's outputs replaced together."""

import csv
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from src.runtime import UserError, deferred_signals


def file_md5(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_parent(path: Path) -> None:
    """Create the folder of `path`, or raise a UserError naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {path.parent}: {e.strerror}") from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`, renamed into place only if the block succeeds."""
    path = Path(path)
    make_parent(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_csv(path: str | Path, header: list[str], rows: Iterable[list[Any]]) -> None:
    """A CSV file through the csv module, so that commas and quotes in names stay intact."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _replace(src: Path, dest: Path) -> None:
    """Rename src onto dest; a folder replaces a folder whole."""
    if src.is_dir() and dest.is_dir():
        old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old)
    else:
        os.replace(src, dest)


class Outputs:
    """Temporary paths for a stage's outputs, in one folder under `out` (see `outputs`)."""

    def __init__(self, out: Path, names: list[str]):
        self.out, self.names = out, list(names)
        for name in self.names:
            make_parent(out / name)
        self.tmp = Path(tempfile.mkdtemp(prefix=".outputs-", dir=out))

    def __call__(self, name: str) -> Path:
        """Where to write output `name` (a path relative to `out`, declared up front)."""
        if name not in self.names:
            raise ValueError(f"{name} is not one of this stage's outputs {self.names}")
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self) -> None:
        missing = [n for n in self.names if not (self.tmp / n).exists()]
        if missing:
            raise RuntimeError(f"outputs {missing} were not written")
        with deferred_signals():  # no Ctrl-C between two renames
            for name in self.names:
                _replace(self.tmp / name, self.out / name)


@contextmanager
def outputs(out: str | Path, names: list[str]) -> Iterator[Outputs]:
    """Write a stage's outputs together: `staged(name)` gives a temporary path for each; when
    the block succeeds, all replace the old outputs under `out` (signals held off meanwhile);
    when it fails or is interrupted, none does. Output folders are created up front."""
    staged = Outputs(Path(out), names)
    try:
        yield staged
        staged.commit()
    finally:
        shutil.rmtree(staged.tmp, ignore_errors=True)
