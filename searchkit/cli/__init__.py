"""The ``searchkit`` command line, by command group: ``index`` (build, plan, add, update, compact, info, verify,
analyze), ``search`` (search, run), ``eval`` (score, eval), ``train`` (train, fit-fusion), ``serve``; shared option
stacks in ``options``; the root group and entry point in ``main``.

>>> from searchkit.cli import main
>>> main.__module__
'searchkit.cli.main'
"""

from searchkit.cli.main import main

__all__ = ["main"]
