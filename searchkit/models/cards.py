"""Model cards: the ``searchkit.json`` a trained model folder (a reranker or a fine-tuned encoder) carries.

What it is, which searchkit wrote it, what it was trained from (its lineage) and with what; the size and sha256 of
its model files and its own checksum, so a damaged weight file or an edited card is refused on read. Cards are
written and read only here.

Every write also writes the folder's ``README.md``: a Hugging Face model card (YAML front matter: library,
pipeline tag, base model, datasets, the dev results as ``model-index``, tags, the lineage; then a short Markdown
summary) made from the searchkit card by :func:`readme_text`, so the folder says what it is on the Hub or in a file
browser. The README is not among the files the card checks (edit it freely); a README that searchkit did not write
is never overwritten. :func:`push_model` uploads a model folder to the Hub.

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
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from searchkit.formats import IRDS_PREFIX, check_model_files, json_checksum, model_files, write_json_atomic
from searchkit.models.hub import parse_hub_ref, push_folder
from searchkit.models.loading import EMBEDDED_MODEL_NAMES, fetch_model
from searchkit.types import ConfigError, DataError
from searchkit.version import __version__

logger = logging.getLogger(__name__)

MODEL_CARD = "searchkit.json"
"""The card's file name inside a model folder."""


CARD_VERSION = 1
"""format_version of the cards this searchkit writes; cards with a newer one are refused on read."""


CARD_KINDS = ("reranker", "dense")

README = "README.md"
"""The Hugging Face model card written next to the searchkit card."""

README_MARK = "<!-- written by searchkit from searchkit.json: edit freely, or delete to have it rewritten -->"
"""The line that tells a README searchkit wrote (and may rewrite) from one a user wrote."""


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
    write_readme(path.parent, payload)
    return path


def write_readme(folder: str | Path, card: Mapping[str, Any]) -> Path | None:
    """Write ``folder/README.md`` from ``card`` (:func:`readme_text`) unless a README searchkit did not write is
    there (kept, logged); returns its path, or None when it was kept."""
    path = Path(folder) / README
    if path.is_file() and README_MARK not in path.read_text(encoding="utf-8", errors="replace"):
        logger.info("%s: kept (not written by searchkit); the model card is in %s", path, MODEL_CARD)
        return None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(readme_text(card, Path(folder).name), encoding="utf-8")
    os.replace(tmp, path)
    return path


