"""Starts real Ray Serve dashboards for the serve tests: a local Ray, Serve on a free loopback port, started
the way ``asiarch serve`` starts it (patient proxy readiness check, again after a proxy that died while
starting: the other xdist worker keeps both cores busy with campaigns)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Iterator

import ray
from ray import serve

from asiarch.serve import build_app
from asiarch.serve.app import ServeStart, init_ray_for_serve, start_serve


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_dashboards(campaign_dir: Path, apps: dict[str, dict]) -> Iterator[str]:
    """Serve one dashboard per ``apps`` entry (route prefix -> build_app keywords); yields the base URL."""
    start = ServeStart()
    started = not ray.is_initialized()
    if started:
        init_ray_for_serve(start, num_cpus=2)
    port = free_port()
    try:
        for i, (prefix, options) in enumerate(apps.items()):
            app, name = build_app(campaign_dir, **options), f"dash{prefix.replace('/', '-')}"
            if i == 0:  # starts Serve: patiently, and again if its proxy died starting
                start_serve(app, name, "127.0.0.1", port, prefix, start, quiet=True)
            else:
                serve.run(app, name=name, route_prefix=prefix)
        yield f"http://127.0.0.1:{port}"
    finally:
        if started:
            ray.shutdown()  # Serve goes with it
        else:
            serve.shutdown()
