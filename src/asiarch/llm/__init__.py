"""LLM backends behind one protocol: Claude (anthropic SDK) and, in a later release, the offline proposer."""

from asiarch.llm.anthropic_backend import AnthropicBackend, AnthropicConfig, Prices
from asiarch.llm.budget import SharedUsdBudget, UsdAccount, UsdBudget
from asiarch.llm.protocol import BudgetExceeded, LLMBackend, LLMError, LLMResult, MalformedOutput, Usage, schema_errors
from asiarch.llm.templates import render

__all__ = [
    "AnthropicBackend", "AnthropicConfig", "BudgetExceeded", "LLMBackend", "LLMError", "LLMResult",
    "MalformedOutput", "Prices", "SharedUsdBudget", "UsdAccount", "UsdBudget", "Usage", "render", "schema_errors",
]
