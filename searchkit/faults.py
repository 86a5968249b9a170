"""Fault injection: kill the process at a named checkpoint, so tests can prove that a crash loses nothing.

``checkpoint(name)`` does nothing unless the environment variable ``SEARCHKIT_FAULT`` names that checkpoint
(``name``, or ``name:N`` for the N-th time it is reached, 1-based); then the process sends itself SIGKILL, the
same as ``kill -9`` or a power cut as far as files are concerned (no ``finally``, no ``atexit``, no flush). The
fault tier (``tests/faults/``) runs the CLI in a subprocess with the variable set and checks the disk afterwards.

==========================  =========================================  ==========================================
name                        where                                      on disk at that instant
==========================  =========================================  ==========================================
``index.build.docstore``    Index.build, doc store written             ``.<name>.building/``: docs, ids, offsets
``index.build.component``   Index.build, after each component (:N)     ``.<name>.building/<component>/`` done
``index.build.manifest``    Index.build, manifest written              the whole new index, in ``.<name>.building``
``index.build.swap``        old index moved aside, new one not yet in  no target; the old index in ``.<name>.old``
                                                                       (the next open or build moves it back)
``index.build.swapped``     new index in place, old not yet deleted    new index; ``.<name>.old`` left over
``index.add.component``     Index.add, after each new component (:N)   ``.<name>.building/``: hard-linked files
                                                                       of the index + the new component
``index.add.manifest``      Index.add, new manifest written            the whole new generation, not swapped in
``index.add.swap``          as ``index.build.swap``, for an add        as ``index.build.swap``
``index.add.swapped``       as ``index.build.swapped``, for an add     as ``index.build.swapped``
``index.update.docstore``   Index.update, new rows written              ``.<name>.building/``: docs, ids, offsets,
                                                                       ``deleted.npy`` (or hard links)
``index.update.component``  Index.update, after each component (:N)    ``.<name>.building/<component>/`` rewritten
``index.update.manifest``   Index.update, new manifest written         the whole new generation, not swapped in
``index.update.swap``       as ``index.build.swap``, for an update     as ``index.build.swap``
``index.update.swapped``    as ``index.build.swapped``, for an update  as ``index.build.swapped``
``index.compact.component`` Index.compact, after each component (:N)   as ``index.update.component``
``index.compact.swap``      as ``index.build.swap``, for a compaction  as ``index.build.swap``
``dense.shard``             dense encoding, after each shard (:N)      ``shards/shard-0000K.npy`` + ``state.json``
``train.epoch``             train, after each epoch's checkpoint (:N)  ``<output>/checkpoint/`` of that epoch
``train.checkpoint.swap``   train, previous checkpoint moved aside,    ``checkpoint.old/`` + ``checkpoint.tmp/``,
                            the new one not yet in place (:N)          no ``checkpoint/``
``train.card``              train, model saved, card not yet written   model files, no ``searchkit.json``
==========================  =========================================  ==========================================

>>> checkpoint("index.build.docstore")  # SEARCHKIT_FAULT is not set here: nothing happens
>>> _wanted("a.b:2")
('a.b', 2)
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "SEARCHKIT_FAULT"
_reached: Counter[str] = Counter()


def _wanted(value: str) -> tuple[str, int]:
    name, _, count = value.partition(":")
    return name.strip(), int(count) if count.strip().isdigit() else 1


def checkpoint(name: str) -> None:
    """Kill this process with SIGKILL when ``SEARCHKIT_FAULT`` names ``name`` (``name:N``: its N-th visit)."""
    value = os.environ.get(ENV)
    if not value:
        return
    wanted, count = _wanted(value)
    if wanted != name:
        return
    _reached[name] += 1
    if _reached[name] == count:
        os.kill(os.getpid(), signal.SIGKILL)
