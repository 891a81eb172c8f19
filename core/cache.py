"""The compile cache: compiled nodes on disk, keyed by architecture, weights refitted.

A :class:`CompileCache` is a folder of *entries*, one per key (``core/cache_key.py``
computes keys); an entry is a folder holding what a strategy's :class:`CacheCodec`
wrote and a ``manifest.json`` listing every file with its size and sha256, the torch
and torchstitch versions that wrote it, and a short description (for
``torchstitch cache info``).  Writes go to a private folder renamed into place, so a
reader sees a whole entry or none; a damaged entry is a miss with a warning, and is
removed.  Nothing here ever fails a compile: an ``OSError`` is a warning.
See docs/cache.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from .._version import __version__
from ._warn import warn
from .errors import TorchstitchWarning, exception_summary

__all__ = ["CacheCodec", "CacheEntry", "CompileCache", "ENV_VAR", "MANIFEST"]

log = logging.getLogger(__name__)

#: the environment variable that sets the default ``cache_dir``
ENV_VAR = "TORCHSTITCH_CACHE_DIR"
#: the file of an entry that says it is whole; written last
MANIFEST = "manifest.json"
#: version of the entry layout (the manifest's ``format``)
ENTRY_FORMAT = 1
#: prefix of the private folders entries are written in (and removed through)
_PRIVATE = ".tmp-"


@attrs.frozen
class CacheCodec:
    """How a strategy writes its compiled modules to a cache entry and reads them back.

    A strategy whose ``Strategy.cache`` is a codec has its compiled nodes cached; one
    without (``None``) never has.
    """

    #: ``save(compiled, folder)``: write the compiled module into the empty ``folder``
    save: Callable[[torch.nn.Module, Path], None] = attrs.field(eq=False, repr=False)
    #: ``load(folder, shell) -> module``: the compiled module read back, its parameters
    #: and buffers replaced by the very tensors of ``shell`` (the engine's shell of the
    #: node, which shares the caller's tensors), as a fresh compile of ``shell`` would have
    load: Callable[[Path, torch.nn.Module], torch.nn.Module] = attrs.field(eq=False, repr=False)
    #: the layout of what ``save`` writes: part of the key, so a new one misses old entries
    version: str = attrs.field(default="1", validator=attrs.validators.instance_of(str))


@attrs.frozen
class CacheEntry:
    """One entry of a cache, as ``torchstitch cache info`` lists it."""

    key: str
    #: the entry's folder
    folder: Path
    #: bytes of its files
    size: int
    #: when it was written (seconds since the epoch)
    created: float
    #: what the writer said about it (``{"strategy": "script", "type": ...}``)
    describe: Mapping[str, str]


class _Invalid(Exception):
    """An entry that must not be used (the message says why)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            yield path


