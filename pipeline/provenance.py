"""Hash the source files a stage imports, so Snakemake reruns a stage when its code changes.

Snakemake tracks only the text of `shell:`/`run:` blocks, not imported modules. Each rule
therefore gets `params: code=source_hash("pipeline.<stage>")`: a hash over every file of the
stage's package (`pipeline/<stage>/`, imported or not, so a stage's files can be arranged
freely inside it) and every `pipeline.*` module those files import, transitively, found by
parsing imports with `ast` (no import, so the Snakefile stays free of torch). Editing a file
only the evaluate stage imports changes only evaluate's hash.

The hash covers what the code does, not how it reads: each file is hashed as its syntax tree
without docstrings (`normalised_source`), so a comment, a docstring, blank lines or a line break
inside an expression rerun nothing, while any change to a statement, a name or a constant does.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "pipeline"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(module: str) -> Path | None:
    """Path of a `pipeline.*` module (package `__init__.py` or plain module), or None."""
    parts = module.split(".")[1:]
    if not parts:
        return PACKAGE_DIR / "__init__.py"
    rel = Path(*parts)
    for candidate in (PACKAGE_DIR / rel / "__init__.py", PACKAGE_DIR / rel.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, module: str) -> set[str]:
    """The `pipeline.*` modules imported by one source file (absolute and relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join([*parent, *(node.module.split(".") if node.module else [])])
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def package_modules(module: str) -> list[str]:
    """`module` and, when it is a package, every module in its folder tree (dotted names)."""
    path = module_file(module)
    if path is None or path.name != "__init__.py":
        return [module]
    folder = path.parent
    return [module] + sorted(".".join([module, *f.relative_to(folder).with_suffix("").parts]).removesuffix(".__init__")
                             for f in folder.rglob("*.py") if f != path)


def stage_sources(module: str) -> list[Path]:
    """Every pipeline source file `module` depends on: the whole of its package when it is one,
    what those files import (transitively), and the parent packages."""
    seen: dict[str, Path] = {}
    todo = package_modules(module)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            parent = ".".join(parts[:i])
            path = module_file(parent)
            if path is not None and parent not in seen:
                seen[parent] = path
                todo.extend(imported_modules(path, parent))
    return sorted(seen.values())


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop the docstring of the module and of every class and function (their first string statement)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalised_source(path: Path) -> str:
    """The file's syntax tree without docstrings, comments or layout (no line numbers)."""
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return ast.dump(tree, annotate_fields=True, include_attributes=False)


@cache
def source_hash(module: str) -> str:
    """Short sha256 over the relative paths and normalised sources of `stage_sources(module)`."""
    digest = hashlib.sha256()
    for path in stage_sources(module):
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode())
        digest.update(normalised_source(path).encode())
    return digest.hexdigest()[:16]
