"""The candidate contract: what a token mixer must look like to drop into the LM harness.

A mixer is a ``torch.nn.Module`` built as ``Mixer(hidden_size, num_heads, layer_idx=None,
**kwargs)`` whose ``forward(hidden_states [B, T, D], attention_mask=None, **kwargs)``
returns ``[B, T, D]``, for any batch size and length, causally (output t sees inputs <= t).
The harness only right-pads, which a causal mixer may ignore, so ``attention_mask`` is
accepted for compatibility and may be unused.

``load_mixer_class`` executes source text. Candidate code is untrusted: call it only in an
isolated worker (the sandbox and the trial processes), never in the driver.
"""

from __future__ import annotations

import inspect
import traceback
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a class is checked or loaded: the agents read this module's text only
    from torch import nn

CONSTRUCTOR_PARAMS = ("hidden_size", "num_heads", "layer_idx")
FORWARD_PARAMS = ("hidden_states", "attention_mask")
CANDIDATE_MODULE = "asiarch_candidate"


class CandidateLoadError(ValueError):
    """The source does not define exactly one class that satisfies the mixer contract."""


def _params(fn) -> tuple[list[inspect.Parameter], bool]:
    params = list(inspect.signature(fn).parameters.values())
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return named, has_var_kw


def contract_violations(cls: type) -> list[str]:
    """Every way ``cls`` breaks the contract, as readable sentences (empty when it conforms)."""
    from torch import nn

    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return [f"{getattr(cls, '__name__', cls)!r} is not a torch.nn.Module subclass"]
    problems = []
    init, has_kw = _params(cls.__init__)
    names = [p.name for p in init[1:]]  # drop self
    if names[:3] != list(CONSTRUCTOR_PARAMS):
        problems.append(f"{cls.__name__}.__init__ must start with {CONSTRUCTOR_PARAMS}, got {tuple(names[:3])}")
    else:
        if init[3].default is not None:
            problems.append(f"{cls.__name__}.__init__: layer_idx must default to None")
        extra = [p.name for p in init[4:] if p.default is inspect.Parameter.empty]
        if extra:
            problems.append(f"{cls.__name__}.__init__ has required parameters beyond the contract: {extra}")
    if not has_kw:
        problems.append(f"{cls.__name__}.__init__ must accept **kwargs")
    if cls.forward is nn.Module.forward:
        problems.append(f"{cls.__name__} does not define forward")
    else:
        fwd, fwd_kw = _params(cls.forward)
        names = [p.name for p in fwd[1:]]
        if names[:2] != list(FORWARD_PARAMS):
            problems.append(f"{cls.__name__}.forward must start with {FORWARD_PARAMS}, got {tuple(names[:2])}")
        elif fwd[2].default is not None:
            problems.append(f"{cls.__name__}.forward: attention_mask must default to None")
        if not fwd_kw:
            problems.append(f"{cls.__name__}.forward must accept **kwargs")
    return problems


def conforms(cls: type) -> bool:
    return not contract_violations(cls)


def _source_filename(module_name: str) -> str:
    """The file name the candidate's code objects carry: what tells its frames apart in a traceback."""
    return f"<{module_name}>"


def candidate_frames(err: BaseException, module_name: str = CANDIDATE_MODULE) -> list[traceback.FrameSummary]:
    """The frames of ``err`` that ran candidate code loaded by ``load_mixer_class``.

    The exceptions it was raised from (``__cause__``, ``__context__``) count too, root
    cause first, so the last frame is where the candidate's code last ran. An error with
    no such frame did not come through the candidate: the harness, the data or the
    machine failed, and the candidate is not to blame.
    """
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    filename = _source_filename(module_name)
    return [frame for exc in reversed(chain) for frame in traceback.extract_tb(exc.__traceback__)
            if frame.filename == filename]


def load_mixer_class(source: str, class_name: str | None = None, module_name: str = CANDIDATE_MODULE) -> type[nn.Module]:
    """Execute candidate ``source`` in a fresh module and return its mixer class.

    With ``class_name`` that class is returned (after checking it). Otherwise the source
    must define exactly one conforming ``nn.Module`` subclass of its own; helper modules
    with other signatures are fine.
    """
    from torch import nn

    try:
        code = compile(source, _source_filename(module_name), "exec")
    except SyntaxError as err:
        raise CandidateLoadError(f"candidate source does not parse: {err.msg} (line {err.lineno})") from err
    module = types.ModuleType(module_name)
    try:
        exec(code, module.__dict__)  # noqa: S102 - only ever called inside an isolated worker
    except Exception as err:
        raise CandidateLoadError(f"candidate source raised while executing: {type(err).__name__}: {err}") from err
    own_modules = [
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module_name
    ]
    if class_name is not None:
        cls = vars(module).get(class_name)
        if cls is None:
            raise CandidateLoadError(f"candidate source defines no class named {class_name!r}")
        problems = contract_violations(cls)
        if problems:
            raise CandidateLoadError("; ".join(problems))
        return cls
    if not own_modules:
        raise CandidateLoadError("candidate source defines no torch.nn.Module subclass")
    conforming = [cls for cls in own_modules if conforms(cls)]
    if len(conforming) > 1:
        names = ", ".join(cls.__name__ for cls in conforming)
        raise CandidateLoadError(f"candidate source defines {len(conforming)} conforming mixer classes ({names}); exactly one is allowed")
    if not conforming:
        details = "; ".join(p for cls in own_modules for p in contract_violations(cls))
        raise CandidateLoadError(f"no class satisfies the mixer contract: {details}")
    return conforming[0]


def candidate_at_fault(err: BaseException) -> bool:
    """Whether a training error is the candidate's: raised through its own code, memory aside.

    The candidate's frames decide (``asiarch.arch.contract.candidate_frames``, the rule the
    checks use too): a torch error inside a call the candidate made is the candidate's, an
    error in data loading, Ray or the harness is not. Running out of memory never is: it
    depends on what else shares the device, and the checks already bound the candidate's
    memory.
    """
    import torch

    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return False
    return isinstance(err, CandidateLoadError) or bool(candidate_frames(err))
