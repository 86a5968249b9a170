"""The Index: an opened index folder (:class:`searchkit.index.bundle.IndexBundle`) with the operations that make its
next generation as methods — build, add components, update, delete and compact documents.

Each operation lives in its own module one layer above the bundle (:mod:`searchkit.index.build`,
:mod:`searchkit.index.update`), takes what it needs from the opened bundle, writes and swaps in a new generation,
and returns the folder; the methods here open it. This object keeps serving the generation it opened.

>>> import tempfile, pathlib
>>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "i")
>>> index.num_docs, index.update(delete=["d2"]).num_docs
(8, 7)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from searchkit.config import BM25Config, DenseConfig, FilterConfig, TokensConfig, UpdateConfig
from searchkit.index.build import add_components, build_index
from searchkit.index.bundle import IndexBundle
from searchkit.index.layout import MANIFEST
from searchkit.index.manifest import read_manifest
from searchkit.index.update import update_index
from searchkit.models.hub import is_hub_ref, push_folder, snapshot, snapshot_view
from searchkit.retrieval.dense import ShardEncoding
from searchkit.types import Document, IndexFormatError

VERIFIED = ".verified"
"""In the folder an ``hf://`` index is opened from: the checksum of the manifest whose files were all verified
there (hidden: no index file)."""


class Index(IndexBundle):
    """A self-describing index folder: doc store, doc ids, and the retrieval components built over them.

    >>> import tempfile, pathlib
    >>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "idx")
    >>> sorted(index.components)
    ['bm25']
    """

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        verify: bool = False,
        device: str | None = None,
        dense_model: str | None = None,
    ) -> Index:
        """Open an index folder (:meth:`IndexBundle.open`), or an index on the Hugging Face Hub.

        ``path`` ``hf://owner/name[@revision]`` (or ``hf://datasets/owner/name``): its manifest is downloaded
        first, then exactly the files it lists (``huggingface_hub.snapshot_download`` into the Hugging Face cache;
        with ``HF_HUB_OFFLINE=1`` only the cache is read), and the downloaded index is opened with ``verify=True``:
        every file's sha256 against the manifest, so a damaged download or a tampered cache is refused. It is
        opened from a folder of links to exactly those files (:func:`searchkit.models.hub.snapshot_view`: the
        cache's snapshot may hold other files of the repository); once verified there, later opens of the same
        commit make the cheap checks of every open only (files up to ``OPEN_HASH_LIMIT`` hashed) unless
        ``verify=True``.
        """
        if is_hub_ref(path):
            assert isinstance(path, str)
            folder = snapshot(path, allow_patterns=[MANIFEST])
            manifest = read_manifest(folder)
            listed = manifest.get("files") if isinstance(manifest, dict) else None
            if not isinstance(listed, dict):
                raise IndexFormatError(
                    f"{path}: not a searchkit index (no readable {MANIFEST} listing its files in {folder}); push "
                    "one with `searchkit index push DIR REPO`"
                )
            files = [MANIFEST, *sorted(listed)]
            folder = snapshot_view(path, snapshot(path, allow_patterns=files), files)
            marker = folder / VERIFIED
            checked = marker.is_file() and marker.read_text(encoding="utf-8") == str(manifest.get("checksum"))
            index = super().open(folder, verify=verify or not checked, device=device, dense_model=dense_model)
            if not checked:
                marker.write_text(str(manifest.get("checksum")), encoding="utf-8")
            return index
        return super().open(path, verify=verify, device=device, dense_model=dense_model)

    def push(
        self, repo: str, *, private: bool | None = None, token: str | None = None, revision: str | None = None
    ) -> str:
        """Upload this index to the Hugging Face Hub repository ``repo`` (``owner/name``, or ``hf://owner/name``,
        ``hf://datasets/owner/name``; created when missing) through ``huggingface_hub.HfApi``; returns the commit
        URL. The index is verified first; the manifest and the files it lists go up, nothing else. Open it
        anywhere with ``Index.open("hf://owner/name")``.
        """
        self.verify()
        files = [MANIFEST, *sorted(self.manifest.get("files", {}))]
        return push_folder(self.path, repo, allow_patterns=files, private=private, token=token, revision=revision)

    @classmethod
    def build(
        cls,
        corpus: str | Path | Iterable[Document],
        path: str | Path,
        *,
        bm25: BM25Config | Sequence[BM25Config] | None = BM25Config(),  # noqa: B008 - frozen dataclass, safe as a default
        dense: DenseConfig | None = None,
        tokens: TokensConfig | None = None,
        filters: FilterConfig | None = None,
        overwrite: bool = False,
        show_progress: bool = False,
        id_field: str = "_id",
        title_field: str = "title",
        text_field: str = "text",
        metadata_fields: Sequence[str] = (),
        encoding: ShardEncoding | None = None,
        force: bool = False,
    ) -> Index:
        """Build an index over ``corpus`` (BEIR dir, JSONL/TSV file, ``irds:<id>`` or Documents) at ``path``.

        ``bm25``: a BM25Config, or several with different analyzers (``bm25`` and ``bm25.<analyzer>``: each a first
        stage the Searcher can fuse). ``tokens``: also store every document's token ids (tokenized once, before dense
        encoding, which then uses them when the tokenizers match); a reranker with the same tokenizer reads them instead
        of the texts. Documents keep their metadata (BEIR's ``metadata`` object, plus the corpus columns
        ``metadata_fields`` and the ``filters`` fields name); ``filters`` stores the fields it declares column-wise for
        filtered searches. ``encoding``: who encodes the dense component (None: this process;
        ``searchkit.distributed.encoding.RayEncoding(RayConfig(...))``: Ray actors; the same files either way). A plan
        of the build (:func:`searchkit.index.plan.check_build`: disk, peak RAM) is logged first, and a build whose plan
        exceeds the free disk is refused unless ``force``.

        >>> import tempfile, pathlib
        >>> Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "i").num_docs
        8
        """
        folder = build_index(
            corpus,
            path,
            bm25=bm25,
            dense=dense,
            tokens=tokens,
            filters=filters,
            overwrite=overwrite,
            show_progress=show_progress,
            id_field=id_field,
            title_field=title_field,
            text_field=text_field,
            metadata_fields=metadata_fields,
            encoding=encoding,
            force=force,
        )
        return cls.open(folder)

    def add(
        self,
        *,
        bm25: BM25Config | Sequence[BM25Config] | None = None,
        dense: DenseConfig | None = None,
        tokens: TokensConfig | None = None,
        filters: FilterConfig | None = None,
        overwrite: bool = False,
        show_progress: bool = False,
        encoding: ShardEncoding | None = None,
    ) -> Index:
        """Add (or with ``overwrite`` replace) a component without rebuilding the others; returns the re-opened index.

        The new generation is assembled next to the index (hard links to the files it keeps, the new component
        built beside them, a new manifest) and swapped in whole, so a failure or a crash leaves the index as it
        was and readers never see half of it. Replacing a dense component whose embedding settings are unchanged
        (only the FAISS type or search parameters differ) reuses the stored fp16 embeddings instead of re-encoding.
        Encoding a dense component reads the index's stored tokens when its tokenizer is theirs (no document is
        tokenized again); replacing the tokens with a shorter ``max_length`` of the same tokenizer cuts the stored
        ids instead of tokenizing again.
        """
        folder = add_components(
            self,
            bm25=bm25,
            dense=dense,
            tokens=tokens,
            filters=filters,
            overwrite=overwrite,
            show_progress=show_progress,
            encoding=encoding,
        )
        return type(self).open(folder)

    def update(
        self,
        add: Iterable[Document] | str | Path | None = None,
        delete: Iterable[str] = (),
        *,
        compact: bool | None = None,
        config: UpdateConfig | None = None,
        show_progress: bool = False,
    ) -> Index:
        """Add documents (a document whose id is in the index replaces it), delete documents by id, and return the
        index re-opened on the new generation; this object keeps serving the old one.

        ``add``: Documents, or a corpus (read with the fields the index was built with). Everything happens in one
        atomic step (see :mod:`searchkit.index.update`): a failure or a crash leaves the index as it was. Deleted
        and replaced documents stay as tombstones until a compaction: ``compact=True`` compacts now, None (the
        default) when tombstones pass ``UpdateConfig.compact_ratio`` of the rows. BM25 scores afterwards equal those
        of a fresh build of the same documents; new documents are encoded with the index's dense model.

        >>> import tempfile, pathlib
        >>> index = Index.build("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "i")
        >>> index.update(add=[Document("d1", "Updated text")], delete=["d2"]).document("d1").text
        'Updated text'
        """
        folder = update_index(self, add, delete, compact, config or UpdateConfig(), show_progress)
        return self if folder is None else type(self).open(folder)

    def add_documents(self, docs: Iterable[Document] | str | Path, **options: Any) -> Index:
        """:meth:`update` with ``add=docs``: add documents, replacing those with the same ids; the new generation."""
        return self.update(add=docs, **options)

    def delete_documents(self, doc_ids: Iterable[str], **options: Any) -> Index:
        """:meth:`update` with ``delete=doc_ids``; the new generation."""
        return self.update(delete=doc_ids, **options)

    def compact(self) -> Index:
        """Rewrite the index without its tombstones (rows renumbered, nothing re-encoded); the new generation, or
        this index when it has none."""
        return self.update(compact=True)
