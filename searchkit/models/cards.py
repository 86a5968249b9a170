"""Model cards: the ``searchkit.json`` a trained model folder (a reranker or a fine-tuned encoder) carries.

What it is, which searchkit wrote it, what it was trained from (its lineage) and with what; the size and sha256 of
its model files and its own checksum, so a damaged weight file or an edited card is refused on read. Cards are
written and read only here.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> _ = write_model_card(folder, "reranker", {"base_model": {"name": "all-MiniLM-L6-v2"}, "interpolation": 0.5})
>>> card = read_model_card(folder, "reranker")
>>> card["format"], card["format_version"], card["interpolation"]
('searchkit-reranker', 1, 0.5)
>>> lineage(card)
[{'name': 'all-MiniLM-L6-v2', 'sha256': None}]
>>> read_model_card("my-org/hub-model")
{}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from searchkit.formats import check_model_files, json_checksum, model_files, write_json_atomic
from searchkit.types import ConfigError, DataError
from searchkit.version import __version__

MODEL_CARD = "searchkit.json"
"""The card's file name inside a model folder."""


CARD_VERSION = 1
"""format_version of the cards this searchkit writes; cards with a newer one are refused on read."""


CARD_KINDS = ("reranker", "dense")


def write_model_card(folder: str | Path, kind: str, card: Mapping[str, Any]) -> Path:
    """Atomically write ``folder/searchkit.json``: format ``searchkit-{kind}``, format_version, searchkit version,
    then ``card``'s fields. ``kind`` is ``"reranker"`` or ``"dense"``. Returns the card's path.
    """

    if kind not in CARD_KINDS:
        raise ConfigError(f"model card kind must be one of {list(CARD_KINDS)}, got {kind!r}")
    header = {"format": f"searchkit-{kind}", "format_version": CARD_VERSION, "searchkit_version": __version__}
    payload = {**header, **{key: value for key, value in card.items() if key not in header}}
    path = Path(folder) / MODEL_CARD
    path.parent.mkdir(parents=True, exist_ok=True)
    payload.pop("files", None)
    payload.update({"files": files} if (files := model_files(path.parent, MODEL_CARD)) else {})  # checked on read
    payload["checksum"] = json_checksum(payload)  # an edited or damaged card is refused on read
    write_json_atomic(path, payload)
    return path


def read_model_card(model: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The card of a local model folder; {} when ``model`` is not a folder with a ``searchkit.json`` (hub names).

    Bad JSON, a non-object, a missing format or a card written by a newer searchkit are a DataError naming the
    file; a card of another kind than ``kind`` (when given) is a ConfigError.
    """
    path = Path(model) / MODEL_CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"invalid model card: {err}; retrain the model or delete the card", path) from None
    if not isinstance(card, dict):
        raise DataError("invalid model card: expected a JSON object; retrain the model or delete the card", path)
    found = card.get("format")
    if not isinstance(found, str) or not found.startswith("searchkit-"):
        raise DataError(f"not a searchkit model card (format={found!r}); retrain the model or delete the card", path)
    version = card.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise DataError(f"model card format_version missing or not an integer ({version!r}); retrain the model", path)
    if version > CARD_VERSION:
        raise DataError(
            f"written by a newer searchkit {card.get('searchkit_version', '?')} (card format {version}); this "
            f"searchkit {__version__} reads card formats up to {CARD_VERSION}: upgrade with `pip install -U searchkit`",
            path,
        )
    if "checksum" in card and card.pop("checksum") != json_checksum(card):
        raise DataError("model card checksum mismatch (edited or damaged); retrain, or pass settings instead", path)
    if "files" in card:  # the model files the card was written with: damage is refused, not loaded
        check_model_files(path.parent, card["files"], path)
    if kind is not None and found != f"searchkit-{kind}":
        raise ConfigError(f"{path}: this is a {found.removeprefix('searchkit-')} model, not a {kind}; pass a {kind}")
    return card


def lineage(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The models this one was trained from, oldest first: base -> parent -> ... (``[]`` for an empty card).

    Cards written before lineage was recorded give their base model alone.

    >>> lineage({"base_model": {"name": "m", "weights_sha256": {"model.safetensors": "ab"}}})
    [{'name': 'm', 'sha256': {'model.safetensors': 'ab'}}]
    """
    recorded = card.get("lineage")
    if isinstance(recorded, list):
        return [dict(step) for step in recorded]
    base = card.get("base_model")
    if isinstance(base, Mapping) and base.get("name"):
        return [{"name": base["name"], "sha256": base.get("weights_sha256")}]
    return []


def read_reranker_card(model: str | Path) -> dict[str, Any]:
    """The ``searchkit.json`` of a reranker folder ({} for hub names and folders without one), version checked."""
    return read_model_card(model, "reranker")


def write_reranker_card(folder: str | Path, card: Mapping[str, Any]) -> Path:
    """Write a reranker folder's ``searchkit.json`` (format, version and searchkit version added)."""
    return write_model_card(folder, "reranker", card)
