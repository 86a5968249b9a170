"""Which device and dtype a model runs with, and the CPU allocator and batch size that make it fast there.

``auto`` picks CUDA when torch sees a GPU, else the CPU (logged once); on the CPU, bf16 when it has AMX or
AVX512-BF16, else fp32 (:func:`resolve_dtype`). :func:`tune_cpu_allocator` and :func:`auto_batch_tokens` keep a
transformer's activation buffers reused instead of page-faulted in for every batch.

>>> resolve_device("cpu")
'cpu'
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from pathlib import Path
from typing import Any

from searchkit.config import DTYPES
from searchkit.models.loading import log_once
from searchkit.types import ConfigError


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

    tuned = False
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    if os.environ.get(TUNE_MALLOC_ENV, "1") != "0" and glibc:
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
