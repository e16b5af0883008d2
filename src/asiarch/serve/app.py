"""The dashboard: a Ray Serve application (FastAPI ingress) over one campaign, read-only.

``serve_campaign(runs/<name>)`` starts Serve on 127.0.0.1 and deploys ``build_app``: a JSON
API under ``/api`` and a single page at ``/`` (plain HTML, JavaScript and inline SVG,
nothing fetched from the network, so it works on offline machines). Every request reads
the memory as it is now, so the page follows a campaign that is still running.

Campaign data (code, ideas, costs) is private: the server binds to loopback unless a
token is given, and with a token every request must carry ``Authorization: Bearer
<token>`` (the page itself may be opened once as ``/?token=<token>``; it keeps the token
in the tab's session storage and sends it as a header from then on).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import os
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.deployment import Application

from asiarch.memory import MemoryInputError
from asiarch.memory.embed import Embedder
from asiarch.serve.data import BadRequest, CampaignData, NotFound, resolve_campaign_dir

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
APP_NAME = "asiarch-dashboard"


@dataclass
class ServeStart:
    """How patiently the dashboard starts Ray Serve. The dashboard is meant to be watched while a
    campaign trains, so the machine is busy: Serve's 5 s proxy readiness check then fails and its
    proxy dies before it is up. These apply when the dashboard starts Ray itself."""

    ready_timeout_s: float = 60.0  # Serve's proxy readiness check (RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S; Serve's default 5)
    attempts: int = 3  # starts of Serve before giving up with one line saying what to try


class ServeStartError(RuntimeError):
    """Ray Serve did not come up: the message says what happened and what to try."""


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities (a diverged loss curve) become null instead of failing the response."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(_clean(content), allow_nan=False, separators=(",", ":"), default=str).encode()


def token_digest(token: str) -> str:
    """What the server keeps of a token: its SHA-256, so the secret itself is not stored in Serve's config."""
    return hashlib.sha256(token.encode()).hexdigest()


def _presented_token(request: Request, is_page: bool) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if is_page:  # a browser cannot add a header to a navigation; the page moves it to a header at once
        return request.query_params.get("token") or None
    return None


def _route_path(request: Request) -> str:
    path, root = request.scope.get("path", "/"), request.scope.get("root_path", "")
    return (path[len(root):] or "/") if root and path.startswith(root) else path


def _page_html() -> str:
    """The single page with its script and styles inlined (one request, no static routes to protect)."""
    static = resources.files("asiarch.serve") / "static"
    html = (static / "index.html").read_text()
    return (html.replace("/*STYLE*/", (static / "style.css").read_text())
                .replace("/*SCRIPT*/", (static / "app.js").read_text()))


_LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>asiarch dashboard: token needed</title></head>
<body style="font-family:sans-serif;max-width:32rem;margin:4rem auto">
<h1>Token needed</h1><p id="auth-message">This dashboard was started with a token. Enter it to continue
(or send <code>Authorization: Bearer &lt;token&gt;</code>).</p>
<form method="get"><input type="password" name="token" autofocus placeholder="token"> <button>Open</button></form>
</body></html>"""


def create_api(data: CampaignData, digest: str | None = None) -> FastAPI:
    """The FastAPI application of the dashboard over ``data``; ``digest`` is ``token_digest(token)`` or None."""
    api = FastAPI(title="asiarch dashboard", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json",
                  default_response_class=_JSON)
    page = _page_html()

    @api.middleware("http")
    async def require_token(request: Request, call_next):
        if digest is None:
            return await call_next(request)
        is_page = not _route_path(request).startswith("/api")
        presented = _presented_token(request, is_page)
        if presented is not None and hmac.compare_digest(token_digest(presented), digest):
            return await call_next(request)
        headers = {"WWW-Authenticate": "Bearer"}
        if is_page:
            return HTMLResponse(_LOGIN_PAGE, status_code=401, headers=headers)
        reason = "wrong token" if presented else "missing token"
        return _JSON({"detail": f"{reason}: this dashboard needs 'Authorization: Bearer <token>'"}, status_code=401,
                     headers=headers)

    @api.exception_handler(RequestValidationError)
    async def bad_query(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path"))
            got = error.get("input")
            shown = f" (got {got!r})" if got is not None else ""
            problems.append(f"parameter '{where}': {error.get('msg', 'invalid')}{shown}")
        return _JSON({"detail": "; ".join(problems) or "malformed request"}, status_code=400)

    @api.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return _JSON({"detail": str(exc)}, status_code=400)

    @api.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return _JSON({"detail": str(exc)}, status_code=404)

    @api.exception_handler(MemoryInputError)
    async def unreadable_memory(request: Request, exc: MemoryInputError) -> Response:
        """A memory this reader cannot open (e.g. an older schema that a writable open must migrate first)."""
        return _JSON({"detail": f"the campaign's memory cannot be read: {exc}"}, status_code=500)

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @api.get("/api/summary")
    def summary() -> Response:
        """Campaign record, live counts per status, budget used, best fitness."""
        return _JSON(data.summary())

    @api.get("/api/candidates")
    def candidates(
        status: str | None = Query(None, description="one status or several, comma-separated"),
        stage: str | None = Query(None, description="explore or verify"),
        q: str | None = Query(None, max_length=200, description="substring of the name or id"),
        sort: str = Query("fitness"),
        order: str = Query("desc"),
        offset: int = Query(0, ge=0),
        limit: int = Query(50, ge=1, le=1000),
        baselines: bool = Query(True, description="include the seed baselines"),
    ) -> Response:
        """One page of candidates, filtered and sorted."""
        return _JSON(data.candidates_page(status=status, stage=stage, q=q, sort=sort, order=order, offset=offset,
                                          limit=limit, baselines=baselines))

    @api.get("/api/candidates/{candidate_id}")
    def candidate(candidate_id: str) -> Response:
        """Every field of one candidate, its parent's code, a diff against it and its relatives."""
        return _JSON(data.candidate(candidate_id))

    @api.get("/api/candidates/{candidate_id}/lineage")
    def candidate_lineage(candidate_id: str, max_descendants: int = Query(300, ge=0, le=20000)) -> Response:
        """Ancestors and (nearest) descendants of one candidate as nodes and edges."""
        return _JSON(data.lineage(candidate_id, max_descendants=max_descendants))

    @api.get("/api/lineage")
    def lineage(top: int = Query(0, ge=0, description="0: all; n: the n fittest, the seeds, their ancestors")) -> Response:
        """The campaign's family tree as nodes (with layout positions) and edges."""
        return _JSON(data.lineage(top=top))

    @api.get("/api/insights")
    def insights(q: str = Query("", max_length=500), k: int = Query(10, ge=1, le=100), mode: str = Query("hybrid"),
                 kind: str | None = Query(None)) -> Response:
        """Insights matching a query, or the newest ones."""
        return _JSON(data.insights(q=q, k=k, mode=mode, kind=kind))

    @api.get("/api/fitness")
    def fitness() -> Response:
        """Fitness of every scored candidate in proposal order, with the best so far."""
        return _JSON(data.fitness_over_time())

    @api.get("/api/discovery")
    def discovery() -> Response:
        """Cumulative breakthroughs against device-hours (and best fitness against device-hours)."""
        return _JSON(data.discovery())

    @api.get("/api/health")
    def health() -> Response:
        return _JSON({"ok": True, "campaign": data.name, "version": data.version()})

    return api


@serve.deployment(name=APP_NAME, num_replicas=1, max_ongoing_requests=32, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Dashboard:
    """The Serve replica: holds one ``CampaignData`` (its memory handle and summary cache) per process."""

    def __init__(self, campaign_dir: str, digest: str | None, embedder: Embedder | None):
        self._data = CampaignData(campaign_dir, embedder=embedder)
        self._digest = digest

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self._data, self._digest)


def build_app(campaign_dir: str | Path, token: str | None = None, embedder: Embedder | None = None) -> Application:
    """The dashboard over ``campaign_dir`` (a campaign, or a runs folder with LATEST) as a Serve application.

    ``token``: require ``Authorization: Bearer <token>`` on every request. ``embedder``: only
    for memories whose embeddings are not MiniLM's (insight search by meaning).
    """
    root = resolve_campaign_dir(campaign_dir)  # fail here, with the path, rather than in a replica
    return Dashboard.bind(root, token_digest(token) if token else None, embedder)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise OSError(f"cannot serve on {host}:{port}: {err.strerror or err}; choose another port") from None


