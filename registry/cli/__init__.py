"""``promptreg``, the command line: the application on the top floor of the project.

This package is the one part of ``registry`` that may import ``client`` (``watch``, ``demo``) and
talk to a terminal. It is thin: it parses arguments, calls the library and prints. The entry point
is :func:`main` (``promptreg = "promptreg.registry.cli:main"``); :data:`cli` is the click group, for
click's test runner.

Modules: :mod:`~promptreg.registry.cli.main` (the group, global options, the one place errors become a
line), :mod:`~promptreg.registry.cli.options` (what commands share), :mod:`~promptreg.registry.cli.prompts` (create,
push, label, rollback, show, render, list, diff), :mod:`~promptreg.registry.cli.history`,
:mod:`~promptreg.registry.cli.partials` (what the commands say about ``{{> partials}}``),
:mod:`~promptreg.registry.cli.files` (sync,
export, import), :mod:`~promptreg.registry.cli.acl`, :mod:`~promptreg.registry.cli.live` (watch, demo),
:mod:`~promptreg.registry.cli.demo` (the demo's scenario) and :mod:`~promptreg.registry.cli.local_server` (a private
redis-server for the demo, the tests and the benchmarks).
"""

from promptreg.registry.cli.main import cli, main

__all__ = ["cli", "main"]
