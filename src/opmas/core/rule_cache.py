"""A content-keyed on-disk cache of what parsing a rule file gives, as plain JSON (never code).

core/ruleset.py stores, per rule source, a JSON value: each document's outcome up to
the condition IR (core/sigma/ir.py). An entry's key is the sha256 of the cache
format, the engine code that makes entries (its source files and the versions of the
libraries it uses), the placeholders and rule schema in effect (the ``context``) and
the source's name and text: a change to any of them is a new key, so entries are never
stale, only unused.

An entry is the file ``<dir>/rules/<key>.json``: the sha256 of the body, a newline, and
the body ``{"key": key, "value": value}`` (orjson). A missing, unreadable, corrupt or
foreign entry is a miss. Entries are written atomically (temp file, then rename), 0600
in a 0700 directory; a directory that cannot be written only makes loads slower. After a
load that wrote entries, the oldest are removed while the cache holds more than
:data:`MAX_BYTES` (an entry read more than a day after it was written is marked fresh).
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

FORMAT = 2  # 2: error records carry their diagnostic code
MAX_BYTES = 128 << 20
ENV_VAR = "OPMAS_CACHE_DIR"  # the cache directory; empty or "off": no cache
_REFRESH_AFTER = 24 * 3600.0  # seconds: an entry read this long after its last write is touched
_ENGINE_DIR = Path(__file__).resolve().parent
# The modules (under opmas/core/) whose code makes entries: reading, checking and parsing rule files up to
# the IR. Compiling the IR (opmas/core/sigma/compile.py) happens on every load, so it is not among them.
_CODE = ("errors.py", "ruleset.py", "rule_cache.py", "sigma/yamldoc.py", "sigma/parse.py", "sigma/ir.py",
         "sigma/regex.py", "sigma/schemacheck.py")
_LIBRARIES = ("pysigma", "pyyaml", "jsonschema", "orjson")
# orjson would write these types in its own way (dates as text...): refused, so the entry is not written
_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """``$OPMAS_CACHE_DIR`` (empty or "off": None, no cache), else ``$XDG_CACHE_HOME/opmas``,
    else ``~/.cache/opmas`` (None if there is no home directory)."""
    env = os.environ if env is None else env
    configured = env.get(ENV_VAR)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off") else Path(configured).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec ignores relative paths
        return Path(xdg) / "opmas"
    try:
        return Path.home() / ".cache" / "opmas"
    except RuntimeError:
        return None


@lru_cache(maxsize=1)
def code_version() -> str | None:
    """A digest of the engine code and library versions that make cache entries (None: the code
    cannot be read, so entries cannot be keyed on it)."""
    digest = hashlib.sha256(sys.version.encode())
    for name in _LIBRARIES:
        try:
            digest.update(f"{name}={version(name)}\n".encode())
        except PackageNotFoundError:
            digest.update(f"{name}=?\n".encode())
    for name in _CODE:
        try:
            code = (_ENGINE_DIR / name).read_bytes()
        except OSError:
            return None
        digest.update(f"{name}\n".encode())
        digest.update(code)
    return digest.hexdigest()


def encode(value: Any) -> bytes | None:
    """``value`` as JSON if it reads back as an equal value (plain JSON types only), else None."""
    try:
        blob = orjson.dumps(value, option=_STRICT)
    except orjson.JSONEncodeError:  # non-str keys, dates, huge integers, bad unicode...
        return None
    return blob if orjson.loads(blob) == value else None  # NaN and infinities become null


class RuleCache:
    """Cache entries of rule sources in ``directory`` for a ``context`` (placeholders, schema...)."""

    def __init__(self, directory: str | Path, context: bytes, code: str, max_bytes: int = MAX_BYTES):
        self.directory = Path(directory) / "rules"
        self.max_bytes = max_bytes
        self._base = hashlib.sha256(f"opmas-rule-cache {FORMAT} {code}\n".encode())
        self._base.update(hashlib.sha256(context).digest())
        self._writable: bool | None = None  # None: not tried yet
        self._wrote = False

    def key(self, name: str, text: str) -> str:
        """The key of a source's entry."""
        digest = self._base.copy()
        digest.update(orjson.dumps([name, text]))
        return digest.hexdigest()

    def get(self, key: str) -> Any:
        """The value stored under ``key``, or None (missing, unreadable, corrupt or foreign)."""
        path = os.path.join(self.directory, f"{key}.json")  # str: no Path object per entry
        try:
            with open(path, "rb") as file:
                data = file.read()
                modified = os.fstat(file.fileno()).st_mtime
        except OSError:
            return None
        check, _, body = data.partition(b"\n")
        if check != hashlib.sha256(body).hexdigest().encode():
            return None
        try:
            entry = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        if time.time() - modified > _REFRESH_AFTER:
            _touch(path)
        return entry.get("value")

    def put(self, key: str, value_json: bytes) -> None:
        """Store a value (already JSON, see :func:`encode`) under ``key``; errors are ignored."""
        if not self._ready():
            return
        body = b'{"key":' + orjson.dumps(key) + b',"value":' + value_json + b"}"
        data = hashlib.sha256(body).hexdigest().encode() + b"\n" + body
        try:
            handle, temp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")  # mode 0600
        except OSError:
            self._writable = False
            return
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temp, self.directory / f"{key}.json")
            self._wrote = True
        except OSError:
            _remove(Path(temp))

    def _ready(self) -> bool:
        """Whether the directory exists (created 0700 if need be) and may be written."""
        if self._writable is None:
            try:
                self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.directory.mkdir(mode=0o700, exist_ok=True)
                self._writable = os.access(self.directory, os.W_OK | os.X_OK)
            except OSError:
                self._writable = False
        return self._writable

    def prune(self) -> None:
        """If entries were written: remove the oldest while the cache holds more than ``max_bytes``."""
        if not self._wrote:
            return
        self._wrote = False
        files: list[tuple[float, int, Path]] = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        stat = entry.stat(follow_symlinks=False)
                        files.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        except OSError:
            return
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files, key=lambda f: f[0]):
            if total <= self.max_bytes:
                break
            _remove(path)
            total -= size


def _touch(path: str) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
