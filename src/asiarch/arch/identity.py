"""Is a proposal one of the seeds under another name? Compared on normalised code, without running it.

Two sources are the same design when their syntax trees match once docstrings, comments,
layout and the names of the classes they define are set aside. A campaign must never
report a seed, re-derived by mutation or rewritten by an LLM, as a new design.
"""

from __future__ import annotations

import ast
from functools import lru_cache


class _Normalise(ast.NodeTransformer):
    """Drop docstrings; call every class the source defines by one name."""

    def __init__(self, class_names: set[str]):
        self.class_names = class_names

    def _drop_docstring(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    def visit_Module(self, node):
        return self.generic_visit(self._drop_docstring(node))

    def visit_FunctionDef(self, node):
        return self.generic_visit(self._drop_docstring(node))

    def visit_ClassDef(self, node):
        node.name = "Mixer" if node.name in self.class_names else node.name
        return self.generic_visit(self._drop_docstring(node))

    def visit_Name(self, node):
        if node.id in self.class_names:
            node.id = "Mixer"
        return node


def normalised_code(source: str) -> str | None:
    """A canonical text of ``source``'s syntax tree (None when it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    return ast.dump(_Normalise(names).visit(tree), annotate_fields=False, include_attributes=False)


@lru_cache(maxsize=None)
def _seed_forms() -> dict[str, str]:
    from asiarch.arch import SEED_MIXERS, seed_source

    return {name: normalised_code(seed_source(name)) for name in SEED_MIXERS}


def seed_twin(source: str) -> str | None:
    """The seed whose code ``source`` is, up to names, comments and layout (None if it is none of them)."""
    form = normalised_code(source)
    if form is None:
        return None
    return next((name for name, seed in _seed_forms().items() if seed == form), None)
