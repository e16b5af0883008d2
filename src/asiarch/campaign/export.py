"""``asiarch export ID``: a discovered mixer as one standalone Python module.

The module holds the candidate's class, the ``asiarch.arch.ops`` operators it imports
and asiarch's Triton kernels (``asiarch.kernels``) they dispatch to on CUDA (copied in, so
nothing imports asiarch), the model configuration it was trained with and its measured
results. Only torch is needed: the kernels are defined where triton imports (CUDA builds
of torch bring it) and run on CUDA tensors only; flash-linear-attention's kernels are used
when it is installed, and asiarch's SSD kernel (or the PyTorch paths) when it is not.
"""

from __future__ import annotations

import ast
import importlib
import json
import pprint
from dataclasses import asdict
from pathlib import Path
from typing import Any

from asiarch.memory.lifecycle import is_breakthrough

# every module of asiarch.arch.ops, each only importing earlier ones
OPS_ORDER = ("backend", "decay", "short_conv", "delta_rule", "ssd", "sliding_window", "channel_delta", "dplr",
             "delta_product")
KERNELS = ("ssd", "sliding_window")  # asiarch.kernels modules; the ops import them inside functions, on CUDA


class _DropAsiarchImports(ast.NodeTransformer):
    """Removes ``from asiarch... import`` inside functions: in the export those names are globals."""

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | None:
        return None if (node.module or "").startswith("asiarch") else node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        node = super().generic_visit(node)
        if isinstance(getattr(node, "body", None), list) and not node.body:
            node.body = [ast.Pass()]  # a body that held only such an import
        return node


def _module_body(path: Path, drop_imports: tuple[str, ...] = ()) -> list[ast.stmt]:
    """A module's statements without its docstring, ``__all__``, ``__future__`` and asiarch imports."""
    tree = _DropAsiarchImports().visit(ast.parse(path.read_text()))
    keep = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.Import) and all(a.name in drop_imports for a in node.names):
            continue
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            continue
        keep.append(node)
    if keep and isinstance(keep[0], ast.Expr) and isinstance(getattr(keep[0], "value", None), ast.Constant):
        keep = keep[1:]  # the module docstring
    return keep


def _kernels_source() -> str:
    """asiarch's Triton kernels, defined only where triton imports (stand-ins that say so otherwise)."""
    import asiarch.kernels as kernels

    folder = Path(kernels.__file__).parent
    body: list[ast.stmt] = []
    public: list[str] = []
    for name in KERNELS:
        module = importlib.import_module(f"asiarch.kernels.{name}")
        public += list(module.__all__)
        body += _module_body(folder / f"{name}.py", drop_imports=("triton", "triton.language"))
    stand_ins = "\n".join(
        f"def {n}(*args, **kwargs):\n    raise RuntimeError('{n} needs triton, which is not installed')" for n in public)
    guarded = ast.If(test=ast.parse("triton is not None", mode="eval").body, body=body,
                     orelse=ast.parse(stand_ins).body)
    header = ("# ---- from asiarch.kernels (" + ", ".join(KERNELS) + "): Triton, run on CUDA tensors only ----\n"
              "try:\n    import triton\n    import triton.language as tl\n"
              "except ImportError:  # the PyTorch paths still run\n    triton = None\n\n")
    return header + ast.unparse(ast.Module(body=[guarded], type_ignores=[]))


def _ops_source() -> str:
    """The operator modules concatenated, with their asiarch imports and __future__ lines removed."""
    import asiarch.arch.ops as ops

    folder = Path(ops.__file__).parent
    chunks = [_kernels_source()]
    for name in OPS_ORDER:
        keep = _module_body(folder / f"{name}.py")
        chunks.append(f"# ---- from asiarch.arch.ops.{name} ----\n" + ast.unparse(ast.Module(body=keep, type_ignores=[])))
    return "\n\n".join(chunks)


def _rewrite_candidate(code: str) -> str:
    """The candidate with ``asiarch`` imports turned into references to the copied operators."""
    tree = ast.parse(code)
    body: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("asiarch"):
            for alias in node.names:
                target = alias.asname or alias.name
                if node.module == "asiarch.arch" and alias.name == "ops":
                    body.append(ast.parse(f"{target} = _OPS").body[0])
                elif target != alias.name:
                    body.append(ast.parse(f"{target} = {alias.name}").body[0])
            continue
        if isinstance(node, ast.Import) and any(a.name.startswith("asiarch") for a in node.names):
            for alias in node.names:
                if alias.name == "asiarch.arch.ops" and alias.asname:
                    body.append(ast.parse(f"{alias.asname} = _OPS").body[0])
                else:
                    raise ValueError(f"cannot export `import {alias.name}`; use `from asiarch.arch.ops import ...`")
            continue
        body.append(node)
    return ast.unparse(ast.Module(body=body, type_ignores=[]))


def _plain(value: Any) -> Any:
    """JSON-safe Python literals (tuples to lists, unknown objects to strings)."""
    return json.loads(json.dumps(value, default=str))


def export_candidate(candidate: Any, model_config: dict[str, Any]) -> str:
    """Source text of a standalone module for ``candidate`` (a ``Candidate``)."""
    results = {"explore": asdict(candidate.explore), "verify": asdict(candidate.verify), "fitness": candidate.fitness,
               "breakthrough": is_breakthrough(candidate)}
    header = f'''"""{candidate.name}: a token mixer discovered by asiarch (candidate {candidate.id}).

{candidate.motivation.strip()}

Standalone: needs torch only (on CUDA its Triton kernels need triton, which CUDA builds of
torch bring). ``MIXER`` is the class; ``CONFIG`` the model it was trained in
(embedding -> N x [norm -> mixer -> residual -> norm -> MLP -> residual] -> norm -> head);
``RESULTS`` what the campaign measured.
"""

from __future__ import annotations

import types as _types
'''
    import asiarch.arch.ops as ops

    ops_names = list(ops.__all__)  # what a candidate may import from asiarch.arch.ops
    ops_namespace = "_OPS = _types.SimpleNamespace(" + ", ".join(f"{n}={n}" for n in ops_names) + ")"
    candidate_src = _rewrite_candidate(candidate.code)
    tree = ast.parse(candidate.code)
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    footer = (f"\n\nCONFIG = {pprint.pformat(_plain(model_config), sort_dicts=False)}\n"
              f"RESULTS = {pprint.pformat(_plain(results), sort_dicts=False)}\n"
              f"MIXER = _find_mixer({classes!r})\n")
    finder = '''

def _find_mixer(names):
    import torch.nn as _nn

    found = [globals()[n] for n in names if isinstance(globals().get(n), type) and issubclass(globals()[n], _nn.Module)]
    return found[-1]
'''
    return "\n\n".join([header, _ops_source(), ops_namespace, "# ---- the candidate ----", candidate_src]) + finder + footer
