"""Where a campaign lives and the small JSON record of its progress.

``<output_dir>/<name>/`` holds ``memory/`` (LanceDB), ``tune/`` (Ray Tune's experiments) and
``campaign.json`` (phase, budgets, baselines, the discovery curve); ``<output_dir>/LATEST``
names the newest campaign so that ``asiarch status`` and friends need no arguments. The
output directory is a local path or an ``s3://`` prefix (``asiarch.storage``): every name
here is a ``Location`` and every write goes through ``write_text_atomic``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asiarch.storage import Location, ObjectPath, StorageSettings, location, write_text_atomic

LATEST = "LATEST"
STATE_FILE = "campaign.json"
MEMORY_DIR = "memory"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class CampaignPaths:
    """The files of one campaign directory; every reader and the writer name them through this."""

    root: Location

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def state(self) -> Location:
        return self.root / STATE_FILE

    @property
    def memory(self) -> Location:
        return self.root / MEMORY_DIR

    @property
    def baselines(self) -> Location:
        """The seed-run cache every campaign under the same output directory shares (``BaselineCache``)."""
        return self.root.parent / "baselines"

    @property
    def tune(self) -> Location:
        return self.root / "tune"

    @property
    def results(self) -> Location:
        return self.root / "results"

    def started(self) -> bool:
        """Whether the campaign has written anything yet: its record or its memory (the first write may be either)."""
        return self.state.exists() or self.memory.is_dir()


def write_json_atomic(path: Location, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def read_state(path: Location) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no campaign at {path.parent} (missing {path.name})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the campaign record is damaged") from err


def set_latest(output_dir: Location, name: str) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / LATEST, name + "\n")


def _shown(path: Location) -> str:
    return str(path if isinstance(path, ObjectPath) else Path(path).resolve())


def find_campaign(output_dir: str | Path | Location = "runs", name: str | None = None,
                  storage: StorageSettings | None = None) -> Location:
    """The directory of campaign ``name`` or, without a name, of the latest one in ``output_dir``."""
    output_dir = location(output_dir, storage)
    if name is None:
        marker = output_dir / LATEST
        if not marker.exists():
            raise FileNotFoundError(f"no campaign found under {_shown(output_dir)} (run `asiarch run` first, or pass --dir)")
        name = marker.read_text().strip()
    root = output_dir / name
    if not CampaignPaths(root).state.exists():
        raise FileNotFoundError(f"no campaign named {name!r} under {_shown(output_dir)}")
    return root


def resolve_campaign(path: str | Path | Location, storage: StorageSettings | None = None) -> CampaignPaths:
    """``path`` itself if it is a campaign directory, else the campaign its ``LATEST`` names.

    For readers (dashboard, report) that take either ``runs/<name>`` or ``runs``; unlike
    ``find_campaign`` it accepts a campaign that has written its memory but no record yet.
    """
    path = location(path, storage).resolve()
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

    def __init__(self, path: Location, initial: dict[str, Any] | None = None):
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
