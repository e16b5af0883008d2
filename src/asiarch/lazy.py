"""Package exports that load on first use (PEP 562), so a process importing a package for its light names
(records, seed sources) never pays for the heavy ones (torch, LanceDB)."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str], computed: dict[str, Callable[[], Any]] | None = None,
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a public name to the submodule that
    defines it, ``computed`` a name to the function that builds it. A name is imported (or built) once and
    then set on the package, so later lookups skip this."""
    computed = computed or {}

    def __getattr__(name: str) -> Any:
        if name in computed:
            value = computed[name]()
        elif name in exports:
            value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports) | set(computed))

    return __getattr__, __dir__
