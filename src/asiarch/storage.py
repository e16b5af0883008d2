"""Where a campaign lives: a local directory or an S3-compatible prefix, behind one path type.

A local location is a ``pathlib.Path``. An ``s3://bucket/prefix`` location is an
``ObjectPath``: the handful of ``Path`` methods the campaign uses (``/``, ``exists``,
``read_text``, ``write_text``, ``glob`` ...) over ``pyarrow.fs.S3FileSystem``, the layer Ray
Tune itself stores experiments through. So the memory (LanceDB), Tune's ``storage_path``,
``campaign.json``, results and report reach the same place whichever it is.

An ``ObjectPath`` carries the endpoint and region (``StorageSettings``), never credentials:
every process that touches storage (driver, trial workers on any node, the dashboard) reads
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` from its own environment (or
``~/.aws``), so nothing pickled into Tune's experiment state or written to storage holds a
secret, and a candidate's sandbox, whose environment is emptied, has none to steal.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import posixpath
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

SCHEME = "s3://"
CREDENTIAL_SOURCES = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                      "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


class StorageError(RuntimeError):
    """Storage that cannot be used as configured; the message is one line: what, and what to set."""


@dataclass(frozen=True)
class StorageSettings:
    """The ``storage`` section of ``conf/``: how to reach an ``s3://`` location (credentials: environment only).

    ``endpoint`` (e.g. ``http://127.0.0.1:9000`` for MinIO or moto) falls back to
    ``$AWS_ENDPOINT_URL``; ``region`` to ``$AWS_REGION`` / ``$AWS_DEFAULT_REGION``.
    ``shared_filesystem``: a *local* ``run.output_dir`` is a mount every node sees (NFS),
    so a multi-node cluster may use it.
    """

    endpoint: str | None = None
    region: str | None = None
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 30.0
    shared_filesystem: bool = False

    def __post_init__(self) -> None:
        if self.endpoint is not None and urlparse(self.endpoint).scheme not in ("http", "https"):
            raise ValueError(f"storage.endpoint must be an http(s):// URL, got {self.endpoint!r}")
        if self.connect_timeout_s <= 0 or self.request_timeout_s <= 0:
            raise ValueError("storage.connect_timeout_s and storage.request_timeout_s must be positive")

    def resolved(self) -> "StorageSettings":
        """These settings with the environment's endpoint and region filled in (what a process will use)."""
        endpoint = self.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return StorageSettings(endpoint=endpoint, region=region, connect_timeout_s=self.connect_timeout_s,
                               request_timeout_s=self.request_timeout_s, shared_filesystem=self.shared_filesystem)


@functools.lru_cache(maxsize=8)
def _filesystem(settings: StorageSettings, attempts: int = 3) -> Any:
    """One S3 filesystem per settings and process (credentials from this process's environment)."""
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"region": settings.region, "connect_timeout": settings.connect_timeout_s,
                              "request_timeout": settings.request_timeout_s,
                              "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)}
    if settings.endpoint:
        url = urlparse(settings.endpoint)
        kwargs.update(endpoint_override=url.netloc + url.path.rstrip("/"), scheme=url.scheme)
    return pafs.S3FileSystem(**kwargs)


@dataclass(frozen=True)
class ObjectPath:
    """``s3://bucket/key`` with the ``pathlib.Path`` methods a campaign uses. Directories are key prefixes."""

    bucket: str
    key: str = ""
    settings: StorageSettings = field(default_factory=StorageSettings)

    @classmethod
    def parse(cls, uri: str, settings: StorageSettings | None = None) -> "ObjectPath":
        url = urlparse(uri)
        if url.scheme != "s3" or not url.netloc:
            raise ValueError(f"not an s3://bucket/prefix URI: {uri!r}")
        return cls(url.netloc, url.path.strip("/"), (settings or StorageSettings()).resolved())

    # -- names --------------------------------------------------------------------------------------
    def __str__(self) -> str:
        return f"{SCHEME}{self.fs_path}"

    def __truediv__(self, part: str | os.PathLike) -> "ObjectPath":
        joined = posixpath.normpath(posixpath.join(self.key, str(part))).lstrip("/") if self.key else str(part).strip("/")
        if joined.startswith("..") or joined == ".":
            raise ValueError(f"{part!r} leaves {self}")
        return ObjectPath(self.bucket, joined, self.settings)

    @property
    def fs_path(self) -> str:
        """The path as ``pyarrow.fs`` (and Tune's ``storage_filesystem``) names it: ``bucket/key``."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def parent(self) -> "ObjectPath":
        return ObjectPath(self.bucket, posixpath.dirname(self.key), self.settings)

    def resolve(self) -> "ObjectPath":
        return self

    def expanduser(self) -> "ObjectPath":
        return self

    @property
    def filesystem(self) -> Any:
        return _filesystem(self.settings)

    # -- queries ------------------------------------------------------------------------------------
    def _type(self) -> Any:
        return self.filesystem.get_file_info(self.fs_path).type

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        return self._type() == pafs.FileType.Directory

    def iterdir(self) -> Iterator["ObjectPath"]:
        import pyarrow.fs as pafs

        for info in self.filesystem.get_file_info(pafs.FileSelector(self.fs_path, allow_not_found=True)):
            yield self / posixpath.basename(info.path)

    def glob(self, pattern: str) -> Iterator["ObjectPath"]:
        """Keys below this prefix matching ``pattern`` part by part (``*`` within one part, as in pathlib)."""
        import pyarrow.fs as pafs

        depth = pattern.count("/") + 1
        infos = self.filesystem.get_file_info(pafs.FileSelector(self.fs_path, recursive=True, allow_not_found=True))
        for info in infos:
            rel = info.path[len(self.fs_path):].lstrip("/")
            if rel.count("/") + 1 == depth and fnmatch.fnmatchcase(rel, pattern):
                yield self / rel

    # -- reads and writes ---------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        try:
            with self.filesystem.open_input_stream(self.fs_path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"no such object: {self}") from None

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """One PUT: readers see the old object or the new one, never a part (S3's own atomicity)."""
        with self.filesystem.open_output_stream(self.fs_path) as stream:
            stream.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to create: a prefix exists once a key under it does."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.filesystem.delete_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def upload(self, local: Path) -> None:
        """Copy the local file or directory ``local`` to this location."""
        import pyarrow.fs as pafs

        pafs.copy_files(str(local), self.fs_path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.filesystem)

    # -- for LanceDB and Ray Tune -------------------------------------------------------------------
    def lance_options(self) -> dict[str, str]:
        """``storage_options`` for ``lancedb.connect``: endpoint and region; credentials from this process's environment."""
        options = {"region": self.settings.region or "us-east-1"}
        if self.settings.endpoint:
            options["endpoint"] = self.settings.endpoint
            options["allow_http"] = str(self.settings.endpoint.startswith("http://")).lower()
        for env, key in (("AWS_ACCESS_KEY_ID", "access_key_id"), ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
                         ("AWS_SESSION_TOKEN", "session_token")):
            if os.environ.get(env):
                options[key] = os.environ[env]
        return options


Location = Path | ObjectPath


def location(value: str | os.PathLike | ObjectPath, settings: StorageSettings | None = None) -> Location:
    """A campaign location from a setting: ``s3://...`` gives an ``ObjectPath``, anything else a ``Path``."""
    if isinstance(value, ObjectPath):
        return value
    text = str(value)
    if "://" in text:
        if not text.startswith(SCHEME):
            raise ValueError(f"unsupported storage URI {text!r}: use a local directory or s3://bucket/prefix")
        return ObjectPath.parse(text, settings)
    return Path(text).expanduser()


def is_remote(path: Any) -> bool:
    return isinstance(path, ObjectPath)


def write_text_atomic(path: Location, text: str) -> None:
    """Readers see the old content or the new, never a part: rename locally, one PUT on S3."""
    if isinstance(path, ObjectPath):
        path.write_text(text)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def local_dir(out: Location) -> Iterator[Path]:
    """A local directory whose files end up at ``out``: ``out`` itself, or a temporary one uploaded on exit
    (for writers that need a real file, such as matplotlib's ``savefig``)."""
    if not isinstance(out, ObjectPath):
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="asiarch-upload-") as tmp:
        yield Path(tmp)
        out.upload(Path(tmp))


def tune_storage(path: Location) -> dict[str, Any]:
    """``RunConfig``/``Tuner.restore`` keyword arguments that put Tune's experiments at ``path``."""
    if isinstance(path, ObjectPath):
        return {"storage_path": path.fs_path, "storage_filesystem": path.filesystem}
    return {"storage_path": str(Path(path).resolve())}


def check_access(path: Location) -> None:
    """Fail within seconds, in one line, when ``path`` cannot be used: no credentials, no endpoint, no bucket."""
    if not isinstance(path, ObjectPath):
        return
    if not any(os.environ.get(name) for name in CREDENTIAL_SOURCES) and not (Path.home() / ".aws").is_dir():
        raise StorageError(f"no S3 credentials for {path}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                           "(or AWS_PROFILE) in the environment of the driver and of every Ray node")
    import pyarrow.fs as pafs

    where = path.settings.endpoint or "AWS S3"
    fs = _filesystem(path.settings, attempts=1)
    try:
        info = fs.get_file_info(path.bucket)
    except OSError as err:
        reason = " ".join(str(err).split())[:200]
        raise StorageError(f"cannot reach {path} at {where}: {reason} (check storage.endpoint / "
                           "AWS_ENDPOINT_URL and the credentials)") from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"bucket {path.bucket!r} does not exist at {where}; create it first")
