"""``python -m searchkit`` is the ``searchkit`` command."""

from searchkit.cli.main import main

main()
