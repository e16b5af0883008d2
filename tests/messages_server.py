"""A real HTTP server on 127.0.0.1 that speaks enough of the Anthropic Messages API for tests.

Replies are scripted: each request pops the next step, which is a tool input to return as a
``tool_use`` block, or a fault (an HTTP error with headers, a hang, a malformed body, a
reply without the tool call). Every request body is recorded for assertions.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Step:
    tool_input: dict[str, Any] | None = None  # a successful tool_use reply
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0
    raw_body: str | None = None  # sent verbatim (malformed JSON, ...)
    text_only: str | None = None  # a reply with a text block and no tool call
    input_tokens: int = 1200
    output_tokens: int = 300
    cache_read_tokens: int = 0


class MessagesServer:
    def __init__(self, responder: Callable[[str, dict[str, Any]], Step] | None = None) -> None:
        """``responder(tool_name, request_body)``: answers every request when given; else the script does."""
        self.responder = responder
        self.steps: list[Step] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with server._lock:
                    server.requests.append(body)
                    if server.responder is not None:
                        step = server.responder(body["tools"][0]["name"], body)
                    else:
                        step = server.steps.pop(0) if server.steps else Step(status=500, raw_body='{"error": "script exhausted"}')
                if step.hang_s:
                    time.sleep(step.hang_s)
                if step.status != 200:
                    kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(step.status, "api_error")
                    self._send(step.status, step.raw_body or json.dumps(
                        {"type": "error", "error": {"type": kind, "message": f"scripted {step.status}"}}), step.headers)
                    return
                if step.raw_body is not None:
                    self._send(200, step.raw_body)
                    return
                tool = body["tools"][0]["name"]
                content = ([{"type": "text", "text": step.text_only}] if step.text_only is not None else
                           [{"type": "tool_use", "id": f"toolu_{len(server.requests)}", "name": tool, "input": step.tool_input}])
                self._send(200, json.dumps({
                    "id": f"msg_{len(server.requests)}", "type": "message", "role": "assistant", "model": body["model"],
                    "content": content, "stop_reason": "tool_use", "stop_sequence": None,
                    "usage": {"input_tokens": step.input_tokens, "output_tokens": step.output_tokens,
                              "cache_read_input_tokens": step.cache_read_tokens, "cache_creation_input_tokens": 0},
                }))

            def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
                payload = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "MessagesServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, *steps: Step) -> None:
        with self._lock:
            self.steps = list(steps)
            self.requests.clear()
