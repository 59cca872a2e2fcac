"""The import graph of src/, read with ast (nothing is imported). Modules are named by their
dotted path under src: "data", "sweeps.job"; a package by its folder: "sweeps"."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent


def path_of(module: str, src: Path = SRC) -> Path | None:
    """The file of src module `module` (a package's __init__.py), or None when there is none."""
    base = src.joinpath(*module.split("."))
    for path in (base.with_name(f"{base.name}.py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def modules(src: Path = SRC) -> list[str]:
    """Every module and package under src by name, sorted."""
    names = (".".join(p.relative_to(src).with_suffix("").parts) for p in src.rglob("*.py"))
    return sorted({n.removesuffix("__init__").removesuffix(".") for n in names} - {""})


def packages(module: str) -> set[str]:
    """The packages a module lies in, whose __init__.py runs first: "a.b.c" -> {"a", "a.b"}."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def imported_from(node: ast.ImportFrom, module: str, src: Path) -> str | None:
    """What `from X import ...` in `module` reads from: X under src ("" for src), or None."""
    if node.level == 0:
        name = node.module or ""
        if name != "src" and not name.startswith("src."):
            return None
        return name.removeprefix("src").removeprefix(".")
    here = module.split(".")  # a relative import: from the package `module` lies in, or is
    if path_of(module, src).name != "__init__.py":
        here = here[:-1]
    base = here[: len(here) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def src_imports(module: str, src: Path = SRC) -> set[str]:
    """The src modules (and their packages) that `module` imports, anywhere in its code."""
    path = path_of(module, src)
    if path is None:
        raise ValueError(f"no module {module!r} under {src}")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("src.") for a in node.names if a.name.startswith("src.")}
        base = imported_from(node, module, src) if isinstance(node, ast.ImportFrom) else None
        if base is not None:
            for alias in node.names:  # a submodule, or a name defined in `base` itself
                sub = f"{base}.{alias.name}".removeprefix(".")
                found.add(sub if path_of(sub, src) else base)
    found.discard("")  # src/__init__.py: the root, not a module of its own
    return found.union(*(packages(m) for m in found))


def closure(module: str, src: Path = SRC) -> set[str]:
    """`module`, its packages and every src module it imports, directly or through others."""
    seen, todo = set(), [module, *packages(module)]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(src_imports(m, src))
    return seen


def source_files(module: str, src: Path = SRC) -> list[Path]:
    """The files of closure(module), sorted."""
    return sorted(path_of(m, src) for m in closure(module, src))
