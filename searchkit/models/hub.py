"""Hugging Face Hub repositories as model and index sources, and pushing folders to them (``huggingface_hub``).

A Hub reference is written ``hf://owner/name`` (a model repository), ``hf://datasets/owner/name`` (a dataset
repository), either with an optional ``@revision`` (a branch, tag or commit): the same spelling as
``huggingface_hub``'s ``HfFileSystem``. The prefix is the rule that tells a Hub repository from a path: a string
without it is a path (or, for model loaders, a name passed on to transformers as before), never guessed.

:func:`snapshot` downloads a repository (or the files ``allow_patterns`` name) with
``huggingface_hub.snapshot_download`` into the Hugging Face cache and returns the local folder; ``HF_HUB_OFFLINE=1``
reads the cache only. What the folder holds is checked by its owner afterwards: a model's card records the sha256
of its files (:func:`searchkit.models.cards.read_model_card`), an index's manifest those of its files
(``Index.open(..., verify=True)``). :func:`push_folder` uploads a folder through ``HfApi.create_repo`` and
``HfApi.upload_folder``.

>>> parse_hub_ref("hf://my-org/scifact-index@v1")
HubRef(repo_id='my-org/scifact-index', repo_type='model', revision='v1')
>>> parse_hub_ref("hf://datasets/my-org/scifact-index").repo_type
'dataset'
>>> is_hub_ref("indexes/scifact"), is_hub_ref("hf://my-org/m")
(False, True)
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from searchkit.types import ConfigError

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf://"
"""What a Hugging Face Hub reference starts with (``hf://owner/name[@revision]``)."""

REPO_TYPES = ("model", "dataset")


class HubRef(NamedTuple):
    """A parsed ``hf://`` reference: the repository id, its type and the revision (None: the default branch)."""

    repo_id: str
    repo_type: str
    revision: str | None


def is_hub_ref(name: str | Path) -> bool:
    """Whether ``name`` is a Hub reference (it starts with ``hf://``); a Path never is."""
    return isinstance(name, str) and name.startswith(HUB_PREFIX)


def parse_hub_ref(name: str) -> HubRef:
    """Split ``hf://[datasets/]owner/name[@revision]``; a ConfigError names what is wrong with it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not is_hub_ref(name):
        raise ConfigError(f"{name!r} is not a Hugging Face reference: write hf://owner/name[@revision]")
    rest = name[len(HUB_PREFIX) :]
    repo_type = "model"
    if rest.startswith("datasets/"):
        repo_type, rest = "dataset", rest[len("datasets/") :]
    repo_id, _, revision = rest.partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ConfigError(
            f"{name!r}: {repo_id!r} is not a Hugging Face repository id ({' '.join(str(err).split())}); write "
            "hf://owner/name[@revision] or hf://datasets/owner/name[@revision]"
        ) from None
    if "/" not in repo_id:
        raise ConfigError(f"{name!r}: a repository id is owner/name; write hf://owner/name[@revision]")
    return HubRef(repo_id, repo_type, revision or None)


def snapshot(name: str, *, allow_patterns: Sequence[str] | None = None) -> Path:
    """Download ``name`` (an ``hf://`` reference) into the Hugging Face cache, or find it there, and return its
    local folder. ``allow_patterns``: only these files (glob patterns). Offline (``HF_HUB_OFFLINE=1``) only the
    cache is read; a repository not in it, not on the Hub or unreachable is one ConfigError line saying so."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    ref = parse_hub_ref(name)
    try:
        folder = snapshot_download(
            ref.repo_id,
            repo_type=ref.repo_type,
            revision=ref.revision,
            allow_patterns=list(allow_patterns) if allow_patterns is not None else None,
            local_files_only=bool(constants.HF_HUB_OFFLINE),
            library_name="searchkit",
        )
    except LocalEntryNotFoundError:
        where = f"the local cache {constants.HF_HUB_CACHE}"
        fix = (
            "HF_HUB_OFFLINE is set, so nothing is downloaded: unset it to download, or pass a local folder"
            if constants.HF_HUB_OFFLINE
            else "the Hub could not be reached: check the network (or HF_ENDPOINT), or pass a local folder"
        )
        raise ConfigError(f"{name}: {ref.repo_type} repository {ref.repo_id!r} is not in {where}; {fix}") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise ConfigError(
            f"{name}: cannot download {ref.repo_type} repository {ref.repo_id!r}: {_one_line(err)}"
        ) from None
    logger.info("%s -> %s", name, folder)
    return Path(folder)


def cache_root() -> Path:
    """Where searchkit keeps what it derives from downloads: ``$SEARCHKIT_CACHE``, else
    ``$XDG_CACHE_HOME/searchkit`` (``~/.cache/searchkit``)."""
    if os.environ.get("SEARCHKIT_CACHE"):
        return Path(os.environ["SEARCHKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "searchkit"


def snapshot_view(name: str, folder: Path, files: Iterable[str]) -> Path:
    """A folder holding exactly ``files`` of the downloaded snapshot ``folder`` (symlinks to the cached blobs),
    under :func:`cache_root`: the Hugging Face cache keeps every file of a repository it ever downloaded in one
    snapshot folder, and a reader that refuses files it was not told about (an index) must see these only.

    One folder per repository and commit, kept while it links to exactly those files (hidden files aside: a
    reader's own markers), else made again beside it and swapped in whole.
    """
    ref = parse_hub_ref(name)
    wanted = {relpath: (folder / relpath).resolve() for relpath in files if (folder / relpath).is_file()}
    target = cache_root() / "hub" / f"{ref.repo_type}s--{ref.repo_id.replace('/', '--')}" / folder.name
    if _links(target) == wanted:
        return target
    building = target.with_name(f".{target.name}.{os.getpid()}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    for relpath, source in wanted.items():
        link = building / relpath
        if not link.resolve().is_relative_to(building.resolve()):
            raise ConfigError(f"{name}: {relpath!r} is not a path inside the repository")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    with contextlib.suppress(FileNotFoundError):
        os.replace(target, old)
    try:
        os.replace(building, target)
    except OSError:  # another process put its own view there first
        shutil.rmtree(building, ignore_errors=True)
        if _links(target) != wanted:
            raise
    shutil.rmtree(old, ignore_errors=True)
    return target


def _links(view: Path) -> dict[str, Path] | None:
    """relpath -> resolved target of every non-hidden file of ``view`` (None when it is not a folder)."""
    if not view.is_dir():
        return None
    found: dict[str, Path] = {}
    for path in view.rglob("*"):
        relpath = path.relative_to(view).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in relpath.split("/")):
            found[relpath] = path.resolve()
    return found


def push_folder(
    folder: str | Path,
    repo: str,
    *,
    repo_type: str = "model",
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload with searchkit",
    token: str | None = None,
) -> str:
    """Create the repository ``repo`` (``owner/name``, or an ``hf://`` reference; kept when it exists) and upload
    ``folder``'s files (``allow_patterns`` / ``ignore_patterns`` as ``HfApi.upload_folder`` takes them) in one
    commit; returns the commit's URL. The token is ``token``, else huggingface_hub's own (``HF_TOKEN``, ``hf auth
    login``). Hub errors are one ConfigError line."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if is_hub_ref(repo):
        ref = parse_hub_ref(repo)
        repo_id, repo_type, revision = ref.repo_id, ref.repo_type, revision or ref.revision
    else:
        repo_id = parse_hub_ref(HUB_PREFIX + repo).repo_id
    if repo_type not in REPO_TYPES:
        raise ConfigError(f"repository type must be one of {list(REPO_TYPES)}, got {repo_type!r}")
    api = HfApi(token=token, library_name="searchkit")
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit: Any = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type=repo_type,
            revision=revision,
            commit_message=commit_message,
            allow_patterns=list(allow_patterns) if allow_patterns is not None else None,
            ignore_patterns=list(ignore_patterns) if ignore_patterns is not None else None,
        )
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise ConfigError(f"cannot push {folder} to {repo_type} repository {repo_id!r}: {_one_line(err)}") from None
    url = str(getattr(commit, "commit_url", commit))
    logger.info("pushed %s to %s (%s)", folder, repo_id, url)
    return url


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
