"""The Claude backend through the real anthropic client against a local Messages-API server."""

from __future__ import annotations

import json
import threading
import time

import pytest
from omegaconf import OmegaConf

from asiarch.config import compose
from asiarch.llm import AnthropicBackend, AnthropicConfig, BudgetExceeded, LLMError, MalformedOutput, render
from messages_server import MessagesServer, Step

PROPOSAL = {
    "type": "object",
    "required": ["name", "motivation", "code"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "motivation": {"type": "string"},
        "code": {"type": "string"},
    },
    "additionalProperties": False,
}
GOOD = {"name": "gated-delta", "motivation": "add a forget gate", "code": "class M: ..."}


@pytest.fixture(scope="module")
def server():
    with MessagesServer() as running:
        yield running


def backend(server, **overrides) -> AnthropicBackend:
    cfg = AnthropicConfig(api_key="test-key", base_url=server.url, timeout_s=1.0, backoff_base_s=0.01,
                          backoff_max_s=0.5, **overrides)
    return AnthropicBackend(cfg)


def ask(llm: AnthropicBackend):
    return llm.complete("researcher", render("system"), [{"role": "user", "content": "propose"}], PROPOSAL)


def test_structured_output_by_forced_tool_use_with_usage_and_caching(server):
    server.script(Step(tool_input=GOOD, input_tokens=1000, output_tokens=200, cache_read_tokens=4000))
    result = ask(backend(server))
    assert result.data == GOOD and not result.repaired
    u = result.usage
    assert (u.calls, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.retries) == (1, 1000, 200, 4000, 0)
    assert u.usd == pytest.approx((1000 * 3.0 + 200 * 15.0 + 4000 * 0.30) / 1e6)
    request = server.requests[0]
    assert request["tool_choice"] == {"type": "tool", "name": "submit_researcher"}
    assert request["tools"][0]["input_schema"] == PROPOSAL
    assert request["system"][0]["cache_control"] == {"type": "ephemeral"}


@pytest.mark.parametrize(
    "fault",
    [
        Step(status=429, headers={"retry-after": "0.3"}),
        Step(status=529),
        Step(status=500),
        Step(hang_s=2.0, tool_input=GOOD),  # past the 1 s client timeout
        Step(raw_body="{this is not json"),
    ],
    ids=["429-retry-after", "529-overloaded", "500", "timeout", "invalid-json"],
)
def test_transient_faults_are_retried(server, fault):
    server.script(fault, Step(tool_input=GOOD))
    started = time.monotonic()
    result = ask(backend(server))
    assert result.data == GOOD
    assert result.usage.retries == 1 and len(server.requests) == 2
    if fault.headers.get("retry-after"):
        assert time.monotonic() - started >= 0.3  # honoured, not the 10 ms backoff


def test_retries_give_up_with_a_clear_error(server):
    server.script(*[Step(status=529)] * 3)
    with pytest.raises(LLMError, match="failed after 3 attempts: .*529"):
        ask(backend(server, max_attempts=3))
    assert len(server.requests) == 3


def test_client_errors_are_not_retried(server):
    server.script(Step(status=400), Step(tool_input=GOOD))
    with pytest.raises(LLMError, match="Anthropic API error 400"):
        ask(backend(server))
    assert len(server.requests) == 1


def test_a_malformed_tool_call_gets_one_repair_request(server):
    server.script(Step(tool_input={"name": "x", "motivation": "no code"}), Step(tool_input=GOOD))
    result = ask(backend(server))
    assert result.data == GOOD and result.repaired and result.usage.calls == 2
    repair = server.requests[1]["messages"]
    assert repair[-2]["role"] == "assistant" and repair[-2]["content"][0]["type"] == "tool_use"
    feedback = repair[-1]["content"][0]
    assert feedback["type"] == "tool_result" and feedback["is_error"] is True
    assert "'code' is a required property" in feedback["content"]


def test_still_malformed_after_the_repair_fails_clearly(server):
    server.script(Step(text_only="Sure! Here is my idea..."), Step(tool_input={"name": ""}))
    with pytest.raises(MalformedOutput, match="still breaks the schema after one repair request"):
        ask(backend(server))
    assert server.requests[1]["messages"][-1]["content"].startswith("Your tool call did not match")


