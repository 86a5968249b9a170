"""Analyzers (searchkit.text.analyzers): each named analyzer on mixed scripts, full-width forms, Traditional characters,
digits, empty and punctuation-only text; old indexes read as before; a query analyzed by another analyzer is refused;
BM25 over several analyzers in one index, each a first stage, fused."""

from __future__ import annotations

import json
from pathlib import Path

import bm25s
import pytest

from searchkit.config import ANALYZERS, BM25Config
from searchkit.index import Index
from searchkit.search import Searcher
from searchkit.text.analyzers import TOKEN_PATTERN, Analyzer
from searchkit.types import ConfigError

ZH = Path(__file__).resolve().parent / "data" / "zh"
TINY = Path(__file__).resolve().parent / "data" / "tiny"


def terms(analyzer: str, text: str, **settings: object) -> list[str]:
    return Analyzer.from_config(BM25Config(analyzer=analyzer, **settings)).terms(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("analyzer", ANALYZERS)
def test_empty_and_punctuation_only_text_has_no_terms(analyzer: str) -> None:
    for text in ("", "   ", "，。！？、；：（）《》", "!!! ... ---", "\u3000\u3000"):
        assert terms(analyzer, text) == []


def test_en_is_bm25s_tokenizer_and_keeps_short_words_only_when_asked() -> None:
    text = "The winds of change: vitamin C and X-ray in 5 children"
    tokenizer = bm25s.tokenization.Tokenizer(stemmer=__import__("Stemmer").Stemmer("english"), stopwords="en")
    ids = tokenizer.tokenize([text], return_as="ids", show_progress=False)
    vocab = {v: k for k, v in tokenizer.get_vocab_dict().items()}
    assert terms("en", text) == [vocab[i] for i in ids[0]] == ["wind", "chang", "vitamin", "ray", "children"]
    assert terms("en", text, min_token_length=1) == ["wind", "chang", "vitamin", "c", "x", "ray", "5", "children"]


def test_cjk_bigrams_mixed_scripts_full_width_and_digits() -> None:
    text = "癌症治疗 儿童 iPhone13价格 ＡＢＣ１２３ 的 x"
    assert terms("cjk-bigram", text) == ["癌症", "症治", "治疗", "儿童", "iphone13", "价格", "abc123", "的"]
    assert terms("cjk-unigram-bigram", "癌症治疗") == ["癌", "症", "治", "疗", "癌症", "症治", "治疗"]
    assert terms("cjk-bigram", "Running dogs 跑步") == ["run", "dog", "跑步"]  # the English part stemmed
    assert terms("cjk-bigram", "x 光", min_token_length=1) == ["x", "光"]


def test_traditional_characters_meet_their_simplified_forms() -> None:
    for analyzer in ("cjk-bigram", "cjk-unigram-bigram", "zh"):
        assert terms(analyzer, "電腦下載") == terms(analyzer, "电脑下载")
        assert terms(analyzer, "臺灣") == terms(analyzer, "台湾")


def test_zh_segments_words_with_jiebas_dictionary() -> None:
    assert terms("zh", "癌症治疗 儿童") == ["癌症", "治疗", "儿童"]
    assert terms("zh", "中国建设银行") == [
        "中国",
        "国建",
        "建设",
        "银行",
        "中国建设银行",
    ]  # search mode: words inside too
    assert terms("zh", "iPhone13价格") == ["iphone13", "价格"]


def test_an_index_written_before_analyzers_had_names_reads_as_en() -> None:
    legacy = {"lowercase": True, "token_pattern": TOKEN_PATTERN, "stemmer": "english", "stopwords": "en"}
    legacy["stopword_list"] = ["the", "of"]
    analyzer = Analyzer.from_json(legacy)
    assert analyzer.kind == "en" and analyzer.terms("The winds of change") == ["wind", "chang"]
    assert Analyzer.from_json(analyzer.to_json()).terms("The winds") == ["wind"]


def test_chinese_search_finds_what_todays_splitter_did_not(tmp_path: Path) -> None:
    """A whole Han run was one token: `searchkit search DIR "癌症" --mode bm25` found nothing (issue 22)."""
    whole_runs = Index.build(ZH, tmp_path / "en", bm25=BM25Config())
    assert whole_runs.bm25 is not None and whole_runs.bm25.search("癌症", 5) == []
    for analyzer in ("cjk-bigram", "cjk-unigram-bigram", "zh"):
        index = Index.build(ZH, tmp_path / analyzer, bm25=BM25Config(analyzer=analyzer))
        assert index.bm25 is not None
        assert index.bm25.search("癌症", 5)[0].doc_id == "z1"
        assert index.bm25.search("电脑软件下载", 5)[0].doc_id == "z5"  # the document is written in Traditional
        assert index.bm25.search("ABC123 手机", 5)[0].doc_id == "z7"  # full-width in the document
        assert index.components["bm25"].analyzer == analyzer
        saved = json.loads((index.path / "bm25" / "searchkit.json").read_text(encoding="utf-8"))
        assert saved["analyzer"]["kind"] == analyzer and saved["analyzer"]["normalize"] == "NFKC"


def test_a_query_analyzed_by_another_analyzer_is_refused(tmp_path: Path) -> None:
    index = Index.build(ZH, tmp_path / "zh", bm25=BM25Config(analyzer="zh"))
    bm25 = index.bm25
    assert bm25 is not None
    own = bm25.analyzer.analyze("癌症治疗")
    assert bm25.search_batch([own], 3) == bm25.search_batch(["癌症治疗"], 3)  # its own analysis: the same hits
    other = Analyzer.from_config(BM25Config(analyzer="cjk-bigram")).analyze("癌症治疗")
    with pytest.raises(ConfigError, match="a query analyzed by another analyzer"):
        bm25.search_batch([other], 3)


def test_bm25_over_several_analyzers_in_one_index_each_a_first_stage(tmp_path: Path) -> None:
    configs = [BM25Config(analyzer="zh"), BM25Config(analyzer="cjk-bigram")]
    index = Index.build(ZH, tmp_path / "both", bm25=configs)
    assert list(index.manifest["components"]) == ["bm25", "bm25.cjk-bigram"]
    assert (index.path / "bm25.cjk-bigram" / "searchkit.json").is_file()
    searcher = Searcher(index)  # auto: hybrid over both BM25 stages (no dense needed)
    assert searcher.mode == "hybrid" and searcher.fused == ["bm25", "bm25.cjk-bigram"]
    stages = searcher.stages(["癌症治疗 儿童"], 5)
    assert set(stages) == {"bm25", "bm25.cjk-bigram", "hybrid"}
    assert stages["bm25.cjk-bigram"][0] == Searcher(index, mode="bm25.cjk-bigram").search("癌症治疗 儿童", 5)
    assert searcher.search("癌症治疗 儿童", 1)[0].doc_id == "z1"
    updated = index.update(add=[])  # nothing to do: the same generation
    assert updated.generation == index.generation
    grown = index.add_documents([__import__("searchkit").Document("z9", "儿童癌症的新疗法")])
    assert {hit.doc_id for hit in Searcher(grown, mode="bm25.cjk-bigram").search("儿童癌症", 3)} >= {"z9", "z1"}
    Index.open(grown.path, verify=True)
    with pytest.raises(ConfigError, match="two BM25 components with the zh analyzer"):
        Index.build(ZH, tmp_path / "twice", bm25=[BM25Config(analyzer="zh"), BM25Config(analyzer="zh", k1=1.2)])
    with pytest.raises(ConfigError, match=r"unknown search mode 'bm25\.en'"):
        Searcher(index, mode="bm25.en")


def test_add_puts_another_analyzer_beside_the_first(tmp_path: Path) -> None:
    index = Index.build(ZH, tmp_path / "grow", bm25=BM25Config(analyzer="cjk-bigram"))
    index = index.add(bm25=BM25Config(analyzer="zh"))
    assert list(index.manifest["components"]) == ["bm25", "bm25.zh"]
    assert index.components["bm25"].analyzer == "cjk-bigram" and index.components["bm25.zh"].analyzer == "zh"
