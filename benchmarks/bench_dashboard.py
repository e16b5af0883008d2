"""Dashboard speed at campaign scale: page load in headless Chromium and API latency at 10k candidates.

A synthetic campaign of ``--rows`` candidates (``asiarch.testing.demo``) is served by the real
Ray Serve app on 127.0.0.1. Each measurement is printed beside a baseline measured in the
same run on the same data:

- page load (navigation start until the table shows rows; and until every section, the
  10k-point fitness plot and the lineage tree included, is drawn) against Chromium loading
  a static HTML file holding the same 50 rows already rendered (the browser's own floor);
- ``/api/candidates`` p50 (one page of 50, sorted by fitness, through HTTP, Serve's proxy
  and the replica) against reading that page straight from LanceDB in-process (scan the
  same columns, sort, slice) and against ``Memory.top_k(50)``.

    .venv/bin/python benchmarks/bench_dashboard.py [--rows 10000] [--requests 50] [--loads 5]
"""

from __future__ import annotations

import argparse
import html
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pyarrow.compute as pc  # noqa: E402
import requests  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from asiarch.memory import Memory  # noqa: E402
from asiarch.testing.browser import Chromium, find_chromium  # noqa: E402
from asiarch.serve.data import SUMMARY_COLUMNS  # noqa: E402
from asiarch.testing.demo import demo_embedder, make_demo_campaign  # noqa: E402


