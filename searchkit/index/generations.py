"""Generations: how a new index folder replaces the old one without a reader or a crash ever seeing half of it.

A build, an add and an update all assemble a complete new folder (``.<name>.building``; files that do not change
are hard-linked from the old generation, never modified in place) and swap it in with two ``os.replace`` calls,
holding ``.<name>.lock`` (``flock``) so that a second writer of the same target fails at once with a clear error.
A process killed between the two renames leaves the old index in ``.<name>.old``: :func:`recover` (called by the
next open or build of ``<name>``) puts it back. Readers that open during a swap retry (:class:`Swapping`).

>>> building_dir(Path("indexes/scifact")).as_posix(), old_dir(Path("indexes/scifact")).as_posix()
('indexes/.scifact.building', 'indexes/.scifact.old')
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from searchkit.faults import checkpoint
from searchkit.formats import write_json_atomic
from searchkit.index.layout import FORMAT, MANIFEST
from searchkit.index.manifest import Generation, read_manifest
from searchkit.types import ConfigError

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- helpers
class Swapping(Exception):
    """Internal: the folder was swapped by a concurrent build or add while it was being opened; try again."""


def building_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.building"


def old_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` (an exclusive ``flock``) for a build or add; a second one fails at once.

    The kernel drops the lock when its process dies, so a killed build never blocks the next one. The file is
    removed on release; a process that opened it just before is told apart by its inode and takes a new one.
    """

    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"{target}: another build or add of this index is running (pid {holder}, lock {path}); "
                "wait for it to finish, then try again"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def write_target(path: str | Path) -> Path:
    """The folder a build, add or update of ``path`` writes: ``path`` itself, or the folder a symlink at ``path``
    points to, so the link keeps pointing at the new generation (a link is never replaced by a folder, nor left
    behind as ``.<name>.old``). ConfigError for a link that loops or points nowhere.

    >>> write_target("indexes/scifact").as_posix()
    'indexes/scifact'
    """
    path = Path(path)
    if not path.is_symlink():
        return path
    try:
        return path.resolve(strict=True)
    except FileNotFoundError:
        raise ConfigError(
            f"{path} is a symlink to {os.readlink(path)}, which does not exist; point it at an index folder, or give "
            "the folder itself"
        ) from None
    except (RuntimeError, OSError):
        raise ConfigError(f"{path}: a symlink loop; give the index folder itself") from None


def check_replaceable(target: Path) -> None:
    """ConfigError unless an existing ``target`` may be replaced by a build: a searchkit index (its manifest reads
    as one) or an empty folder. Nothing else is ever deleted: not a file, not a folder of other files.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> check_replaceable(folder)                    # empty: may be replaced
    >>> _ = (folder / "keep.txt").write_text("important")
    >>> check_replaceable(folder)
    Traceback (most recent call last):
    ...
    searchkit.types.ConfigError: ... is not a searchkit index (no manifest.json) and not empty: ...
    """
    if not target.exists():
        return
    if not target.is_dir():
        raise ConfigError(
            f"{target} is a file, not an index folder: overwrite replaces only searchkit indexes and empty folders; "
            "choose another output"
        )
    if not any(target.iterdir()):
        return
    manifest = read_manifest(target)
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
        return
    found = "no manifest.json" if not (target / MANIFEST).exists() else "its manifest.json is not a searchkit one"
    raise ConfigError(
        f"{target} is not a searchkit index ({found}) and not empty: overwrite replaces only searchkit indexes and "
        "empty folders, and leaves this one alone; choose another output, or empty it yourself"
    )


class Change(NamedTuple):
    """Where a new generation goes (``target``: the index folder, symlinks resolved) and where it is assembled."""

    target: Path
    building: Path


@contextlib.contextmanager
def changing(index: Generation, what: str) -> Iterator[Change]:
    """Hold the lock of ``index``'s folder for an add or update (a killed swap undone first) and yield where the new
    generation is assembled and swapped in; ConfigError when the folder no longer holds the generation ``index``
    opened."""
    target = write_target(index.path)
    with build_lock(target):
        recover(target)
        if read_manifest(target) != index.manifest:
            raise ConfigError(f"{index.path} changed since it was opened; open it again and repeat the {what}")
        yield Change(target, building_dir(target))


def recover(target: Path) -> None:
    """Under the lock: undo a swap a killed process left half done (the previous index back in place)."""
    old = old_dir(target)
    if not old.is_dir():
        return
    if not target.exists() and (old / MANIFEST).is_file():
        logger.warning("%s: a build or add was killed while swapping; restored the previous index", target)
        os.replace(old, target)
    else:
        shutil.rmtree(old, ignore_errors=True)


def recover_or_wait(target: Path) -> None:
    """Open found ``target`` missing but ``.<name>.old`` present: a swap is running (wait) or was killed (undo)."""
    try:
        with build_lock(target):
            recover(target)
    except (ConfigError, OSError):
        pass  # a live build or add holds the lock (it is between its two renames), or the folder is read-only
    raise Swapping


def link_tree(source: Path, destination: Path) -> None:
    """Hard-link ``source`` (a file or a folder, recursively) at ``destination``; copy where links fail.

    Index files are never modified in place (every write is a new file moved over the old one), so two
    generations may share them.
    """
    if source.is_dir():
        destination.mkdir(exist_ok=True)
        for child in source.iterdir():
            link_tree(child, destination / child.name)
        return
    if destination.exists():
        return
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def prepare_build_dir(building: Path, state: dict[str, Any]) -> None:
    """Create the temp build folder, keeping an interrupted build of the same inputs (for resume).

    Only an exact match of source, fields and configs is resumed; anything else starts clean.
    """
    state_file = building / "build-state.json"
    if building.exists():
        previous = None
        with contextlib.suppress(OSError, json.JSONDecodeError):
            previous = json.loads(state_file.read_text(encoding="utf-8"))
        if previous == json.loads(json.dumps(state)):
            logger.info("resuming the interrupted build in %s", building)
            return
        shutil.rmtree(building)
    building.mkdir(parents=True)
    write_json_atomic(state_file, state)


def move_into_place(building: Path, target: Path, operation: str) -> None:
    """Swap the finished generation in; an existing target is moved aside first (rename over a full dir fails).

    Readers opening meanwhile retry (see Index.open); a crash between the two renames is undone by ``recover``.
    """
    old = old_dir(target)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
        checkpoint(f"{operation}.swap")
    try:
        os.replace(building, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    checkpoint(f"{operation}.swapped")
    shutil.rmtree(old, ignore_errors=True)
