"""Starts real Ray Serve dashboards for the serve tests: a local Ray, Serve on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Iterator

import ray
from ray import serve

from asiarch.serve import build_app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_dashboards(campaign_dir: Path, apps: dict[str, dict]) -> Iterator[str]:
    """Serve one dashboard per ``apps`` entry (route prefix -> build_app keywords); yields the base URL."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for prefix, options in apps.items():
            serve.run(build_app(campaign_dir, **options), name=f"dash{prefix.replace('/', '-')}", route_prefix=prefix)
        yield f"http://127.0.0.1:{port}"
    finally:
        if started:
            ray.shutdown()  # Serve goes with it
        else:
            serve.shutdown()
