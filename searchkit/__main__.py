"""``python -m searchkit`` is the ``searchkit`` command."""

from searchkit.cli import main

main()
