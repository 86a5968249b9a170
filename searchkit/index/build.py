"""Building an index, and adding (or replacing) components of an existing one, as new generations.

:func:`build_index` streams the corpus into a doc store, builds every component from it (tokens before dense, which
encodes them), writes the manifest last and swaps the folder in (:mod:`searchkit.index.generations`).
:func:`add_components` assembles the next generation of an index from hard links to the files it keeps plus the new
components. Both log a plan of the work first (:func:`searchkit.index.plan.check_build`: disk and peak RAM, no model
loaded) and refuse one that would not fit on the disk. Dense encoding runs in this process, or on whatever
``encoding`` backend the caller passes (Ray actors: :class:`searchkit.distributed.encoding.RayEncoding`).

Both return the folder; :class:`searchkit.index.Index` opens it.

>>> import tempfile, pathlib
>>> folder = build_index("tests/data/tiny", pathlib.Path(tempfile.mkdtemp()) / "tiny")
>>> (folder / "manifest.json").is_file()
True
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from searchkit.config import BM25Config, DenseConfig, FilterConfig, TokensConfig
from searchkit.faults import checkpoint
from searchkit.formats import is_irds, read_corpus, resolved, source_sha256
from searchkit.index.bundle import IndexBundle
from searchkit.index.components import (
    COMPONENTS,
    bm25_components,
    component_entry,
    component_kind,
    config_dicts,
    retrieving,
)
from searchkit.index.docstore import DocStore, write_docstore
from searchkit.index.generations import (
    build_lock,
    building_dir,
    changing,
    check_replaceable,
    link_tree,
    move_into_place,
    prepare_build_dir,
    recover,
    write_target,
)
from searchkit.index.layout import BUILD_STATE, FORMAT, FORMAT_VERSION, MANIFEST
from searchkit.index.manifest import write_manifest
from searchkit.index.plan import check_build
from searchkit.models.loading import identity_key, model_identity
from searchkit.retrieval.bm25 import BM25Retriever
from searchkit.retrieval.dense import ShardEncoding, same_embeddings
from searchkit.retrieval.tokens import DocumentTokens
from searchkit.types import ConfigError, Document
from searchkit.version import __version__

logger = logging.getLogger(__name__)


def describe_source(corpus: str | Path | Iterable[Document]) -> dict[str, Any]:
    """The manifest's ``source``: the corpus path (resolved) or ir-datasets id and its sha256; nulls for Documents.

    A path that does not lead to a file (missing, a symlink loop, a dangling link) is a one-line DataError naming it.
    """
    if isinstance(corpus, str | Path):
        path = str(corpus) if is_irds(corpus) else str(resolved(corpus))
        return {"path": path, "sha256": source_sha256(corpus)}
    return {"path": None, "sha256": None}


def check_apart(corpus: str | Path | Iterable[Document], target: Path) -> None:
    """ConfigError when the index folder would be, contain or lie inside the corpus (a rebuild replaces the folder
    whole, so it must never hold the data it is built from).

    >>> check_apart("tests/data/tiny", Path("tests/data/tiny/index"))
    Traceback (most recent call last):
    ...
    searchkit.types.ConfigError: tests/data/tiny/index lies inside the corpus tests/data/tiny: write the index elsewhere
    """
    if not isinstance(corpus, str | Path) or is_irds(corpus):
        return
    source, out = Path(corpus).absolute(), target.absolute()
    for candidate in {source, Path(os.path.realpath(source))}:
        for where in {out, Path(os.path.realpath(out))}:
            if where == candidate:
                relation = "is"
            elif candidate in where.parents:
                relation = "lies inside"
            elif where in candidate.parents:
                relation = "contains"
            else:
                continue
            raise ConfigError(f"{target} {relation} the corpus {corpus}: write the index elsewhere")


def build_component(
    name: str,
    config: Any,
    folder: Path,
    docids: list[str],
    show_progress: bool,
    *,
    tokens: Any = None,
    encoding: ShardEncoding | None = None,
) -> Any:
    """Build component ``name`` into ``folder / name`` from the doc store in ``folder`` (streamed again from disk).

    ``tokens``: the index's stored document tokens, handed to the dense component (it encodes them when it can).
    ``encoding``: who encodes the dense shards (None: this process); it reads the rows from the doc store itself.
    """
    target = folder / name
    target.mkdir(exist_ok=True)
    store = DocStore(folder)
    logger.info("building %s component over %d documents", name, len(docids))
    extra: dict[str, Any] = {}
    if name == "dense":
        extra = {"tokens": tokens, "encoding": encoding, "store": folder}
    return COMPONENTS[component_kind(name)].retriever_class.build(  # type: ignore[attr-defined]
        iter(store), target, config, docids, show_progress=show_progress, **extra
    )


def build_index(
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
) -> Path:
    """Build an index over ``corpus`` at ``path`` (see :meth:`searchkit.index.Index.build`); returns the folder."""
    target = write_target(path)
    configs: dict[str, Any] = {**bm25_components(bm25), "tokens": tokens, "dense": dense, "filters": filters}
    if not retrieving(name for name, config in configs.items() if config is not None):
        raise ConfigError("nothing to build: enable BM25 and/or dense (e.g. drop --no-bm25 or add --dense)")
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    check_apart(corpus, target)
    check_replaceable(target)
    if encoding is not None and dense is None:
        logger.info("no dense component to encode: the encoding backend is not used")
    with build_lock(target):
        recover(target)
        if target.exists() and not overwrite:
            raise ConfigError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
        check_replaceable(target)  # again under the lock: what stands there now is what the swap replaces
        source = describe_source(corpus)
        fields: dict[str, Any] = {"id": id_field, "title": title_field, "text": text_field}
        kept = list(dict.fromkeys([*metadata_fields, *(filters.types if filters is not None else ())]))
        if kept:
            fields["metadata"] = kept
        check_build(corpus, target, configs, fields, force=force)
        building = building_dir(target)
        state = {"source": source, "fields": fields, "components": config_dicts(configs)}
        prepare_build_dir(building, state)
        try:
            if isinstance(corpus, str | Path):
                docs: Iterable[Document] = read_corpus(
                    corpus, id_field=id_field, title_field=title_field, text_field=text_field, metadata_fields=kept
                )
            else:
                docs = corpus
            docids = write_docstore(docs, building, show_progress)
            logger.info("stored %d documents from %s", len(docids), source["path"] or "an iterable")
            checkpoint("index.build.docstore")
            entries: dict[str, Any] = {}
            stored: Any = None
            for name, config in configs.items():
                if config is not None:
                    built = build_component(
                        name, config, building, docids, show_progress, tokens=stored, encoding=encoding
                    )
                    stored = built if name == "tokens" else stored
                    entries[name] = component_entry(config, built)
                    checkpoint("index.build.component")
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "searchkit_version": __version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "generation": 1,
                "num_docs": len(docids),
                "num_rows": len(docids),
                "source": source,
                "fields": fields,
                "components": entries,
                "files": {},
            }
            (building / BUILD_STATE).unlink(missing_ok=True)
            write_manifest(building, manifest)
            checkpoint("index.build.manifest")
            move_into_place(building, target, "index.build")
        except KeyboardInterrupt:
            logger.warning("build interrupted; partial work kept in %s: run the same build again to resume", building)
            raise
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    logger.info("built %s (%d docs, components: %s)", target, len(docids), ", ".join(manifest["components"]))
    return target


def add_components(
    index: IndexBundle,
    *,
    bm25: BM25Config | Sequence[BM25Config] | None = None,
    dense: DenseConfig | None = None,
    tokens: TokensConfig | None = None,
    filters: FilterConfig | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
    encoding: ShardEncoding | None = None,
) -> Path:
    """Add (or with ``overwrite`` replace) components of ``index`` (see :meth:`searchkit.index.Index.add`);
    returns the folder, holding the new generation. A BM25 config whose analyzer is not the ``bm25`` component's
    is added beside it as ``bm25.<analyzer>``."""
    given = {**_bm25_to_add(index, bm25), "tokens": tokens, "dense": dense, "filters": filters}
    configs = {name: config for name, config in given.items() if config is not None}
    if not configs:
        raise ConfigError(
            "nothing to add: pass bm25=BM25Config(...), dense=DenseConfig(...), tokens=TokensConfig(...) and/or "
            "filters=FilterConfig(...)"
        )
    for name in configs:
        if name in index.manifest["components"] and not overwrite:
            raise ConfigError(f"{index.path} already has a {name} component; pass overwrite=True to replace it")
    with changing(index, "add") as (target, building):
        state = {"add": config_dicts(configs), "base": index.manifest.get("checksum") or index.fingerprint()}
        prepare_build_dir(building, state)
        try:
            for entry in target.iterdir():
                if entry.name not in (MANIFEST, *configs) and not entry.name.startswith("."):
                    link_tree(entry, building / entry.name)
            stored: Any = index.tokens if "tokens" not in configs else None
            entries: dict[str, Any] = {}
            for name, config in configs.items():
                if reusable(index, name, config):
                    stage = building / name
                    shutil.rmtree(stage, ignore_errors=True)
                    retriever_class: Any = COMPONENTS[component_kind(name)].retriever_class
                    built = retriever_class.reindex(target / name, stage, config, index.row_ids)
                else:
                    built = build_component(
                        name, config, building, index.row_ids, show_progress, tokens=stored, encoding=encoding
                    )
                if component_kind(name) == "bm25" and len(index.deleted_rows):  # over every row: tombstones out
                    built = without_tombstones(index, built, building / name)
                stored = built if name == "tokens" else stored
                entries[name] = component_entry(config, built)
                checkpoint("index.add.component")
            manifest = json.loads(json.dumps(index.manifest))
            manifest["components"].update(entries)
            manifest["searchkit_version"] = __version__
            manifest["generation"] = index.generation + 1
            if filters is not None:  # an update reads these corpus columns too from now on
                fields = manifest.setdefault("fields", {})
                fields["metadata"] = list(dict.fromkeys([*fields.get("metadata", []), *filters.types]))
            (building / BUILD_STATE).unlink(missing_ok=True)
            write_manifest(building, manifest, index)
            checkpoint("index.add.manifest")
            move_into_place(building, target, "index.add")
        except KeyboardInterrupt:
            raise
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return target


def _bm25_to_add(index: IndexBundle, bm25: BM25Config | Sequence[BM25Config] | None) -> dict[str, BM25Config]:
    """The component names of BM25 configs added to ``index``: ``bm25`` when it has none or has the same analyzer
    (a replacement), else ``bm25.<analyzer>``."""
    if bm25 is None:
        return {}
    configs = [bm25] if isinstance(bm25, BM25Config) else list(bm25)
    existing = index.components.get("bm25")
    named: dict[str, BM25Config] = {}
    for config in configs:
        primary = (existing is None and not named) or (existing is not None and existing.analyzer == config.analyzer)
        name = "bm25" if primary else f"bm25.{config.analyzer}"
        if name in named:
            raise ConfigError(f"two BM25 components with the {config.analyzer} analyzer; give each its own analyzer")
        named[name] = config
    return named


def reusable(index: IndexBundle, name: str, config: Any) -> bool:
    """Whether the new ``name`` component can be made from the stored one's files (no corpus pass)."""
    if isinstance(config, DenseConfig):
        return reusable_embeddings(index, config)
    if isinstance(config, TokensConfig) and "tokens" in index.manifest["components"]:
        return DocumentTokens.reusable(index.path / "tokens", config)
    return False


def reusable_embeddings(index: IndexBundle, config: DenseConfig) -> bool:
    """True when the index's stored embeddings are what ``config`` would encode (only FAISS settings differ)."""
    if "dense" not in index.manifest["components"]:
        return False
    if not same_embeddings(index.components["dense"], config):
        return False
    # the same name is not the same model: a folder retrained in place has other weights
    stored = index.component("dense").model_info
    return bool(identity_key(stored) == identity_key(model_identity(config.model)))


def without_tombstones(index: IndexBundle, built: BM25Retriever, folder: Path) -> BM25Retriever:
    """A BM25 component built over every row, rewritten with the tombstones deleted (not counted, no postings)."""
    staging = folder.with_name(folder.name + ".tmp")
    dead = np.zeros(index.num_rows, dtype=bool)
    dead[index.deleted_rows] = True
    rewritten = BM25Retriever.rewrite(built, staging, np.arange(index.num_rows), dead, [], index.row_ids)
    shutil.rmtree(folder)
    os.replace(staging, folder)
    return BM25Retriever.load(folder, rewritten.config, index.row_ids)
