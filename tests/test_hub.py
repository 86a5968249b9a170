"""Models and indexes on the Hugging Face Hub (searchkit.models.hub, Index.open/push, the loaders, the push commands).

Downloads run offline (``HF_HUB_OFFLINE=1``) against a Hugging Face cache laid out here the way huggingface_hub
writes one (``models--owner--name/{refs,blobs,snapshots}``, snapshot files symlinked to their blobs); uploads run
the real ``HfApi`` client with its HTTP transport replaced (``huggingface_hub.set_client_factory`` with an
``httpx`` ``MockTransport``) by a fake Hub that records every request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, run_cli
from huggingface_hub import ModelCard

from searchkit.index import Index
from searchkit.models.cards import README, push_model, read_reranker_card, write_reranker_card
from searchkit.models.hub import parse_hub_ref, snapshot
from searchkit.search import Searcher
from searchkit.types import ConfigError, DataError, IndexFormatError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_hf_cache(cache: Path, repo_id: str, folder: Path, repo_type: str = "model") -> Path:
    """Lay ``folder`` out in the Hugging Face cache ``cache`` as huggingface_hub does after a download of
    ``repo_id`` at commit COMMIT (refs/main, blobs named by their sha256, snapshot files symlinked to them)."""
    from huggingface_hub.file_download import repo_folder_name

    storage = cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(COMMIT)
    snapshot_dir = storage / "snapshots" / COMMIT
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot_dir / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot_dir


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, with HF_HUB_OFFLINE=1 (huggingface_hub reads both at import: patched too)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("SEARCHKIT_CACHE", str(tmp_path / "searchkit-cache"))
    return cache


def test_hub_references_parse_and_bad_ones_are_refused() -> None:
    assert parse_hub_ref("hf://org/name@abc") == ("org/name", "model", "abc")
    assert parse_hub_ref("hf://datasets/org/name") == ("org/name", "dataset", None)
    for bad in ("hf://name-only", "hf://org/na me", "org/name"):
        with pytest.raises(ConfigError, match="hf://owner/name"):
            parse_hub_ref(bad)


def test_index_opens_from_the_cache_offline_and_is_verified(tmp_path: Path, offline_cache: Path) -> None:
    built = Index.build(TINY, tmp_path / "tiny")
    (built.path / "notes.txt").write_text("not part of the index")  # in the repository, not in the manifest
    snap = put_in_hf_cache(offline_cache, "org/tiny-index", built.path)
    opened = Index.open("hf://org/tiny-index")
    assert (opened.path / "docs.jsonl").resolve() == (snap / "docs.jsonl").resolve()  # the cached blob, read in place
    assert not (opened.path / "notes.txt").exists()
    assert opened.num_docs == built.num_docs == 8
    assert Searcher(opened).search("cats chase mice", 3) == Searcher(built).search("cats chase mice", 3)
    assert (opened.path / ".verified").read_text() == built.manifest["checksum"]  # verified once in this folder
    again = Index.open(f"hf://org/tiny-index@{COMMIT}")  # a pinned revision: the same commit, the same folder
    assert again.path == opened.path and again.num_docs == 8


def test_a_tampered_cached_index_file_is_refused(tmp_path: Path, offline_cache: Path) -> None:
    built = Index.build(TINY, tmp_path / "tiny")
    snap = put_in_hf_cache(offline_cache, "org/tiny-index", built.path)
    blob = (snap / "docs.jsonl").resolve()
    blob.write_bytes(blob.read_bytes().replace(b"Cats", b"Bats"))  # same size, other bytes
    with pytest.raises(IndexFormatError, match=r"checksum mismatch in docs\.jsonl"):
        Index.open("hf://org/tiny-index")


def test_a_cached_index_tampered_after_its_first_open_is_refused_by_verify(tmp_path: Path, offline_cache: Path) -> None:
    built = Index.build(TINY, tmp_path / "tiny")
    snap = put_in_hf_cache(offline_cache, "org/tiny-index", built.path)
    Index.open("hf://org/tiny-index")
    blob = (snap / "docids.txt").resolve()
    blob.write_bytes(blob.read_bytes().replace(b"d1", b"e1"))
    with pytest.raises(IndexFormatError, match=r"docids\.txt"):
        Index.open("hf://org/tiny-index", verify=True)


def test_a_repository_missing_offline_names_the_cache_and_the_fix(offline_cache: Path) -> None:
    with pytest.raises(ConfigError, match=r"'org/absent' is not in the local cache .*HF_HUB_OFFLINE is set"):
        Index.open("hf://org/absent")
    with pytest.raises(ConfigError, match="not in the local cache"):
        snapshot("hf://datasets/org/absent")


def test_a_repository_without_a_manifest_is_not_an_index(tmp_path: Path, offline_cache: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    put_in_hf_cache(offline_cache, "org/not-an-index", tmp_path / "m")
    with pytest.raises(IndexFormatError, match="not a searchkit index"):
        Index.open("hf://org/not-an-index")


@pytest.fixture
def carded_reranker(tiny_cross_encoder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-reranker"
    shutil.copytree(tiny_cross_encoder, folder)
    write_reranker_card(folder, {"base_model": {"name": "all-MiniLM-L6-v2"}, "max_length": 64})
    return folder


def test_reranker_loads_from_the_cache_offline(carded_reranker: Path, offline_cache: Path) -> None:
    from searchkit.models.cross_encoder import CrossEncoderReranker

    put_in_hf_cache(offline_cache, "org/tiny-reranker", carded_reranker)
    local = CrossEncoderReranker(carded_reranker, device="cpu")
    pulled = CrossEncoderReranker("hf://org/tiny-reranker", device="cpu")
    assert pulled.card["max_length"] == 64
    pairs = (["apple pie"], ["apple pie recipe"])
    assert pulled.score(*pairs) == local.score(*pairs)


def test_a_tampered_cached_model_file_is_refused_by_its_card(carded_reranker: Path, offline_cache: Path) -> None:
    snap = put_in_hf_cache(offline_cache, "org/tiny-reranker-damaged", carded_reranker)
    blob = (snap / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"model file model\.safetensors differs"):
        read_reranker_card("hf://org/tiny-reranker-damaged")


def test_dense_model_loads_from_the_cache_offline_and_its_card_checks_it(
    tiny_bi_encoder: Path, tmp_path: Path, offline_cache: Path
) -> None:
    from searchkit.models.cards import write_model_card
    from searchkit.models.encoder import Encoder

    folder = tmp_path / "tiny-bi"
    shutil.copytree(tiny_bi_encoder, folder)
    write_model_card(folder, "dense", {"base_model": {"name": str(tiny_bi_encoder)}})
    snap = put_in_hf_cache(offline_cache, "org/tiny-bi", folder)
    texts = ["apple banana", "cherry delta echo"]
    assert (
        Encoder("hf://org/tiny-bi", device="cpu").encode(texts) == Encoder(str(folder), device="cpu").encode(texts)
    ).all()
    blob = (snap / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"model file model\.safetensors differs"):
        Encoder("hf://org/tiny-bi", device="cpu")


def test_index_verify_command_takes_a_hub_index(
    tmp_path: Path, offline_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_in_hf_cache(offline_cache, "org/tiny-index", Index.build(TINY, tmp_path / "tiny").path)
    code, out, err = run_cli(["index", "verify", "hf://org/tiny-index"], capsys)
    assert code == 0, err
    assert "ok (8 documents" in out


class FakeHub:
    """The Hub endpoints create_repo and upload_folder call (repos/create, preupload, commit), recording requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.tokens: set[tuple[str, str | None]] = set()

    def __call__(self, request: Any) -> Any:
        import httpx2

        body = request.read()
        self.requests.append((request.method, request.url.path, body))
        self.tokens.add((request.url.path, request.headers.get("authorization")))
        path = request.url.path
        if request.method == "POST" and path == "/api/validate-yaml":  # upload_folder checks a README's metadata
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if request.method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{payload['organization']}/x"})
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            return httpx2.Response(
                200,
                json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
            )
        if "/commit/" in path:
            return httpx2.Response(
                200, json={"commitUrl": "https://huggingface.co/c/" + "b" * 40, "commitOid": "b" * 40}
            )
        return httpx2.Response(404, json={"error": f"{request.method} {path} is not faked"})

    def committed(self) -> dict[str, bytes]:
        """The files of the (one) commit: path -> content."""
        commits = [body for method, path, body in self.requests if "/commit/" in path]
        assert len(commits) == 1
        lines = [json.loads(line) for line in commits[0].decode().splitlines()]
        return {
            line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines if line["key"] == "file"
        }


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    import httpx2
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hub = FakeHub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(
            transport=httpx2.MockTransport(hub),
            event_hooks={"request": [_http.hf_request_event_hook]},
            follow_redirects=True,
        )
    )
    yield hub
    huggingface_hub.set_client_factory(_http.default_client_factory)


