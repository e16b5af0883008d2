"""Where a campaign lives on disk and the small JSON record of its progress.

``runs/<name>/`` holds ``memory/`` (LanceDB), ``tune/`` (Ray Tune's experiments) and
``campaign.json`` (phase, budgets, baselines, the discovery curve); ``runs/LATEST`` names
the newest campaign so that ``asiarch status`` and friends need no arguments.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LATEST = "LATEST"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class CampaignPaths:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "campaign.json"

    @property
    def memory(self) -> Path:
        return self.root / "memory"

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def results(self) -> Path:
        return self.root / "results"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no campaign at {path.parent} (missing {path.name})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the campaign record is damaged") from err


def set_latest(output_dir: Path, name: str) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / f".{LATEST}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, output_dir / LATEST)


def find_campaign(output_dir: str | Path = "runs", name: str | None = None) -> Path:
    """The directory of campaign ``name`` or, without a name, of the latest one in ``output_dir``."""
    output_dir = Path(output_dir)
    if name is None:
        marker = output_dir / LATEST
        if not marker.exists():
            raise FileNotFoundError(f"no campaign found under {output_dir.resolve()} (run `asiarch run` first, or pass --dir)")
        name = marker.read_text().strip()
    root = output_dir / name
    if not (root / "campaign.json").exists():
        raise FileNotFoundError(f"no campaign named {name!r} under {output_dir.resolve()}")
    return root
