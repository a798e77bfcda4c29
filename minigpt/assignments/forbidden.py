"""Exercises that ask for X by hand must not call the package's X: found statically and at run time.

:func:`forbidden_uses` reads an answer's source for the forbidden names (through import aliases
and re-exports); the worker watches calls at run time and reports them, and the grader turns
either into :class:`Forbidden` with :func:`forbidden_message`.
"""

from __future__ import annotations

import ast


class Forbidden(BaseException):
    """An answer called a forbidden function (a ``BaseException``: the check must not wrap it)."""


def forbidden_message(names) -> str:
    names = ", ".join(sorted(set(names)))
    return (f"this exercise asks you to write it by hand, but your answer calls {names} (the package's own "
            "version); write the computation yourself")


def _loaded(name: str):
    """The object a dotted name stands for, through modules already imported here (no imports:
    the names come from a submission), or None."""
    import sys

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        mod = sys.modules.get(".".join(parts[:i]))
        if mod is not None:
            obj = mod
            try:
                for a in parts[i:]:
                    obj = getattr(obj, a)
            except AttributeError:
                return None
            return obj
    return None


def forbidden_uses(source: str, names) -> list[str]:
    """Which of the dotted ``names`` the code refers to, read statically: through any import alias
    and any re-export (``from minigpt import GPT`` is ``minigpt.model.GPT``)."""
    from .deps import _python
    from .worker import resolve

    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []
    targets: dict[int, str] = {}
    for n in names:
        try:
            obj = resolve(n)
        except (ImportError, AttributeError):
            continue
        targets[id(obj)] = n
        if n.endswith(".__init__"):  # calling the class builds one
            targets[id(resolve(n.rsplit(".", 1)[0]))] = n
    alias: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
    hits = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute)):
            parts = []
            n = node
            while isinstance(n, ast.Attribute):
                parts.append(n.attr)
                n = n.value
            if isinstance(n, ast.Name) and n.id in alias:
                obj = _loaded(".".join([alias[n.id], *reversed(parts)]))
                if obj is not None and id(obj) in targets:
                    hits.add(targets[id(obj)])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                obj = _loaded(f"{node.module}.{a.name}")
                if obj is not None and id(obj) in targets:
                    hits.add(targets[id(obj)])
    return sorted(hits)
