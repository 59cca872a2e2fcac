"""One cache for the work src.train shares between runs (a sweep's points, or the next run on
the same data). An entry is a folder root/<name>/<key>, keyed by its inputs and by the source
of every src module that the code computing it imports (src.imports), never by a hand-written
list of files; it is computed once under a file lock and renamed into place whole."""

import functools
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from src import imports
from src.files import file_md5

Code = Callable[..., Any] | ModuleType  # a function stands for the module that defines it


def module_of(code: Code) -> str:
    """The src module ("data", "sweeps.job") of a module, function, lambda or partial."""
    while isinstance(code, functools.partial):
        code = code.func
    module = code if isinstance(code, ModuleType) else inspect.getmodule(code)
    spec = getattr(module, "__spec__", None)  # `python -m src.x`: __main__, spec "src.x"
    name = spec.name if spec else getattr(module, "__name__", "")
    if not name.startswith("src."):
        raise ValueError(f"{code!r} is not defined in a module under src/")
    return name.removeprefix("src.")


PARSING = threading.Lock()


@functools.cache
def import_closure(module: str) -> tuple[str, ...]:
    """imports.closure(module), sorted: read with ast once per process. CPython 3.11's compiler
    can fail ("AST constructor recursion depth mismatch") when two threads compile at once, an
    import's compile included: read it before starting threads (evaluate.code_maps does)."""
    with PARSING:
        return tuple(sorted(imports.closure(module)))


def code_md5(code: Code) -> dict[str, str]:
    """md5 of the file of every src module in the import closure of `code`'s module."""
    return {m: file_md5(imports.path_of(m)) for m in import_closure(module_of(code))}


def filled(folder: Path, compute: Callable[[Path], None]) -> Path:
    """`folder`, made and filled by compute(folder); removed again if compute fails."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        compute(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


class Cache:
    """Entries computed once per key under `root` (None: computed every time, never stored)."""

    def __init__(self, root: str | Path | None, **common: Any):
        self.root = Path(root) if root is not None else None
        self.common = common  # in every key (src.train: the prepared data's hash)
        self.reused: dict[str, str] = {}  # name -> key of what came from the cache

    def key(self, name: str, inputs: dict[str, Any], code: Code) -> str:
        """Hash of name, common inputs, `inputs` and the source of `code`'s import closure."""
        blob = {"name": name, "common": self.common, "inputs": inputs, "code": code_md5(code)}
        text = json.dumps(blob, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def has(self, name: str, inputs: dict[str, Any], code: Code) -> bool:
        """Whether the entry of these inputs and code is there already."""
        return self.root is not None and (self.root / name / self.key(name, inputs, code)).is_dir()

    def folder(
        self,
        name: str,
        inputs: dict[str, Any],
        compute: Callable[[Path], None],
        code: Code | None = None,
    ) -> Path:
        """The entry's folder, filled by compute(folder) unless the cache holds it already."""
        if self.root is None:  # a new temporary folder, the caller's to delete
            return filled(Path(tempfile.mkdtemp(prefix=f"{name}-")), compute)
        from filelock import FileLock

        key = self.key(name, inputs, code or compute)  # by default compute's own module
        entry = self.root / name / key
        entry.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{entry}.lock"):  # parallel jobs with the same key compute it once
            if entry.is_dir():
                self.reused[name] = key
                return entry
            tmp = entry.with_name(f".{key}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            os.replace(filled(tmp, compute), entry)  # the entry appears whole or not at all
        return entry

    def arrays(
        self,
        name: str,
        inputs: dict[str, Any],
        compute: Callable[[], dict[str, np.ndarray]],
        code: Code | None = None,
    ) -> dict[str, np.ndarray]:
        """compute()'s arrays, kept as one .npz in the entry's folder."""
        if self.root is None:
            return compute()

        def save(folder: Path) -> None:
            np.savez(folder / "arrays.npz", **compute())

        entry = self.folder(name, inputs, save, code or compute)
        with np.load(entry / "arrays.npz", allow_pickle=False) as f:
            return {k: f[k] for k in f.files}


NO_CACHE = Cache(None)  # computes every time: the DVC stages, which DVC itself caches
