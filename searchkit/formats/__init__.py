"""Every file format searchkit reads or writes: BEIR folders, JSONL and TSV corpora and queries, TREC qrels
and runs (all optionally gzip'd), and ir-datasets ids (``irds:beir/scifact/test``).

Modules: ``files`` (sources, paths, hashes, atomic writes, lines), ``records`` (JSON and TSV records, ids, the
checks every field passes), ``documents`` (corpora, queries, id lists), ``trec`` (qrels and runs), ``feedback``
(the server's impression and feedback log, SQLite), ``pairs`` (labelled training pairs). Every public
name is importable from ``searchkit.formats``.

A *source* is a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), one file
(``.jsonl``, ``.tsv``, either gzip'd; other names are sniffed: a first line starting with ``{`` is JSONL)
or an ``irds:`` id. LF or CRLF line ends, a UTF-8 BOM and blank lines are all fine. Ids are always
stripped strings (JSON ``7`` is ``"7"``, ``"007"`` stays ``"007"``); titles default to ``""``; a null text
is ``""``. Bad data raises a DataError naming the file and its 1-based line. A corpus is streamed.

Ids (documents and queries) are single printable tokens: an id with whitespace of any kind (space, tab, newline,
``\u2028``, ...) or a control character is refused where it is read, with the file and line, because TREC runs,
qrels and ``docids.txt`` are whitespace- or line-separated and such an id would silently shift their columns or rows.
Everything else is kept verbatim, never escaped or rewritten: ``../x``, ``a/b``, quotes, non-ASCII, 10 KB ids.
Ids are never used as file names, and the doc store holds them JSON-encoded, so they cannot reach outside a file.

Readers never guess. A first line is a header only when the whole line is one: a TSV corpus or queries file's
first row is skipped when every column is a known name for its place (``_id``/``id``/``docid``/``qid``...,
``title``/``headline``, ``text``/``body``/``contents``/``query``...: ``docid<TAB>text``) and names the columns
when it holds the ``id_field`` and ``text_field`` and only other column names (``_id<TAB>text<TAB>year``); any
other first row is data, so a document whose id is ``id`` is kept. A qrels file's first line is a header only when
it is exactly one (``query-id corpus-id score``, ``qid Q0 docid rel``, ...); a first line such as
``1 13 relevant`` is an error (the grade is not an integer), never a skipped header. An id given twice is an error
naming the file and both lines: a document in a corpus, a query in a queries file, a document in one query's hits
of a run, a pair judged twice with two grades in qrels (the same judgment repeated is kept once). A JSON number
longer than Python's int-string limit (4,300 digits), a non-finite number as a text or title, a lone surrogate
(``"\\ud800"``, half a UTF-16 pair that UTF-8 cannot store) in any field, and a path that is a symlink loop are
each one line naming the file (and the line and field where there is one), never a traceback.

>>> docs = list(read_corpus("tests/data/tiny"))
>>> len(docs), docs[6].doc_id
(8, '007')
>>> sorted(read_qrels("tests/data/tiny", "test")["q1"].items())
[('d1', 2), ('d5', 1)]
"""

from __future__ import annotations

from searchkit.formats.documents import document_text, duplicate_summary, read_corpus, read_ids, read_queries
from searchkit.formats.feedback import (
    FEEDBACK_KINDS,
    Feedback,
    FeedbackLog,
    FeedbackStats,
    Impression,
    RankStats,
    hash_query,
)
from searchkit.formats.files import (
    IRDS_PREFIX,
    MODEL_FILE_SUFFIXES,
    Source,
    beir_file,
    check_model_files,
    corpus_path,
    existing,
    gather_ragged,
    is_irds,
    is_tsv,
    iter_lines,
    json_checksum,
    model_files,
    open_binary,
    resolved,
    save_npy_atomic,
    sha256_file,
    source_sha256,
    write_json_atomic,
)
from searchkit.formats.pairs import PAIRS_HEADER, LabelledPair, read_pairs, write_pairs
from searchkit.formats.records import (
    DOC_ID_HEADERS,
    MAX_DIGITS,
    QUERY_ID_HEADERS,
    Records,
    digit_count,
    get_id,
    get_text,
    id_problem,
    irds_records,
    nested_surrogate,
    parse_json_line,
    read_records,
    surrogate_problem,
)
from searchkit.formats.trec import is_qrels_header, read_qrels, read_run, write_run

__all__ = [
    "DOC_ID_HEADERS",
    "FEEDBACK_KINDS",
    "IRDS_PREFIX",
    "MAX_DIGITS",
    "MODEL_FILE_SUFFIXES",
    "PAIRS_HEADER",
    "QUERY_ID_HEADERS",
    "Feedback",
    "FeedbackLog",
    "FeedbackStats",
    "Impression",
    "LabelledPair",
    "RankStats",
    "Records",
    "Source",
    "beir_file",
    "check_model_files",
    "corpus_path",
    "digit_count",
    "document_text",
    "duplicate_summary",
    "existing",
    "gather_ragged",
    "get_id",
    "get_text",
    "hash_query",
    "id_problem",
    "irds_records",
    "is_irds",
    "is_qrels_header",
    "is_tsv",
    "iter_lines",
    "json_checksum",
    "model_files",
    "nested_surrogate",
    "open_binary",
    "parse_json_line",
    "read_corpus",
    "read_ids",
    "read_pairs",
    "read_qrels",
    "read_queries",
    "read_records",
    "read_run",
    "resolved",
    "save_npy_atomic",
    "sha256_file",
    "source_sha256",
    "surrogate_problem",
    "write_json_atomic",
    "write_pairs",
    "write_run",
]
