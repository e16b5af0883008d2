"""The campaign dashboard: a Ray Serve application over a campaign's memory, read-only.

``serve_campaign(path)`` starts it (127.0.0.1:8000 by default); ``build_app(path)`` returns
the Serve application for your own ``serve.run``. ``CampaignData`` is the read-only view
that the dashboard and ``asiarch.report`` share. Ray Serve is imported only when the app
is asked for, so the offline report does not pay for it.
"""

from __future__ import annotations

from typing import Any

from asiarch.serve.data import BadRequest, CampaignData, NotFound, resolve_campaign_dir

__all__ = ["BadRequest", "CampaignData", "DEFAULT_PORT", "NotFound", "build_app", "create_api", "resolve_campaign_dir",
           "serve_campaign"]


def __getattr__(name: str) -> Any:
    if name in ("build_app", "serve_campaign", "create_api", "DEFAULT_PORT", "DEFAULT_HOST"):
        from asiarch.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'asiarch.serve' has no attribute {name!r}")
