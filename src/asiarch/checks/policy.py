"""Static policy: what candidate source may contain, decided from its AST before anything runs.

This is the first of two layers (the sandbox is the second). It rejects imports outside an
allowlist, the builtins that reach files, processes, dynamic code or introspection, dunder
attribute escapes (``().__class__.__bases__``), torch's loaders and compilers, and sources
over a size limit. It is deliberately strict: a token mixer needs tensors and modules, not
the operating system.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

DEFAULT_ALLOWED_IMPORTS = (
    "__future__",
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "math",
    "einops",
    "typing",
    "functools",
    "dataclasses",
    "fla.layers",
    "fla.ops",
    "fla.modules",
    "asiarch.arch.ops",  # the library's own vetted operators (chunkwise delta rule, SSD, short conv)
)
FORBIDDEN_BUILTINS = frozenset({
    "open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "breakpoint", "input",
    "exit", "quit", "help", "memoryview", "dir", "__builtins__", "__loader__", "__spec__", "copyright",
    "credits", "license",
})
ATTRIBUTE_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
ALLOWED_DUNDERS = frozenset({"__init__", "__name__", "__future__"})
# Attribute paths under an allowed module that still reach files, processes or native code.
FORBIDDEN_PATHS = (
    "torch.load", "torch.save", "torch.hub", "torch.jit", "torch.compile", "torch.ops", "torch.package",
    "torch.utils", "torch.multiprocessing", "torch.distributed", "torch.backends", "torch.library",
    "torch.from_file", "torch.storage", "torch.serialization", "torch.classes", "torch.cuda.memory",
)


@dataclass
class PolicyConfig:
    allowed_imports: tuple[str, ...] = DEFAULT_ALLOWED_IMPORTS
    max_source_bytes: int = 64 * 1024


@dataclass
class PolicyReport:
    violations: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)  # allowed modules the source imports (the sandbox preloads them)

    @property
    def passed(self) -> bool:
        return not self.violations


def _allowed_module(name: str, allowed: tuple[str, ...]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"], or None when the chain is not rooted at a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


class _Visitor(ast.NodeVisitor):
    def __init__(self, cfg: PolicyConfig):
        self.cfg = cfg
        self.violations: list[str] = []
        self.aliases: dict[str, str] = {}  # local name -> module or object path it stands for
        self.modules: list[str] = []

    def flag(self, node: ast.AST, message: str) -> None:
        self.violations.append(f"line {getattr(node, 'lineno', '?')}: {message}")

    # imports ------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.modules.append(alias.name)
            if not _allowed_module(alias.name, self.cfg.allowed_imports):
                self.flag(node, f"import of '{alias.name}' is not allowed (allowed: {', '.join(self.cfg.allowed_imports)})")
            local = alias.asname or alias.name.split(".")[0]
            self.aliases[local] = alias.name if alias.asname else alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            self.flag(node, "relative imports are not allowed")
            return
        self.modules.append(module)
        for alias in node.names:
            full = f"{module}.{alias.name}"
            self.modules.append(full)
            if alias.name == "*":
                self.flag(node, f"'from {module} import *' is not allowed")
            elif not (_allowed_module(module, self.cfg.allowed_imports) or _allowed_module(full, self.cfg.allowed_imports)):
                self.flag(node, f"import from '{module}' is not allowed (allowed: {', '.join(self.cfg.allowed_imports)})")
            else:
                self._check_path(node, full.split("."))
            self.aliases[alias.asname or alias.name] = full

    # names and attributes -----------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_BUILTINS:
            self.flag(node, f"use of '{node.id}' is not allowed (file, process, dynamic-code or introspection access)")
        elif node.id.startswith("__") and node.id.endswith("__") and node.id not in ALLOWED_DUNDERS:
            self.flag(node, f"dunder name '{node.id}' is not allowed")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("__") and node.attr.endswith("__") and node.attr not in ALLOWED_DUNDERS:
            self.flag(node, f"dunder attribute '.{node.attr}' is not allowed (introspection escape)")
        chain = _dotted(node)
        if chain is not None:
            root = self.aliases.get(chain[0])
            if root is not None:
                self._check_path(node, root.split(".") + chain[1:])
        self.generic_visit(node)

    def _check_path(self, node: ast.AST, parts: list[str]) -> None:
        path = ".".join(parts)
        if parts[0] == "torch" and len(parts) > 1 and parts[1].startswith("_"):
            self.flag(node, f"'{path}': torch internals are not allowed")
            return
        for forbidden in FORBIDDEN_PATHS:
            if path == forbidden or path.startswith(forbidden + "."):
                self.flag(node, f"'{path}' is not allowed (loads, saves, compiles or reaches native code)")
                return

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_BUILTINS:
            name = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                self.flag(node, f"{node.func.id}() needs a literal attribute name")
            elif name.value.startswith("__") or node.func.id in ("setattr", "delattr") and name.value.startswith("_"):
                self.flag(node, f"{node.func.id}() on '{name.value}' is not allowed")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:  # module state is harmless; keep it visible in reports
        self.generic_visit(node)


def check_policy(source: str, cfg: PolicyConfig | None = None) -> PolicyReport:
    """Every policy violation in ``source`` (empty when it may be executed in the sandbox)."""
    cfg = cfg or PolicyConfig()
    size = len(source.encode())
    if size > cfg.max_source_bytes:
        return PolicyReport([f"source is {size} bytes, over the {cfg.max_source_bytes}-byte limit"])
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        return PolicyReport([f"source does not parse: {err.msg} (line {err.lineno})"])
    visitor = _Visitor(cfg)
    visitor.visit(tree)
    modules = list(dict.fromkeys(visitor.modules)) if not visitor.violations else []
    return PolicyReport(visitor.violations, modules)
