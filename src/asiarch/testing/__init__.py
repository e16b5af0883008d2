"""Helpers for asiarch's own tests and benchmarks (not used by a campaign).

``demo``: a synthetic campaign memory for dashboard and report tests; ``browser``: a
headless Chromium driver; ``training``: train one validated candidate in a Ray worker.
They ship with the package so that benchmarks and downstream projects can reuse them.
"""
