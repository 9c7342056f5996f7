"""``python -m promptreg.registry.cli``: the same as the ``promptreg`` command."""

from promptreg.registry.cli.main import main

main()
