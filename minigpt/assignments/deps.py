"""Which cells the exercises need: a backward slice over the names that cells bind and use.

Grading runs only the cells that the exercise cells depend on, so that grading a chapter does not
retrain its demo models. A cell is kept when it binds a name that a later kept cell uses, or when
it touches such a name at top level (``model.eval()``, ``train(model, …)``: it may change the
object). Names bound by imports are exempt from the second rule: calling ``torch.randn`` does not
change ``torch``. The analysis is static, so it is conservative about what it keeps; it cannot
see changes to global state (the random generator, an object reached through another name).
The checks of :mod:`minigpt.checks` use private generators, so our exercises do not depend on
the global random state; ``grade --full`` runs every cell for notebooks that do.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass, field


@dataclass
class CellNames:
    """What one cell binds (``kills``: unconditionally, at top level), imports, and uses."""

    binds: set[str] = field(default_factory=set)
    kills: set[str] = field(default_factory=set)
    imports: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)
    touches: set[str] = field(default_factory=set)  # used at top level, outside function bodies
    parsed: bool = True


def _python(source: str) -> str:
    """Cell source as plain Python: IPython magics and shell escapes translated (or dropped)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - without IPython, drop magic lines
        return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def _targets(node: ast.AST) -> set[str]:
    """Names bound by an assignment target (tuples unpacked; ``a.b``/``a[i]`` bind nothing)."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, (ast.Tuple, ast.List)):
        return set().union(*(_targets(e) for e in node.elts)) if node.elts else set()
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    return set()


def _stores(nodes) -> set[str]:
    return {n.id for node in nodes for n in ast.walk(node) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}


def _params(args: ast.arguments) -> set[str]:
    every = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    return {a.arg for a in every}


def _loads(node: ast.AST) -> set[str]:
    """Free names a node reads: inside a function, its parameters and locals do not count."""
    if isinstance(node, ast.Name):
        return {node.id} if isinstance(node.ctx, ast.Load) else set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        outer = [*node.decorator_list, *node.args.defaults, *(d for d in node.args.kw_defaults if d)]
        inner = set().union(*(_loads(s) for s in node.body)) - _params(node.args) - _stores(node.body)
        return set().union(*(_loads(n) for n in outer)) | inner
    if isinstance(node, ast.Lambda):
        outer = [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]
        return set().union(*(_loads(n) for n in outer)) | (_loads(node.body) - _params(node.args))
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        inner = set().union(*(_loads(n) for n in ast.iter_child_nodes(node)))
        return inner - _stores([g.target for g in node.generators])
    return set().union(*(_loads(n) for n in ast.iter_child_nodes(node)))


def cell_names(source: str) -> CellNames:
    """Analyse one code cell. A cell that does not parse uses and binds everything it can't see:
    it is reported with ``parsed=False`` and kept by the slice."""
    out = CellNames()
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        out.parsed = False
        return out
    for stmt in tree.body:
        for node in _top_level_nodes(stmt):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
                out.imports |= names
                out.binds |= names
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.binds.add(node.name)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    out.binds |= _targets(t)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)):
                out.binds |= _targets(node.target)
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                out.binds |= _targets(node.target)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                out.binds |= _targets(node.optional_vars)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                out.binds.add(node.name)
        if isinstance(stmt, ast.Assign):  # top level: the name is rebound whatever it was
            for t in stmt.targets:
                out.kills |= _targets(t)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.kills.add(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            out.kills |= {(a.asname or a.name).split(".")[0] for a in stmt.names if a.name != "*"}
        out.uses |= _loads(stmt)
        out.touches |= _mutated(stmt)
    return out


def _root(node: ast.AST) -> str | None:
    """``model`` for ``model``, ``model.h[0].attn`` or ``model.eval``."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _mutated(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement may change in place: ``x.a = …``, ``x[i] += …``, ``del x[i]``,
    a method call on ``x`` (``model.eval()``), or ``x`` passed to a call (``train(model, …)``).
    Compound statements (``for``, ``with``, ``if``, ``try``) are searched; function bodies are not."""
    out: set[str] = set()
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return out
    targets: list[ast.AST] = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        targets = [stmt.target]
    elif isinstance(stmt, ast.Delete):
        targets = stmt.targets
    for t in targets:
        for node in ast.walk(t):
            if isinstance(node, (ast.Attribute, ast.Subscript)) and (r := _root(node)):
                out.add(r)
    for node in _top_level_nodes(stmt):
        if isinstance(node, ast.Call):
            if isinstance(node.func, (ast.Attribute, ast.Subscript)) and (r := _root(node.func)):
                out.add(r)
            for a in [*node.args, *(k.value for k in node.keywords)]:
                if (r := _root(a)) and not isinstance(a, ast.Subscript):
                    out.add(r)
    return out


def _top_level_nodes(stmt: ast.AST):
    """The nodes of a statement that run in the cell's (global) scope: not inside function or
    class bodies, lambdas or comprehensions, whose names are local to them."""
    todo = [stmt]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(node.decorator_list)
            continue
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        todo.extend(ast.iter_child_nodes(node))


def needed_cells(sources: list[str], required: set[int]) -> set[int]:
    """Indices of the cells to run so that the ``required`` cells see what they use.

    A backward liveness pass: walking from the last cell to the first, a cell is kept if it is
    required, binds a live name, or touches a live non-module name; a kept cell makes its uses
    live, and an unconditional top-level binding ends a name's liveness above it.
    """
    names = [cell_names(s) for s in sources]
    live: set[str] = set()
    # touching a module or a builtin (torch.randn, print) does not change it
    modules: set[str] = set().union(set(dir(builtins)), *(n.imports for n in names))
    keep: set[int] = set()
    for i in range(len(sources) - 1, -1, -1):
        n = names[i]
        if (i in required or not n.parsed or n.binds & live or (n.touches & live) - modules):
            keep.add(i)
            live -= n.kills - n.uses
            live |= n.uses
    return keep
