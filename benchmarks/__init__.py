"""Runnable benchmarks: each script prints a table and can write its figures as JSON.

Run from the repository root, either way::

    python -m benchmarks.lookup       # PromptClient.get against the floor and the usual alternatives
    python -m benchmarks.propagation  # label move -> every client process, against raw pub/sub
    python -m benchmarks.writes       # add_version / set_label throughput
    python benchmarks/lookup.py --quick --json /tmp/lookup.json

Every script starts its own ``redis-server`` on a free 127.0.0.1 port (or uses ``--url``), takes
``--quick`` (under 30 s) and ``--json PATH``, and stops every process it started, also on errors and
Ctrl-C. Modules starting with ``_`` are shared plumbing, not benchmarks.
"""
