"""``python -m registry.cli``: the same as the ``promptreg`` command."""

from registry.cli.main import main

main()
