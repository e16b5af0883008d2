"""Static policy: what candidate source may contain, decided from its AST before anything runs.

This is the first of two layers (the sandbox is the second), a filter and not a wall: no
AST policy over Python and torch is airtight. It rejects imports outside an allowlist, the
builtins that reach files, processes, dynamic code or introspection, dunder attribute
escapes (``().__class__.__bases__``), torch's loaders and compilers, and sources over a
size limit. It also closes the cheap routes found by hostile candidates: a module reached
as an attribute of an allowed one (``torch.os``, ``F.np``) or used as a value (``T = torch``),
underscore attributes outside the mixer's own ``self``, ``getattr`` on private names or as
a value, ``str.format`` fields that walk attributes, ``get_type_hints``, dunder methods
other than ``__init__``, metaclasses, decorators and calls in default arguments (code that
runs at definition), hooks, and assignments to attributes of imported modules
(``F.cross_entropy = ...``). It is deliberately strict: a token mixer needs tensors and
modules, not the operating system.
"""

from __future__ import annotations

import ast
import importlib
import string
import sys
import types
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
ALLOWED_PRIVATE = frozenset({"_no_weight_decay"})  # fla's marker for parameters the optimiser must not decay
FORBIDDEN_NAMES = frozenset({"get_type_hints", "attrgetter", "methodcaller", "ForwardRef"})  # evaluate strings
SAFE_DECORATORS = frozenset({"staticmethod", "classmethod", "property", "torch.no_grad", "torch.inference_mode",
                             "torch.enable_grad", "functools.cache", "functools.lru_cache"})
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


def _on_self(node: ast.Attribute) -> bool:
    """``self._x`` (one level: the mixer's own private state and methods)."""
    return isinstance(node.value, ast.Name) and node.value.id == "self"


def _format_fields(template: str) -> list[tuple]:
    try:
        return list(string.Formatter().parse(template))
    except ValueError:
        return [("", "[unparseable]", "", None)]


def _walk(parts: list[str]):
    """The objects along the dotted path ``parts`` in an allowed (trusted) library, as far as they
    can be found: attributes first, a not-yet-imported submodule otherwise."""
    try:
        obj = sys.modules.get(parts[0]) or importlib.import_module(parts[0])
    except Exception:
        return
    yield obj
    for i, attr in enumerate(parts[1:], start=2):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except Exception:
                return
        except Exception:
            return
        yield obj


def _is_module(path: str) -> bool:
    found = list(_walk(path.split(".")))
    return len(found) == len(path.split(".")) and isinstance(found[-1], types.ModuleType)


def _module_reached(parts: list[str], allowed: tuple[str, ...]) -> str | None:
    """The name of a disallowed module that the attribute path ``parts`` passes through, if any
    (``torch.os`` is the ``os`` module; ``F.torch.os`` too)."""
    if not _allowed_module(parts[0], allowed):
        return None
    for obj in _walk(parts):
        if isinstance(obj, types.ModuleType) and not _allowed_module(obj.__name__, allowed):
            return obj.__name__
    return None