def test_index_push_uploads_the_manifest_and_its_files_only(
    tmp_path: Path, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    built = Index.build(TINY, tmp_path / "tiny")
    (built.path / ".notes").write_text("hidden, not part of the index")
    code, out, err = run_cli(["index", "push", str(built.path), "org/tiny-index"], capsys)
    assert code == 0, err
    assert "pushed to org/tiny-index" in out
    create = [body for method, path, body in fake_hub.requests if path == "/api/repos/create"]
    assert json.loads(create[0]) == {"name": "tiny-index", "organization": "org", "type": "model"}
    assert any(path == "/api/models/org/tiny-index/commit/main" for _, path, _ in fake_hub.requests)
    committed = fake_hub.committed()
    assert sorted(committed) == sorted(["manifest.json", *built.manifest["files"]])
    assert all(committed[name] == (built.path / name).read_bytes() for name in committed)
    sent = {token for path, token in fake_hub.tokens if path.startswith(("/api/repos/", "/api/models/"))}
    assert sent == {"Bearer hf_fake_token_for_tests"}  # huggingface_hub's own token (HF_TOKEN) on every repo call


def test_a_damaged_index_is_not_pushed(tmp_path: Path, fake_hub: FakeHub) -> None:
    built = Index.build(TINY, tmp_path / "tiny")
    docs = built.path / "docs.jsonl"
    docs.write_bytes(docs.read_bytes().replace(b"Cats", b"Bats"))
    with pytest.raises(IndexFormatError):
        Index.open(built.path).push("org/tiny-index")
    assert fake_hub.requests == []


def test_model_push_uploads_the_model_and_its_readme_not_the_training_data(
    carded_reranker: Path, fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    (carded_reranker / "data").mkdir()
    (carded_reranker / "data" / "train_pairs.jsonl").write_text("{}\n")
    (carded_reranker / README).unlink()  # written again from the card before the push
    code, _, err = run_cli(["push", str(carded_reranker), "hf://org/tiny-reranker"], capsys)
    assert code == 0, err
    committed = fake_hub.committed()
    assert "README.md" in committed and "searchkit.json" in committed and "model.safetensors" in committed
    assert not any(name.startswith("data/") for name in committed)
    validated = [json.loads(body) for _, path, body in fake_hub.requests if path == "/api/validate-yaml"]
    assert ModelCard(validated[0]["content"]).data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert committed["model.safetensors"] == (carded_reranker / "model.safetensors").read_bytes()


def test_a_folder_without_a_card_is_not_pushed(tiny_cross_encoder: Path, fake_hub: FakeHub) -> None:
    with pytest.raises(ConfigError, match="not a searchkit model folder"):
        push_model(tiny_cross_encoder, "org/x")
    assert fake_hub.requests == []