class CompileCache:
    """A cache folder (made on first store).

    :param directory: the folder; see :meth:`from_option` for the checked way to get one.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"CompileCache({str(self.directory)!r})"

    @classmethod
    def from_option(cls, cache_dir: str | os.PathLike[str] | None) -> CompileCache | None:
        """The cache of a compile call: ``cache_dir``, else ``$TORCHSTITCH_CACHE_DIR``, else
        ``None`` (no caching).  A folder that cannot be made or written is a
        :class:`~torchstitch.TorchstitchWarning` and ``None``: the compile goes on uncached."""
        if cache_dir is None:
            cache_dir = os.environ.get(ENV_VAR) or None
            if cache_dir is None:
                return None
        directory = Path(os.fspath(cache_dir)).expanduser()
        problem = _unusable(directory)
        if problem is not None:
            warn(
                TorchstitchWarning(
                    f"compile cache {str(directory)!r} not used ({problem}): compiling uncached"
                )
            )
            return None
        return cls(directory)

    def folder(self, key: str) -> Path:
        """Where the entry of ``key`` lives (whether or not it exists)."""
        return self.directory / key

    def lookup(self, key: str) -> Path | None:
        """The entry folder of ``key`` if it is whole and was written by this torch and
        torchstitch; else ``None``.  A damaged or foreign entry is a warning, and removed."""
        folder = self.folder(key)
        if not folder.is_dir():
            return None
        try:
            self._check(key, folder)
        except _Invalid as exc:
            warn(
                TorchstitchWarning(
                    f"compile cache entry {key[:8]} in {str(self.directory)!r} {exc}: rebuilding it"
                )
            )
            self.discard(key)
            return None
        except OSError as exc:
            warn(
                TorchstitchWarning(f"compile cache entry {key[:8]} could not be read ({exc}): compiling anew")
            )
            return None
        return folder

    def store(self, key: str, write: Callable[[Path], None], describe: Mapping[str, str]) -> None:
        """Write the entry of ``key``: ``write(folder)`` fills a fresh private folder, which is
        then renamed into place.  When another writer got there first, its entry stays.
        An ``OSError`` (disk full, permissions) is a warning, never a failure."""
        private: Path | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            private = Path(tempfile.mkdtemp(prefix=f"{_PRIVATE}{key[:16]}-", dir=self.directory))
            write(private)
            self._write_manifest(key, private, describe)
            self._publish(key, private)
            private = None
        except Exception as exc:  # a full disk, a codec that cannot save this module: never a failure
            warn(
                TorchstitchWarning(
                    f"compile cache {str(self.directory)!r}: could not store entry {key[:8]} "
                    f"({exception_summary(exc)})"
                )
            )
        finally:
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)

    def discard(self, key: str) -> None:
        """Remove the entry of ``key`` (if any); renamed away first, so no reader sees half of it."""
        self._remove(self.folder(key))

    def entries(self) -> list[CacheEntry]:
        """Every entry with a readable manifest, oldest first."""
        found: list[CacheEntry] = []
        if not self.directory.is_dir():
            return found
        for folder in self.directory.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                manifest = json.loads((folder / MANIFEST).read_text())
                size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
            except (OSError, ValueError):
                continue
            found.append(
                CacheEntry(
                    key=folder.name,
                    folder=folder,
                    size=size,
                    created=float(manifest.get("created", 0.0)),
                    describe=dict(manifest.get("describe", {})),
                )
            )
        return sorted(found, key=lambda entry: entry.created)

    def clear(self) -> int:
        """Remove every entry (and leftover private folders); how many entries were removed."""
        if not self.directory.is_dir():
            return 0
        removed = 0
        for folder in list(self.directory.iterdir()):
            if not folder.is_dir():
                continue
            if not folder.name.startswith("."):
                removed += 1
            self._remove(folder)
        return removed

    # -- internals -----------------------------------------------------------

    def _check(self, key: str, folder: Path) -> None:
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            raise _Invalid("has no manifest (an interrupted write)") from None
        except ValueError:
            raise _Invalid("has an unreadable manifest") from None
        expected = {
            "format": ENTRY_FORMAT,
            "key": key,
            "torch": torch.__version__,
            "torchstitch": __version__,
        }
        for field, value in expected.items():
            if manifest.get(field) != value:
                raise _Invalid(f"was written with {field} {manifest.get(field)!r}, not {value!r}")
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise _Invalid("lists no files")
        for name, recorded in files.items():
            path = folder / name
            if not path.is_file():
                raise _Invalid(f"lacks its file {name!r}")
            if path.stat().st_size != recorded.get("size") or _sha256(path) != recorded.get("sha256"):
                raise _Invalid(f"has a damaged file {name!r}")

    def _write_manifest(self, key: str, folder: Path, describe: Mapping[str, str]) -> None:
        files = {
            path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
            for path in _files(folder)
        }
        manifest: dict[str, Any] = {
            "format": ENTRY_FORMAT,
            "key": key,
            "torch": torch.__version__,
            "torchstitch": __version__,
            "created": time.time(),
            "files": files,
            "describe": dict(describe),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))

    def _publish(self, key: str, private: Path) -> None:
        """Rename ``private`` to the entry's folder; a whole entry already there wins."""
        final = self.folder(key)
        for _ in range(3):
            try:
                os.rename(private, final)
                return
            except OSError:
                if not final.exists():
                    raise
            try:
                self._check(key, final)
            except (_Invalid, OSError):
                self._remove(final)  # a damaged entry: replace it
                continue
            log.debug("compile cache entry %s was stored meanwhile by another writer", key[:8])
            shutil.rmtree(private, ignore_errors=True)
            return
        raise OSError(f"could not rename {private.name} to {final.name}")

    def _remove(self, folder: Path) -> None:
        if not folder.exists():
            return
        doomed = folder
        if not folder.name.startswith("."):
            doomed = folder.with_name(
                f"{_PRIVATE}gone-{folder.name[:16]}-{os.getpid()}-{time.monotonic_ns()}"
            )
            try:
                os.rename(folder, doomed)
            except OSError:
                return  # removed (or replaced) meanwhile by another process
        shutil.rmtree(doomed, ignore_errors=True)


def _unusable(directory: Path) -> str | None:
    """Why ``directory`` cannot hold a cache (``None``: it can); makes it if missing."""
    if directory.exists() and not directory.is_dir():
        return "it is a file, not a folder"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=_PRIVATE, dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        return f"not writable: {exc.strerror or exc}"
    return None