def serve_campaign(campaign_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                   token: str | None = None, blocking: bool = True, route_prefix: str = "/",
                   embedder: Embedder | None = None, start: ServeStart | None = None) -> str:
    """Start Ray Serve and deploy the dashboard of ``campaign_dir``; returns the page's URL.

    Refuses a non-loopback ``host`` without a ``token``: the page shows every candidate's
    code and the campaign's costs. With ``blocking`` it serves until Ctrl-C (or SIGTERM), then
    stops Ray if it started it (else removes just this application); a second Ctrl-C exits at
    once. Otherwise it returns at once and leaves both running. Raises ``ServeStartError`` when
    Serve does not come up in ``start.attempts`` tries.
    """
    import ray

    start = start or ServeStart()
    token = token or None
    if not is_loopback(host) and token is None:
        raise ValueError(f"refusing to serve campaign data on {host} without a token: pass a token "
                         f"(asiarch serve --token ...) or bind {DEFAULT_HOST}")
    app = build_app(campaign_dir, token=token, embedder=embedder)
    started_ray = not ray.is_initialized()
    if started_ray:
        _check_port_free(host, port)
        init_ray_for_serve(start)
    name = APP_NAME if route_prefix == "/" else f"{APP_NAME}{route_prefix.replace('/', '-')}"
    try:
        start_serve(app, name, host, port, route_prefix, start, quiet=not blocking)
    except BaseException:
        if started_ray:
            ray.shutdown()
        raise
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}{route_prefix.rstrip('/')}/"
    if not blocking:
        return url
    hint = " (open it once with ?token=<token>, or send 'Authorization: Bearer <token>')" if token else ""
    print(f"asiarch dashboard: {url}{hint}; Ctrl-C stops it", flush=True)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, _frame: Any) -> None:
            if stop.is_set():  # a second Ctrl-C: do not wait for the clean stop
                os._exit(128 + signum)
            print("stopping the dashboard (Ctrl-C again forces it)", flush=True)
            stop.set()

        signal.signal(signal.SIGINT, on_signal)  # explicit: whatever handler Ray installed, Ctrl-C stops it
        signal.signal(signal.SIGTERM, on_signal)  # `kill` stops it as cleanly as Ctrl-C
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if started_ray:
            ray.shutdown()  # takes Serve down with it, without waiting on the controller's graceful exit
        else:
            serve.delete(name)  # someone else's cluster: remove only our application
    return url


def init_ray_for_serve(start: ServeStart, num_cpus: int | None = None) -> None:
    """A local Ray whose Serve waits ``start.ready_timeout_s`` for its proxy (the setting is read by Serve's
    controller, a process Ray starts now with this environment)."""
    import ray

    saved = os.environ.get("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S")
    os.environ["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] = saved or str(start.ready_timeout_s)
    try:
        with warnings.catch_warnings():  # Ray forks its workers after LanceDB is loaded; harmless here
            warnings.filterwarnings("ignore", message="lancedb fork support")
            ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    finally:
        if saved is None:
            os.environ.pop("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", None)


def start_serve(app: Application, name: str, host: str, port: int, route_prefix: str, start: ServeStart,
                quiet: bool) -> None:
    """``serve.start`` and ``serve.run``, again after a proxy that died while starting (a busy machine)."""
    from ray.exceptions import RayError
    from ray.serve.exceptions import RayServeException

    last: BaseException | None = None
    for attempt in range(1, start.attempts + 1):
        began = time.monotonic()
        if not quiet:
            print(f"starting Ray Serve (attempt {attempt} of {start.attempts}; on a busy machine this can take "
                  f"minutes)...", flush=True)
        try:
            serve.start(http_options={"host": host, "port": port})
            serve.run(app, name=name, route_prefix=route_prefix)
            return
        except (RayError, RayServeException, TimeoutError, RuntimeError) as err:
            last = err
            if not quiet:
                print(f"Ray Serve did not come up after {time.monotonic() - began:.0f}s: {type(err).__name__}; "
                      f"starting it again", flush=True)
            try:
                serve.shutdown()
            except Exception:  # noqa: BLE001 - a half-started Serve: the next start replaces it
                pass
    first_line = str(last).strip().splitlines()[0][:200] if last is not None and str(last).strip() else ""
    raise ServeStartError(
        f"Ray Serve did not come up in {start.attempts} attempts (last: {type(last).__name__}: {first_line}); the "
        f"machine is probably saturated: try again when a training run has finished, or give Serve longer with "
        f"--ready-timeout (now {start.ready_timeout_s:g}s)")