class _Visitor(ast.NodeVisitor):
    def __init__(self, cfg: PolicyConfig):
        self.cfg = cfg
        self.violations: list[str] = []
        self.aliases: dict[str, str] = {}  # local name -> module or object path it stands for
        self.modules: list[str] = []
        self._roots: set[int] = set()  # Name nodes that root an attribute chain (``torch`` in ``torch.x``)
        self._called: set[int] = set()  # Name nodes that are the callee of a call

    def flag(self, node: ast.AST, message: str) -> None:
        self.violations.append(f"line {getattr(node, 'lineno', '?')}: {message}")

    # imports ------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.modules.append(alias.name)
            if not _allowed_module(alias.name, self.cfg.allowed_imports):
                self.flag(node, f"import of '{alias.name}' is not allowed (allowed: {', '.join(self.cfg.allowed_imports)})")
            else:
                self._check_path(node, alias.name.split("."))
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
        elif node.id in ATTRIBUTE_BUILTINS and id(node) not in self._called:
            self.flag(node, f"'{node.id}' may only be called, not used as a value")
        elif node.id in FORBIDDEN_NAMES:
            self.flag(node, f"'{node.id}' is not allowed (it evaluates strings as code or attribute paths)")
        elif node.id in self.aliases and id(node) not in self._roots and _is_module(self.aliases[node.id]):
            self.flag(node, f"module '{self.aliases[node.id]}' may only be used through its attributes, not as a value")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("__") and node.attr.endswith("__") and node.attr not in ALLOWED_DUNDERS:
            self.flag(node, f"dunder attribute '.{node.attr}' is not allowed (introspection escape)")
        elif (node.attr.startswith("_") and node.attr not in ALLOWED_PRIVATE | ALLOWED_DUNDERS
              and not _on_self(node)):
            self.flag(node, f"private attribute '.{node.attr}' is not allowed outside the mixer's own self")
        elif "hook" in node.attr.lower():
            self.flag(node, f"'.{node.attr}': hooks run code outside forward and are not allowed")
        elif node.attr in FORBIDDEN_NAMES or node.attr in ("format_map",):
            self.flag(node, f"'.{node.attr}' is not allowed (it evaluates strings as code or attribute paths)")
        chain = _dotted(node)
        if chain is not None:
            root_node = node
            while isinstance(root_node, ast.Attribute):
                root_node = root_node.value
            self._roots.add(id(root_node))
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
        reached = _module_reached(parts, self.cfg.allowed_imports)
        if reached is not None:
            self.flag(node, f"'{path}' is the module '{reached}', which is not allowed (allowed: "
                            f"{', '.join(self.cfg.allowed_imports)})")

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name):
            self._called.add(id(node.func))
        if isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_BUILTINS:
            target = node.args[0] if node.args else None
            name = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                self.flag(node, f"{node.func.id}() needs a literal attribute name")
            elif name.value.startswith("_"):
                self.flag(node, f"{node.func.id}() on '{name.value}' is not allowed (private name)")
            elif node.func.id in ("setattr", "delattr") and isinstance(target, ast.Name) and target.id in self.aliases:
                self.flag(node, f"{node.func.id}() on the imported '{target.id}' is not allowed")
            if isinstance(target, ast.Name):
                self._roots.add(id(target))  # getattr(torch, "x") is torch.x: its path is checked below
                if target.id in self.aliases and isinstance(name, ast.Constant) and isinstance(name.value, str):
                    self._check_path(node, self.aliases[target.id].split(".") + [name.value])
        if isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            receiver = node.func.value
            if not (isinstance(receiver, ast.Constant) and isinstance(receiver.value, str)):
                self.flag(node, "str.format() is only allowed on a string literal (use an f-string)")
            elif any(field and any(ch in field for ch in ".[") for _, field, _, _ in _format_fields(receiver.value)):
                self.flag(node, "str.format() fields may not reach attributes or items (use an f-string)")
        self.generic_visit(node)

    # code that runs at definition, and writes into other modules ------------------------------
    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for keyword in node.keywords:
            self.flag(node, f"class keyword '{keyword.arg}=' is not allowed (metaclasses run code at definition)")
        self._check_decorators(node)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if node.name.startswith("__") and node.name.endswith("__") and node.name not in ALLOWED_DUNDERS:
            self.flag(node, f"dunder method '{node.name}' is not allowed (runs outside forward: teardown, "
                            "pickling, subclassing, attribute access)")
        if node.name in ("get_extra_state", "set_extra_state"):
            self.flag(node, f"'{node.name}' is not allowed (it puts arbitrary objects into checkpoints)")
        self._check_decorators(node)
        for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
            if any(isinstance(n, (ast.Call, ast.Lambda)) for n in ast.walk(default)):
                self.flag(default, f"default arguments of '{node.name}' may not call anything (they run at definition)")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def _check_decorators(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            chain = _dotted(target)
            resolved = None
            if chain is not None:
                root = self.aliases.get(chain[0], chain[0])
                resolved = ".".join([root, *chain[1:]])
            if resolved not in SAFE_DECORATORS:
                self.flag(decorator, f"decorator '{resolved or ast.unparse(decorator)}' is not allowed (allowed: "
                                     f"{', '.join(sorted(SAFE_DECORATORS))})")

    def _check_store(self, target: ast.AST) -> None:
        for node in ast.walk(target):
            if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, (ast.Store, ast.Del)):
                base = node.value
                while isinstance(base, (ast.Attribute, ast.Subscript)):
                    base = base.value
                if isinstance(base, ast.Name) and base.id in self.aliases:
                    self.flag(node, f"assigning into the imported '{base.id}' is not allowed (it changes every "
                                    "user of that module, including the checks and the trainer)")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_store(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_store(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_store(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._check_store(target)
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
