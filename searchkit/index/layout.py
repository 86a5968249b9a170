"""The layout of an index folder, and the names of the files the index itself writes.

::

    <name>/
      manifest.json        format, format_version (int), searchkit_version, created, num_docs, num_rows,
                           generation, source (path + sha256), fields, components {name: {config, ...}},
                           files {relpath: sha256}, sizes {relpath: bytes}, checksum (of all the other keys)
      docids.txt           row i of every component is the document on line i
      docs.jsonl           doc store: one JSON object per document ({"_id", "title", "text"}, and "metadata" when
                           the document has any)
      docs.offsets.npy     int64 byte offsets into docs.jsonl (num_rows + 1 entries), memory-mapped: one seek a doc
      deleted.npy          only after an update deleted or replaced documents: the sorted int64 rows that are
                           tombstones (every stage skips them; a compaction rewrites the index without them)
      bm25/                BM25Retriever files (bm25s arrays + vocab + analyzer settings + term frequencies)
      tokens/              DocumentTokens files: every document's token ids (int32 ids.npy + int64 offsets.npy,
                           tokenizer.json); the manifest's entry also records the tokenizer's fingerprint
      dense/               DenseRetriever files (embeddings fp16 .npy + index.faiss)
      filters/             FilterColumns files: the declared filterable metadata fields, column-wise

Beside the folder, while a generation is made: ``.<name>.building`` (the next generation, assembled), ``.<name>.old``
(the previous one, between the two renames of a swap) and ``.<name>.lock`` (see :mod:`searchkit.index.generations`).
No pickle anywhere: JSON, ``.npy`` with ``allow_pickle=False``, FAISS's own format, bm25s's arrays.

>>> MANIFEST, DOCIDS
('manifest.json', 'docids.txt')
"""

FORMAT = "searchkit-index"
FORMAT_VERSION = 2
"""The index format this searchkit writes; a manifest with a newer one is refused on open. 2: the manifest's
``checksum`` and ``sizes`` are required (format 1 indexes open as before; those with ``sizes`` must keep their
checksum too), the dense component records its query-side settings in ``model.json``."""
MANIFEST = "manifest.json"
DOCIDS = "docids.txt"
DOCSTORE = "docs.jsonl"
OFFSETS = "docs.offsets.npy"
DELETED = "deleted.npy"
BUILD_STATE = "build-state.json"
"""In ``.<name>.building`` only: the inputs of an interrupted build, so the same build resumes it."""
OPEN_HASH_LIMIT = 16 << 20
"""Files of at most this many bytes are hashed on every open (all of a small index); larger ones only by verify."""
