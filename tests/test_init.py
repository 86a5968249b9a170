"""The package's public names: every one resolves, and none of them is accidentally a module."""

from __future__ import annotations

import types

import searchkit


def test_every_public_name_resolves_to_an_api_object() -> None:
    for name in searchkit.__all__:
        value = getattr(searchkit, name)
        assert not isinstance(value, types.ModuleType), name


def test_importing_the_package_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, searchkit; print([m for m in ('torch', 'faiss', 'numpy', 'bm25s') if m in sys.modules])"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
