"""``promptreg``, the command line: the application on the top floor of the project.

This package is the one part of ``registry`` that may import ``client`` (``watch``, ``demo``) and
talk to a terminal. It is thin: it parses arguments, calls the library and prints. The entry point
is :func:`main` (``promptreg = "registry.cli:main"``); :data:`cli` is the click group, for
click's test runner.

Modules: :mod:`~registry.cli.main` (the group, global options, the one place errors become a
line), :mod:`~registry.cli.options` (what commands share), :mod:`~registry.cli.prompts` (create,
push, label, rollback, show, render, list, history, diff), :mod:`~registry.cli.files` (sync,
export, import), :mod:`~registry.cli.acl`, :mod:`~registry.cli.live` (watch, demo),
:mod:`~registry.cli.demo` (the demo's scenario) and :mod:`~registry.cli.local_server` (a private
redis-server for the demo, the tests and the benchmarks).
"""

from registry.cli.main import cli, main

__all__ = ["cli", "main"]
