"""A small driver for headless Chromium over the DevTools protocol, for the dashboard's checks.

The dashboard's tests, its benchmark and the screenshots in ``docs/`` load the page in a
real browser, click into it and read what it shows. This drives Debian's ``chromium``
(installed by ``scripts/setup.sh``) through its DevTools WebSocket with the ``websockets``
client that Ray Serve's uvicorn already brings in; no browser-automation package needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CANDIDATE_EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserError(RuntimeError):
    """Chromium could not start, or a DevTools command failed; the message says which."""


def find_chromium() -> str | None:
    """Path of a Chromium-family browser: ``$ASIARCH_CHROMIUM`` or the first of the usual names on PATH."""
    explicit = os.environ.get("ASIARCH_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else shutil.which(explicit)
    for name in CANDIDATE_EXECUTABLES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """One headless Chromium with one page, driven over DevTools. Use as a context manager.

    ``errors`` collects uncaught JavaScript exceptions and console errors of the page, so a
    caller can tell a page that rendered from one that threw.
    """

    def __init__(self, executable: str | None = None, width: int = 1440, height: int = 1000, timeout: float = 30.0):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("no Chromium found: install Debian's 'chromium' (scripts/setup.sh does) or set ASIARCH_CHROMIUM")
        self.width, self.height, self.timeout = width, height, timeout
        self.errors: list[str] = []
        self._process: subprocess.Popen | None = None
        self._profile: str | None = None
        self._socket: Any = None
        self._next_id = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "Chromium":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        from websockets.sync.client import connect

        self._profile = tempfile.mkdtemp(prefix="asiarch-chromium-")
        args = [self.executable, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}", f"--window-size={self.width},{self.height}", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self._process.poll() is not None:
                err = self._process.stderr.read() if self._process.stderr else ""
                self.close()
                raise BrowserError(f"{self.executable} exited with {self._process.returncode}: {err.strip()[-800:]}")
            if time.monotonic() > deadline:
                self.close()
                raise BrowserError(f"{self.executable} did not open its DevTools port within {self.timeout:.0f} s")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as response:
            targets = json.loads(response.read())
        pages = [t for t in targets if t.get("type") == "page"]
        if not pages:
            self.close()
            raise BrowserError("Chromium started without a page target")
        self._socket = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=self.timeout)
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Log.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1,
                  mobile=False)

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except Exception:  # noqa: BLE001 - closing a socket of a dying browser
                pass
            self._socket = None
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        if self._process is not None and self._process.stderr:
            self._process.stderr.close()
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    # ------------------------------------------------------------------ protocol

    def _note(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "exception")
            self.errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(f"console: {params['entry'].get('text', '')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = params.get("args", [])
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in args))

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events that arrive meanwhile are noted)."""
        if self._socket is None:
            raise BrowserError("the browser is not running")
        self._next_id += 1
        ident = self._next_id
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no answer to {method} within {self.timeout:.0f} s")
            try:
                message = json.loads(self._socket.recv(timeout=remaining))
            except TimeoutError:
                continue
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method} failed: {message['error'].get('message')}")
                return message.get("result", {})
            self._note(message)

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"JavaScript error in {expression[:80]!r}: "
                               f"{details.get('exception', {}).get('description') or details.get('text')}")
        return result.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot load {url}: {result['errorText']}")

    def wait_for(self, expression: str, timeout: float | None = None, interval: float = 0.02) -> Any:
        """Poll ``expression`` until it is truthy; returns its value (raises ``BrowserError`` on timeout)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last_error = None
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError as err:  # e.g. the document is still being replaced by a navigation
                value, last_error = None, err
            if value:
                return value
            if time.monotonic() > deadline:
                detail = f" (last error: {last_error})" if last_error else ""
                raise BrowserError(f"timed out waiting for {expression!r}{detail}; page errors: {self.errors or 'none'}")
            time.sleep(interval)

    def click(self, selector: str) -> None:
        """A real mouse click (pressed + released) at the centre of the first element matching ``selector``."""
        box = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)}); if (!el) return null;"
            " el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2, r.width * r.height]; })()")
        if not box:
            raise BrowserError(f"nothing matches {selector!r} to click")
        if not box[2]:
            raise BrowserError(f"{selector!r} is not visible (zero size), cannot click it")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """Write a PNG of the viewport (or the whole page) to ``path``."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1})
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