def hub_name(name: Any) -> str | None:
    """The Hugging Face repository id a lineage step names (the embedded default is
    ``sentence-transformers/all-MiniLM-L6-v2``), or None for a local folder.

    >>> hub_name("all-MiniLM-L6-v2"), hub_name("hf://my-org/m@v2"), hub_name("/tmp/base")
    ('sentence-transformers/all-MiniLM-L6-v2', 'my-org/m', None)
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(name, str) or not name:
        return None
    if name in EMBEDDED_MODEL_NAMES:
        return "sentence-transformers/all-MiniLM-L6-v2"
    if name.startswith("hf://"):
        return parse_hub_ref(name).repo_id
    if Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def card_datasets(card: Mapping[str, Any]) -> list[str]:
    """The data a model was trained on, by name: a folder's name, an ``irds:`` id without its prefix.

    >>> card_datasets({"training_config": {"corpus": "../datasets/scifact", "qrels": "irds:beir/scifact/train"}})
    ['scifact', 'beir/scifact/train']
    """
    config = card.get("training_config") or {}
    names: list[str] = []
    for key in ("corpus", "qrels", "queries", "pairs"):
        value = config.get(key) if isinstance(config, Mapping) else None
        if not isinstance(value, str) or not value:
            continue
        name = value.removeprefix(IRDS_PREFIX) if value.startswith(IRDS_PREFIX) else Path(value).name
        if name and name not in names:
            names.append(name)
    return names


def readme_text(card: Mapping[str, Any], name: str) -> str:
    """A Hugging Face model card (``README.md``) for a searchkit card: YAML front matter that
    ``huggingface_hub.ModelCard`` parses, then a Markdown summary. ``name`` is the model's name (its folder's).

    >>> text = readme_text({"format": "searchkit-reranker", "base_model": {"name": "all-MiniLM-L6-v2"}}, "rr")
    >>> text.splitlines()[0], "base_model: sentence-transformers/all-MiniLM-L6-v2" in text
    ('---', True)
    """
    from huggingface_hub import EvalResult, ModelCardData

    kind = str(card.get("format", "searchkit-reranker")).removeprefix("searchkit-")
    reranker = kind == "reranker"
    steps = lineage(card)
    on_hub = [hub for step in steps if (hub := hub_name(step.get("name")))]
    datasets = card_datasets(card)
    metric = str(card.get("dev_metric") or "")
    config = card.get("training_config")
    split = config.get("split") if isinstance(config, Mapping) else None
    data_name = datasets[0] if datasets else "training data"
    results = []
    for stage, value in _dev_results(card, reranker):
        results.append(
            EvalResult(
                task_type="text-ranking" if reranker else "sentence-similarity",
                task_name="Reranking" if reranker else "Retrieval",
                dataset_type=datasets[0] if datasets else "unknown",
                dataset_name=f"{data_name} (dev queries held out of {split or 'it'})",
                dataset_split="dev",
                metric_type=stage[0],
                metric_value=value,
                metric_name=stage[1],
            )
        )
    data = ModelCardData(
        model_name=name,
        library_name="sentence-transformers",
        pipeline_tag="text-ranking" if reranker else "sentence-similarity",
        base_model=on_hub[-1] if on_hub else None,
        datasets=datasets or None,
        metrics=[metric] if metric else None,
        eval_results=results or None,
        tags=["searchkit", *(["reranker", "cross-encoder"] if reranker else ["bi-encoder", "dense-retrieval"])],
        searchkit={
            key: value
            for key, value in (
                ("format", card.get("format")),
                ("format_version", card.get("format_version")),
                ("searchkit_version", card.get("searchkit_version")),
                ("lineage", [str(step.get("name")) for step in steps]),
                ("shipped", card.get("shipped")),
            )
            if value is not None
        },
    )
    what = "a cross-encoder reranker" if reranker else "a bi-encoder (dense retrieval model)"
    lines = [
        f"# {name}",
        "",
        f"{what.capitalize()} fine-tuned with [searchkit](https://pypi.org/project/searchkit/) "
        f"{card.get('searchkit_version', '')}. Its searchkit card, `{MODEL_CARD}`, holds every training setting "
        "and the sha256 of each model file (checked when searchkit loads it).",
        "",
        "## Use",
        "",
        "```bash",
        f"searchkit search INDEX 'a query' --rerank {name}"
        if reranker
        else f"searchkit index build --corpus CORPUS -o INDEX --dense {name}",
        "```",
        "",
        f"From the Hub: `hf://OWNER/{name}` wherever searchkit takes a model.",
        "",
        "## Lineage",
        "",
        *[f"{i}. `{step.get('name')}`" for i, step in enumerate(steps, 1)],
        f"{len(steps) + 1}. this model",
        "",
    ]
    if datasets:
        lines += ["## Training data", "", *[f"- `{d}`" for d in datasets], ""]
    if results:
        lines += ["## Dev results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {r.metric_name} | {r.metric_value:.4f} |" for r in results]
        lines.append("")
    body = "\n".join([README_MARK, "", *lines])
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def _dev_results(card: Mapping[str, Any], reranker: bool) -> list[tuple[tuple[str, str], float]]:
    """(metric type, label) and value of the shipped model's dev scores."""
    final = card.get("final_dev")
    metric = str(card.get("dev_metric") or "")
    if not isinstance(final, Mapping):
        return []
    if reranker:
        stages = (("reranker", "reranker alone"), ("interpolated", "fused with the first stage"))
        return [
            ((metric, f"dev {metric} ({label})"), float(final[key]))
            for key, label in stages
            if metric and isinstance(final.get(key), int | float) and not isinstance(final.get(key), bool)
        ]
    return [
        ((key, f"dev {key}"), float(value))
        for key, value in final.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]


def read_model_card(model: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The card of a local model folder, or of an ``hf://`` model's downloaded folder (its files checked against
    the card after the download); {} when ``model`` is not a folder with a ``searchkit.json`` (hub names).

    Bad JSON, a non-object, a missing format or a card written by a newer searchkit are a DataError naming the
    file; a card of another kind than ``kind`` (when given) is a ConfigError.
    """
    path = Path(fetch_model(model) if isinstance(model, str) else model) / MODEL_CARD
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


PUSH_IGNORED = ("data/**", "cache/**", "checkpoint/**", "checkpoints/**", "best/**", "*.tmp")
"""What :func:`push_model` leaves out of a trained folder: the training examples (``data/``: the collection's own
texts), cached first-stage runs and training checkpoints."""


def push_model(
    folder: str | Path, repo: str, *, private: bool | None = None, token: str | None = None, revision: str | None = None
) -> str:
    """Upload a searchkit model folder to the Hugging Face Hub repository ``repo`` (``owner/name`` or
    ``hf://owner/name``; created when missing) through ``huggingface_hub.HfApi``; returns the commit URL.

    The card is read first, so a damaged model file is refused before anything is sent; a missing ``README.md``
    is written from it. The model files, ``searchkit.json``, ``README.md`` and the training log and curves go up;
    :data:`PUSH_IGNORED` does not. Load it back with ``hf://owner/name`` anywhere searchkit takes a model.
    """
    card = read_model_card(Path(folder))
    if not card:
        raise ConfigError(
            f"{folder}: not a searchkit model folder (no {MODEL_CARD}); push a folder `searchkit train` wrote"
        )
    if not (Path(folder) / README).is_file():
        write_readme(folder, card)
    return push_folder(folder, repo, ignore_patterns=PUSH_IGNORED, private=private, token=token, revision=revision)
