"""Indexes on disk: the folder's layout and manifest, its doc store, generations, and the operations on it.

Modules, lowest first (imports run only downward): :mod:`~searchkit.index.layout` (file names),
:mod:`~searchkit.index.components` (what a folder can hold), :mod:`~searchkit.index.manifest`,
:mod:`~searchkit.index.docstore`, :mod:`~searchkit.index.generations` (locks and swaps),
:mod:`~searchkit.index.bundle` (an opened generation: read only), :mod:`~searchkit.index.plan` (what a build will
take), then the operations that write a new generation, :mod:`~searchkit.index.build` and
:mod:`~searchkit.index.update`, and at the top :class:`~searchkit.index.api.Index`, the bundle with those
operations as methods.

>>> from searchkit.index import Index
>>> Index.__name__
'Index'
"""

from searchkit.index.api import Index

__all__ = ["Index"]