def latencies_ms(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    fn(0)  # warm-up
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def page_load_ms(browser: Chromium, url: str, ready: str, marks: tuple[str, ...]) -> list[float]:
    """Milliseconds from navigation start to each performance mark, read in the page."""
    browser.navigate("about:blank")
    browser.navigate(url)
    browser.wait_for(ready, timeout=120)
    return [browser.evaluate(f"performance.getEntriesByName('{mark}')[0].startTime") for mark in marks]


def static_table(rows: list[dict], path: Path) -> Path:
    """The same rows as a pre-rendered HTML table: what a browser needs at the least to show them."""
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(k)))}</td>" for k in ("name", "status", "stage", "generation",
                                                                          "fitness", "explore_eval_loss")) + "</tr>"
        for r in rows)
    path.write_text("<!doctype html><html><body><table id='t'><tbody>" + cells + "</tbody></table>"
                    "<script>performance.mark('asiarch:table')</script></body></html>")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    console = Console(width=150)
    if find_chromium() is None:
        raise SystemExit("bench_dashboard needs Chromium: run scripts/setup.sh (installs Debian's chromium)")
    import ray
    from ray import serve

    from asiarch.serve import serve_campaign

    workdir = Path(tempfile.mkdtemp(prefix="asiarch-bench-dashboard-"))
    results: list[tuple[str, str, str, str]] = []
    try:
        with console.status(f"writing a synthetic campaign of {args.rows:,} candidates"):
            start = time.perf_counter()
            root = make_demo_campaign(workdir / "runs", n=args.rows, seed=0)
            console.print(f"campaign written in {time.perf_counter() - start:.1f} s: {root}")
        port = free_port()
        with console.status("starting Ray Serve"):
            start = time.perf_counter()
            url = serve_campaign(root, port=port, blocking=False, embedder=demo_embedder())
            console.print(f"Serve app up in {time.perf_counter() - start:.1f} s at {url}")
        try:
            session = requests.Session()

            def api_page(i: int) -> None:
                response = session.get(f"{url}api/candidates", params={"sort": "fitness", "order": "desc", "limit": 50,
                                                                        "offset": 0}, timeout=60)
                response.raise_for_status()

            with Chromium(width=1440, height=1000, timeout=120) as browser:
                marks = ("asiarch:table", "asiarch:complete")
                ready = "document.body && document.body.dataset.complete === '1'"
                cold = page_load_ms(browser, url, ready, marks)  # first load: the replica reads the memory
                warm = [page_load_ms(browser, url, ready, marks) for _ in range(args.loads)]
                table_ms = statistics.median(w[0] for w in warm)
                complete_ms = statistics.median(w[1] for w in warm)
                first_page = session.get(f"{url}api/candidates", params={"limit": 50}, timeout=60).json()["items"]
                page = static_table(first_page, workdir / "static.html")
                static_ms = statistics.median(
                    page_load_ms(browser, page.as_uri(), "performance.getEntriesByName('asiarch:table').length",
                                 ("asiarch:table",))[0]
                    for _ in range(args.loads))
                assert not browser.errors, browser.errors
            results.append(("page load: table shows rows (cold, first load)", f"{cold[0]:.0f} ms",
                            f"static HTML table {static_ms:.0f} ms", f"{cold[0] / static_ms:.1f}x"))
            results.append((f"page load: table shows rows (warm, median of {args.loads})", f"{table_ms:.0f} ms",
                            f"static HTML table {static_ms:.0f} ms", f"{table_ms / static_ms:.1f}x"))
            results.append((f"page load: every section drawn (median of {args.loads})", f"{complete_ms:.0f} ms",
                            f"static HTML table {static_ms:.0f} ms", f"{complete_ms / static_ms:.1f}x"))

            api_p50, api_p95 = latencies_ms(api_page, args.requests)
            memory = Memory(root / "memory", read_only=True)

            def raw_page(i: int) -> None:
                table = memory.scan_candidates(root.name, SUMMARY_COLUMNS)
                order = pc.sort_indices(table, sort_keys=[("explore_fitness", "descending"), ("id", "ascending")],
                                        null_placement="at_end")
                table.take(order[:50]).to_pylist()

            raw_p50, raw_p95 = latencies_ms(raw_page, args.requests)
            topk_p50, _ = latencies_ms(lambda i: memory.top_k(50, campaign=root.name), args.requests)
            results.append(("GET /api/candidates (50 by fitness), p50 / p95", f"{api_p50:.1f} / {api_p95:.1f} ms",
                            f"raw LanceDB scan+sort {raw_p50:.1f} / {raw_p95:.1f} ms", f"{api_p50 / raw_p50:.2f}x"))
            results.append(("", "", f"Memory.top_k(50) {topk_p50:.1f} ms", f"{api_p50 / topk_p50:.2f}x"))
            counts_p50, _ = latencies_ms(lambda i: memory.campaign_counts(root.name), args.requests)
            summary = session.get(f"{url}api/summary", timeout=60).json()
            counts = memory.campaign_counts(root.name)
            assert (summary["counts"], summary["trained"], summary["verified"]) == (
                counts.by_status, counts.trained, counts.verified), "the dashboard and the memory disagree"
            results.append(("Memory.campaign_counts (what GET /api/summary caches per version)",
                            f"{counts_p50:.1f} ms", "", ""))
            for label, path, params in (("GET /api/summary", "api/summary", {}),
                                        ("GET /api/candidates?status=finished&sort=name", "api/candidates",
                                         {"status": "finished", "sort": "name", "order": "asc"}),
                                        ("GET /api/candidates/{id}", f"api/candidates/{first_page[0]['id']}", {}),
                                        ("GET /api/fitness (all points)", "api/fitness", {}),
                                        ("GET /api/lineage?top=150", "api/lineage", {"top": 150})):
                p50, p95 = latencies_ms(lambda i: session.get(url + path, params=params, timeout=60).raise_for_status(),
                                        max(10, args.requests // 5))
                results.append((f"{label}, p50 / p95", f"{p50:.1f} / {p95:.1f} ms", "", ""))
        finally:
            serve.shutdown()
            ray.shutdown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = Table(title=f"asiarch dashboard at {args.rows:,} candidates ({os.cpu_count()} CPUs)")
    for column in ("measurement", "dashboard", "baseline (same run, same data)", "ratio"):
        table.add_column(column)
    for row in results:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
