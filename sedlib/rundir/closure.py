"""The one freshness rule for code: what a stage (or a stored result) was made by is its import closure.

A notebook's *import closure* is the notebook itself plus every `sedlib` module it imports, followed
transitively through the modules' own ``import`` and ``from ... import`` statements, those inside functions
included (`ast`, so nothing is imported to find them). Importing ``sedlib.a.b`` runs ``sedlib/__init__.py``
and ``sedlib/a/__init__.py`` first, so those belong to the closure too.

`code_fingerprint` hashes each file of a closure separately, so the runner (`sedlib.run`) can
say which file made a stage run again, and an edit reruns exactly the stages whose closure holds the
edited file. The same rule, applied to a module rather than a notebook, says which trained models
(`sedlib.study.models`) and stored evaluations (`sedlib.study.predictions`) are still valid.

Modules imported by name at run time (`importlib.import_module`) are outside any closure: `sedlib` imports
only third-party packages that way (`sedlib._compat`), and a test checks that the modules a stage's
imports load are in its closure.

Example:
    >>> from sedlib import PROJECT_ROOT
    >>> closure = import_closure(PROJECT_ROOT / "sedlib" / "rundir" / "closure.py")
    >>> [path.relative_to(PROJECT_ROOT).as_posix() for path in closure]
    ['sedlib/__init__.py', 'sedlib/rundir/__init__.py', 'sedlib/rundir/closure.py']
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from sedlib import PROJECT_ROOT, file_sha256

#: The package whose modules are followed; every other import (numpy, torch, ...) is left out.
PACKAGE = "sedlib"

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def module_file(name: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The source file of module ``name`` of the package (``sedlib.a.b``), or None when there is none.

    Example:
        >>> module_file("sedlib.rundir.closure").name
        'closure.py'
        >>> module_file("sedlib.config").name, module_file("numpy")
        ('__init__.py', None)
    """
    parts = name.split(".")
    if parts[0] != package_dir.name:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str | None:
    """The dotted name of a file of the package (None for a file outside it, such as a notebook)."""
    path = Path(path).resolve()
    if not path.is_relative_to(package_dir):
        return None
    parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The module names one file's ``import`` statements may load, anywhere in the file (absolute names).

    ``from a import b`` names ``a`` and ``a.b`` (``b`` may be a module or a name in ``a``; `module_file`
    tells them apart). A relative import is made absolute against the file's own package.
    """
    path = Path(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = module_name(path, package_dir)
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if own is None:
                    raise ValueError(f"{path}: a relative import outside the {package_dir.name} package")
                anchor = own.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _with_parents(name: str) -> list[str]:
    """``sedlib.a.b`` -> ``sedlib``, ``sedlib.a``, ``sedlib.a.b``: importing a module runs its packages first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(path: Path, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The file plus every package module it imports, transitively; sorted, the file itself included.

    Read afresh on every call (no cache): a kernel that outlives an edit adding an import still sees it.

    Args:
        path: a notebook source (``notebooks/NN_name.py``) or a module of the package.
        package_dir: the package followed (`sedlib` by default; tests pass a synthetic one).
    """
    path, package_dir = Path(path).resolve(), package_dir.resolve()
    seen: set[Path] = set()
    pending = [path]
    own = module_name(path, package_dir)
    if own is not None:
        pending += [found for parent in _with_parents(own) if (found := module_file(parent, package_dir))]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imported_names(current, package_dir):
            for module in _with_parents(name):
                found = module_file(module, package_dir)
                if found is not None and found not in seen:
                    pending.append(found)
    return sorted(seen)


def shown_name(path: Path) -> str:
    """A closure file's name in records and messages: ``sedlib/...`` in the package, ``notebooks/...`` else."""
    path = Path(path).resolve()
    for root in (PACKAGE_DIR.parent, PROJECT_ROOT):
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def code_fingerprint(paths: Iterable[Path]) -> dict[str, str]:
    """``{shown_name: sha256}`` of each file, in name order: what `changed_files` compares."""
    return dict(sorted((shown_name(Path(p)), file_sha256(Path(p))) for p in paths))


def changed_files(before: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """The files whose content differs between two fingerprints, or that only one of them has.

    Example:
        >>> changed_files({"a.py": "1", "b.py": "2"}, {"a.py": "1", "b.py": "3", "c.py": "4"})
        ['b.py', 'c.py']
    """
    before = before or {}
    return sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))


def module_code_hash(path: Path) -> str:
    """A short hash of a module's import closure: what a stored result (a trained model) was made by.

    Example:
        >>> len(module_code_hash(PACKAGE_DIR / "rundir" / "closure.py"))
        16
    """
    fingerprint = code_fingerprint(import_closure(path))
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