def test_budget_stops_new_requests(server):
    server.script(*[Step(tool_input=GOOD, input_tokens=100_000, output_tokens=10_000) for _ in range(3)])
    llm = backend(server, budget_usd=0.5)  # one call costs 0.45
    ask(llm)
    ask(llm)  # starts under the limit, ends over it
    with pytest.raises(BudgetExceeded, match="budget of \\$0.50 is spent"):
        ask(llm)
    assert len(server.requests) == 2


def test_concurrency_is_bounded(server):
    server.script(*[Step(tool_input=GOOD, hang_s=0.3) for _ in range(6)])
    llm = backend(server, max_concurrency=2)
    in_flight, peak, lock = [0], [0], threading.Lock()
    original = llm.client.messages.create

    def counting(**kwargs):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return original(**kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    llm.client.messages.create = counting
    threads = [threading.Thread(target=ask, args=(llm,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and len(server.requests) == 6


def test_conf_llm_anthropic_matches_the_dataclass():
    values = OmegaConf.to_container(compose(["llm=anthropic"]).llm)
    cfg = AnthropicConfig.from_dict(values)
    assert cfg.model == values["model"] and cfg.prices.output == values["prices"]["output"]
    fields = set(AnthropicConfig.__dataclass_fields__) - {"api_key", "base_url"}  # from the SDK's variables
    assert fields <= set(values), sorted(fields - set(values))
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['modle'\\] in config section 'llm'"):
        AnthropicConfig.from_dict({**values, "modle": "x"})


def test_prompt_templates_need_every_field():
    assert "tool `submit_x`" in render("repair_output", errors="- e", tool="submit_x")
    with pytest.raises(KeyError, match="needs a value for 'tool'"):
        render("repair_output", errors="- e")


def test_no_secret_leaves_in_a_request(server, monkeypatch):
    """A prompt quoting a candidate's error text goes out with the API key and environment secrets redacted."""
    monkeypatch.setenv("CLOUD_SECRET_TOKEN", "tok-0123456789abcdef")
    server.script(Step(tool_input=GOOD))
    leak = "training failed: KeyError('test-key') while reading tok-0123456789abcdef"
    backend(server).complete("engineer", "system prompt", [{"role": "user", "content": leak}], PROPOSAL)
    sent = json.dumps(server.requests[-1]["messages"])
    assert "tok-0123456789abcdef" not in sent and "test-key" not in sent and sent.count("[redacted]") == 2


def test_every_agent_of_a_campaign_draws_on_one_budget():
    """Three copies of the backend (as three agent actors get them) share one UsdAccount: together they
    spend at most its limit plus the requests in flight when it ran out, and each is then refused."""
    import pickle

    import ray

    from asiarch.llm import UsdAccount

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    per_call = (1200 * 3.0 + 300 * 15.0) / 1e6  # the server's default usage at the default prices
    limit = 10.5 * per_call
    with MessagesServer(responder=lambda tool, body: Step(tool_input=GOOD)) as running:
        original = backend(running, budget_usd=1000.0)  # each copy's own limit would never bind
        account = ray.remote(UsdAccount).options(num_cpus=0).remote(limit)
        original.share_budget(account)
        copies = [pickle.loads(pickle.dumps(original)) for _ in range(3)]
        refused: list[str] = []

        def agent(llm: AnthropicBackend) -> None:
            while True:
                try:
                    ask(llm)
                except BudgetExceeded as err:
                    refused.append(str(err))
                    return

        threads = [threading.Thread(target=agent, args=(llm,)) for llm in copies]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        state = ray.get(account.state.remote())
        served = len(running.requests)
    if started:
        ray.shutdown()  # the modules after this one start their own Ray
    assert len(refused) == 3 and all("budget of $" in r for r in refused)
    assert served == state["requests"] >= 11  # the account saw every request
    assert limit <= state["spent"] <= limit + 3 * per_call  # at most the in-flight requests past the limit
    assert state["spent"] == pytest.approx(served * per_call)
