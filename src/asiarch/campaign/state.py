"""Where a campaign lives on disk and the small JSON record of its progress.

``runs/<name>/`` holds ``memory/`` (LanceDB), ``tune/`` (Ray Tune's experiments) and
``campaign.json`` (phase, budgets, baselines, the discovery curve); ``runs/LATEST`` names
the newest campaign so that ``asiarch status`` and friends need no arguments.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LATEST = "LATEST"
STATE_FILE = "campaign.json"
MEMORY_DIR = "memory"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class CampaignPaths:
    """The files of one campaign directory; every reader and the writer name them through this."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def memory(self) -> Path:
        return self.root / MEMORY_DIR

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def started(self) -> bool:
        """Whether the campaign has written anything yet: its record or its memory (the first write may be either)."""
        return self.state.exists() or self.memory.is_dir()


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
    if not CampaignPaths(root).state.exists():
        raise FileNotFoundError(f"no campaign named {name!r} under {output_dir.resolve()}")
    return root


def resolve_campaign(path: str | Path) -> CampaignPaths:
    """``path`` itself if it is a campaign directory, else the campaign its ``LATEST`` names.

    For readers (dashboard, report) that take either ``runs/<name>`` or ``runs``; unlike
    ``find_campaign`` it accepts a campaign that has written its memory but no record yet.
    """
    path = Path(path).expanduser().resolve()
    if CampaignPaths(path).started():
        return CampaignPaths(path)
    marker = path / LATEST
    if not marker.is_file():
        raise FileNotFoundError(f"{path} is not a campaign directory (no {STATE_FILE} or {MEMORY_DIR}/) "
                                f"and has no {LATEST} file")
    name = marker.read_text().strip()
    latest = CampaignPaths(path / name)
    if not name or not latest.started():
        raise FileNotFoundError(f"{marker} names campaign {name!r}, but {latest.root} holds no {STATE_FILE} or {MEMORY_DIR}/")
    return latest


class CampaignRecord:
    """``campaign.json`` in memory: read and changed under one lock, written atomically on every change.

    The driver's stages, the seed-baseline thread and the progress thread share it.
    """

    def __init__(self, path: Path, initial: dict[str, Any] | None = None):
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, Any] = dict(initial or {})

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return copy.deepcopy(self._data.get(key, default))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._data)

    def update(self, **changes: Any) -> None:
        """Set top-level keys and write the record."""
        with self._lock:
            self._data.update(changes, updated_at=now_iso())
            write_json_atomic(self.path, self._data)

    def set_in(self, section: str, key: str, subkey: str, value: Any) -> None:
        """``record[section][key][subkey] = value`` (e.g. a seed's baseline at one stage), then write."""
        with self._lock:
            self._data.setdefault(section, {}).setdefault(key, {})[subkey] = value
            self._data["updated_at"] = now_iso()
            write_json_atomic(self.path, self._data)
