"""Claude through the anthropic SDK: structured output by forced tool use, retries, budget, caching.

The key comes from ``ANTHROPIC_API_KEY`` and the endpoint from ``ANTHROPIC_BASE_URL`` (the
SDK's own variables). The SDK's retries are switched off so that this backend owns the
policy: exponential backoff with jitter on 429/500/529, connection errors and timeouts,
honouring ``retry-after``. A reply whose tool input breaks the schema gets one repair
request, then a clear ``MalformedOutput``. The long, stable system prompt is marked for
prompt caching. A semaphore bounds concurrent requests, and a USD budget stops new
requests once spent (``BudgetExceeded``) so a campaign can finish what it has.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asiarch.llm.templates import render
from asiarch.memory.redact import Redactor
from asiarch.llm.budget import SharedUsdBudget, UsdBudget
from asiarch.llm.protocol import LLMError, LLMResult, MalformedOutput, Usage, schema_errors

if TYPE_CHECKING:
    import anthropic

RETRYABLE_STATUS = (408, 409, 429, 500, 502, 503, 504, 529)


@dataclass
class Prices:
    """USD per million tokens."""

    input: float = 3.0
    output: float = 15.0
    cache_write: float = 3.75
    cache_read: float = 0.30

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input + usage.output_tokens * self.output
                + usage.cache_write_tokens * self.cache_write + usage.cache_read_tokens * self.cache_read) / 1e6


@dataclass
class AnthropicConfig:
    """The defaults equal ``conf/llm/anthropic.yaml``, which sets every field but the secret ``api_key``."""

    model: str = "claude-sonnet-5"
    max_tokens: int = 8192
    temperature: float | None = None  # SDK 2.x has no sampling arguments; set to send one in the body
    timeout_s: float = 120.0
    max_attempts: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_concurrency: int = 4
    budget_usd: float | None = 50.0
    prompt_caching: bool = True
    prices: Prices = field(default_factory=Prices)
    api_key: str | None = None  # None: ANTHROPIC_API_KEY
    base_url: str | None = None  # None: ANTHROPIC_BASE_URL or the SDK's default

    def __post_init__(self) -> None:
        if isinstance(self.prices, dict):
            self.prices = Prices(**self.prices)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AnthropicConfig":
        """From the composed ``llm`` section (its ``name`` key selects the backend, not a field)."""
        from asiarch.config import build_dataclass

        values = {k: v for k, v in dict(values).items() if k != "name"}
        return build_dataclass(cls, values, "llm")


class AnthropicBackend:
    name = "anthropic"

    def __init__(self, config: AnthropicConfig | None = None, client: anthropic.Anthropic | None = None):
        import anthropic  # here, not at import: every process that reads the LLM protocol would pay ~2 s for the SDK

        self.config = config or AnthropicConfig()
        cfg = self.config
        self.client = client or anthropic.Anthropic(
            api_key=cfg.api_key, base_url=cfg.base_url, timeout=cfg.timeout_s, max_retries=0
        )
        self.budget: UsdBudget | SharedUsdBudget = UsdBudget(cfg.budget_usd)
        # prompts quote candidates' errors: no secret leaves in a request (no length cut here)
        self._redactor = Redactor.from_environment(max_chars=sys.maxsize).with_secrets(cfg.api_key)
        self._slots = threading.Semaphore(cfg.max_concurrency)
        self._rng = random.Random()

    # ------------------------------------------------------------------ the protocol call


    def share_budget(self, account: Any) -> None:
        """Draw on ``account`` (a ``UsdAccount`` actor) instead of this copy's own budget; copies keep it."""
        self.budget = SharedUsdBudget(account)

    def __getstate__(self) -> dict[str, Any]:
        """Travel as the configuration (and the shared account): each agent actor builds its own client
        (an HTTP pool does not pickle) and, with a shared account, draws on the campaign's one budget."""
        shared = self.budget.account if isinstance(self.budget, SharedUsdBudget) else None
        return {"config": self.config, "account": shared}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])
        if state.get("account") is not None:
            self.share_budget(state["account"])

    def complete(self, role: str, system: str, messages: list[dict[str, Any]], schema: dict[str, Any]) -> LLMResult:
        tool = {"name": f"submit_{role}", "description": f"Submit the {role}'s answer.", "input_schema": schema}
        system, conversation = self._redactor.text(system), list(self._redactor.value(list(messages)))
        usage = Usage()
        response, call_usage = self._create(system, conversation, tool)
        usage += call_usage
        data, errors, block = self._tool_input(response, tool["name"], schema)
        repaired = False
        if errors:
            # one repair request: show the model its own call and what was wrong with it
            conversation += [
                {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in response.content]},
                {"role": "user", "content": self._repair_content(block, tool["name"], errors)},
            ]
            response, call_usage = self._create(system, conversation, tool)
            usage += call_usage
            data, errors, _ = self._tool_input(response, tool["name"], schema)
            if errors:
                raise MalformedOutput(f"{role}: reply still breaks the schema after one repair request: {'; '.join(errors)}")
            repaired = True
        return LLMResult(data=data, usage=usage, model=response.model, repaired=repaired)

    # ------------------------------------------------------------------ internals

    def _system_blocks(self, system: str) -> list[dict[str, Any]]:
        block: dict[str, Any] = {"type": "text", "text": system}
        if self.config.prompt_caching:
            block["cache_control"] = {"type": "ephemeral"}  # the long stable prefix is read from cache
        return [block]

    def _create(self, system: str, messages: list[dict[str, Any]], tool: dict[str, Any]):
        import anthropic

        cfg = self.config
        last_error: Exception | None = None
        retries = 0
        for attempt in range(cfg.max_attempts):
            self.budget.check()
            started = time.monotonic()
            with self._slots:
                try:
                    response = self.client.messages.create(
                        model=cfg.model, max_tokens=cfg.max_tokens, system=self._system_blocks(system),
                        messages=messages, tools=[tool], tool_choice={"type": "tool", "name": tool["name"]},
                        extra_body={"temperature": cfg.temperature} if cfg.temperature is not None else None,
                    )
                except anthropic.APIStatusError as err:
                    if err.status_code not in RETRYABLE_STATUS:
                        raise LLMError(f"Anthropic API error {err.status_code}: {err.message}") from err
                    last_error, delay = err, self._retry_after(err.response) or self._backoff(attempt)
                except (anthropic.APITimeoutError, anthropic.APIConnectionError) as err:
                    last_error, delay = err, self._backoff(attempt)
                except (anthropic.APIResponseValidationError, json.JSONDecodeError) as err:  # a malformed body
                    last_error, delay = err, self._backoff(attempt)
                else:
                    usage = self._usage(response, time.monotonic() - started, retries)
                    self.budget.charge(usage.usd)
                    return response, usage
            retries += 1
            if attempt + 1 < cfg.max_attempts:
                time.sleep(delay)
        raise LLMError(f"Anthropic request failed after {cfg.max_attempts} attempts: {type(last_error).__name__}: {last_error}")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        cap = min(self.config.backoff_max_s, self.config.backoff_base_s * 2**attempt)
        return self._rng.uniform(0, cap)

    def _retry_after(self, response) -> float | None:
        value = response.headers.get("retry-after") if response is not None else None
        try:
            return min(float(value), self.config.backoff_max_s) if value is not None else None
        except ValueError:
            return None

    def _usage(self, response, latency: float, retries: int) -> Usage:
        u = response.usage
        usage = Usage(calls=1, input_tokens=u.input_tokens or 0, output_tokens=u.output_tokens or 0,
                      cache_read_tokens=getattr(u, "cache_read_input_tokens", None) or 0,
                      cache_write_tokens=getattr(u, "cache_creation_input_tokens", None) or 0,
                      latency_s=latency, retries=retries)
        usage.usd = self.config.prices.cost(usage)
        return usage

    @staticmethod
    def _tool_input(response, tool_name: str, schema: dict[str, Any]):
        blocks = [b for b in response.content if getattr(b, "type", None) == "tool_use" and b.name == tool_name]
        if not blocks:
            kinds = [getattr(b, "type", "?") for b in response.content]
            return None, [f"no call of tool '{tool_name}' in the reply (got {kinds})"], None
        data = blocks[0].input
        if not isinstance(data, dict):
            return None, [f"tool input is {type(data).__name__}, expected an object"], blocks[0]
        return data, schema_errors(data, schema), blocks[0]

    @staticmethod
    def _repair_content(block, tool_name: str, errors: list[str]) -> list[dict[str, Any]] | str:
        text = render("repair_output", errors="\n".join(f"- {e}" for e in errors), tool=tool_name)
        if block is None:
            return text
        return [{"type": "tool_result", "tool_use_id": block.id, "is_error": True, "content": text}]
