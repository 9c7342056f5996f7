"""Plumbing every benchmark shares: arguments, private servers, child processes, clean exits.

Nothing here measures anything. The rules it enforces: a benchmark either talks to the ``--url``
it was given or to servers it started itself on free 127.0.0.1 ports in temp dirs (a
``redis-server``, a Sentinel deployment, a Redis Cluster, a PostgreSQL: the launchers of
``registry/cli/local_*.py``); every process it starts is stopped at exit, on an error, on Ctrl-C
and on SIGTERM; children and servers die with their parent even if the parent is killed with
SIGKILL (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.context import ForkProcess
from pathlib import Path
from typing import Any

import redis

from devservers.local_ha import LocalRedisCluster, LocalSentinelDeployment, missing_binaries
from devservers.local_postgres import LocalPostgresServer, remove_template
from promptreg.registry.cli.local_server import LocalRedisServer
from promptreg.registry.errors import ConfigurationError, RegistryUnavailableError
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.store import RedisPromptRegistry
from promptreg.registry.redis.topology import connect, parse_redis_url
from promptreg.registry.urls import url_scheme

BACKENDS = ("redis", "postgres")
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})

REPO_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1

# fork: 50 client processes start in well under a second; spawn would re-import pydantic and redis
# in each one (~0.4 s CPU apiece on this machine). The parent never holds threads when it forks.
FORK = multiprocessing.get_context("fork")


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The options every benchmark takes: ``--url``, ``--quick``, ``--json``, ``--namespace``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", help="use this Redis instead of starting a private redis-server")
    parser.add_argument("--quick", action="store_true", help="smaller run, under 30 s in total")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--namespace", default=None, help="key namespace (default: a fresh random one, removed at the end)"
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.namespace is None:
        args.namespace = "bench" + uuid.uuid4().hex[:10]
    return args


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


_EXIT_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def exit_signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a child is forked or spawned, deliver them right after.

    Raised inside ``os.fork()``'s at-fork hooks, the ``SystemExit``/``KeyboardInterrupt`` would be
    printed as "Exception ignored" and lost; the benchmark would carry on. A forked child inherits
    the blocked mask; :func:`child_setup` unblocks it.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _EXIT_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def child_setup() -> None:
    """First call in every benchmark child: die with the parent, leave Ctrl-C to the parent."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _EXIT_SIGNALS)


def server_child_setup() -> None:
    """In a server the benchmark starts, before it execs: die with the benchmark, and unblock the
    exit signals that :func:`exit_signals_deferred` held."""
    die_with_parent()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _EXIT_SIGNALS)


def _sigterm_to_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def install_exit_handlers() -> None:
    """SIGTERM becomes ``SystemExit`` in the main process, so ``finally`` blocks stop children."""
    signal.signal(signal.SIGTERM, _sigterm_to_exit)


def start_private_server() -> LocalRedisServer:
    """A ``redis-server`` of this benchmark alone (free loopback port, temp dir, no persistence).

    It dies with the benchmark even on ``kill -9``; exits with a message when none is installed.
    """
    try:
        server = LocalRedisServer(preexec_fn=server_child_setup)
    except ConfigurationError as exc:
        raise SystemExit(f"{exc}: install it or pass --url redis://...") from exc
    with exit_signals_deferred():
        return server.start()


@contextlib.contextmanager
def redis_url(args: argparse.Namespace) -> Iterator[str]:
    """``args.url``, or the URL of a private redis-server started now and stopped on exit.

    On a server given with ``--url`` the benchmark's namespace (and ``namespace.*``) is deleted at the end.
    """
    with _redis_url(args.url, args.namespace) as url:
        yield url


@contextlib.contextmanager
def _redis_url(given: str | None, namespace: str) -> Iterator[str]:
    if given:
        try:
            yield given
        finally:
            with contextlib.suppress(redis.RedisError):
                drop_namespace(given, namespace)
        return
    server = start_private_server()
    try:
        yield server.url
    finally:
        server.cleanup()


def drop_namespace(url: str, namespace: str) -> int:
    """Delete every key of ``namespace`` and of its sub-namespaces ``namespace.*``; returns how many.

    One wipe for every benchmark: :meth:`RedisPromptRegistry.drop_namespace` on each namespace found.
    """
    with connect(parse_redis_url(url)) as conn:
        # Sub-namespaces ("ns.0", "ns.1", ...) are separate hash tags: find their names first.
        family = {namespace}
        for key in conn.scan_iter(match=Keyspace(namespace).prefix[:-1] + ".*}:rev", count=1000):
            family.add(key.decode().split("}", 1)[0].lstrip("{"))
    deleted = 0
    for name in sorted(family):
        with RedisPromptRegistry.from_url(url, namespace=name) as registry:
            deleted += registry.drop_namespace()
    return deleted


def server_version(url: str) -> str:
    """The server's version: ``redis_version`` from ``INFO server``, or PostgreSQL's ``server_version``."""
    if backend_of(url) == "postgres":
        from promptreg.registry.postgres.conn import connect as pg_connect
        from promptreg.registry.postgres.conn import parse_postgres_url

        with pg_connect(parse_postgres_url(url)[0]) as pg:
            return str(pg.execute("SHOW server_version").fetchone()[0])
    with connect(parse_redis_url(url)) as conn:
        info = conn.info("server")
        if "redis_version" not in info and info:  # RedisCluster: one dict per node
            info = next(iter(info.values()))
        return str(info.get("redis_version", "?"))


def backend_of(url: str) -> str:
    """``postgres`` for a ``postgresql://`` / ``postgres://`` URL, else ``redis``."""
    return "postgres" if url_scheme(url) in POSTGRES_SCHEMES else "redis"


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """``--backend redis|postgres|both`` (default: the backend of ``--url``, else redis)."""
    parser.add_argument(
        "--backend",
        choices=(*BACKENDS, "both"),
        default=None,
        help="registry backend (default: the one --url names, else redis); both: PostgreSQL and Redis "
        "side by side in one run (--url then gives one of them, the other is started here)",
    )


def backends(args: argparse.Namespace) -> list[str]:
    """The backends ``args`` asks for, PostgreSQL first; exits on a ``--url`` of another backend."""
    given = backend_of(args.url) if args.url else None
    choice = args.backend or given or "redis"
    wanted = ["postgres", "redis"] if choice == "both" else [choice]
    if given is not None and given not in wanted:
        raise SystemExit(f"--url names a {given} server but --backend is {choice}")
    return wanted


@contextlib.contextmanager
def backend_url(args: argparse.Namespace, backend: str) -> Iterator[str]:
    """The URL of ``backend``: ``--url`` when it names that backend, else a private server of this run.

    On a server given with ``--url`` the benchmark's namespace is deleted at the end.
    """
    given = args.url if args.url and backend_of(args.url) == backend else None
    if backend == "redis":
        with _redis_url(given, args.namespace) as url:
            yield url
        return
    if given:
        try:
            yield given
        finally:
            with contextlib.suppress(Exception):
                drop_postgres_namespace(given, args.namespace)
        return
    server = start_private_postgres()
    try:
        yield server.url()
    finally:
        server.cleanup()
        remove_template()


def start_private_postgres() -> LocalPostgresServer:
    """A PostgreSQL of this benchmark alone (free loopback port, temp dir, ``fsync=off``).

    It dies with the benchmark even on ``kill -9``; exits with a message when none is installed.
    """
    try:
        server = LocalPostgresServer(preexec_fn=server_child_setup)
        with exit_signals_deferred():
            return server.start()
    except RegistryUnavailableError as exc:
        remove_template()
        raise SystemExit(f"{exc}: install it or pass --url postgresql://...") from exc


def drop_postgres_namespace(url: str, namespace: str) -> int:
    """Delete every row of ``namespace`` on the PostgreSQL at ``url``; returns how many."""
    from promptreg.registry.postgres.store import PostgresPromptRegistry

    with PostgresPromptRegistry(url, namespace=namespace, auto_migrate=False) as registry:
        return registry.drop_namespace()


@contextlib.contextmanager
def sentinel_deployment() -> Iterator[LocalSentinelDeployment]:
    """A primary, two replicas and three sentinels of this benchmark alone, stopped on exit.

    No persistence and ``min-replicas-to-write 0``: the same server settings as the private
    redis-server, so topologies compare on the network path only.
    """
    missing = missing_binaries("redis-server", "redis-sentinel")
    if missing:
        raise SystemExit(f"{', '.join(missing)} not installed: install it or pass --url redis+sentinel://...")
    deployment = LocalSentinelDeployment(min_replicas_to_write=0, appendonly=False, preexec_fn=server_child_setup)
    with exit_signals_deferred():
        deployment.start()
    try:
        yield deployment
    finally:
        deployment.cleanup()


@contextlib.contextmanager
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A three-master Redis Cluster of this benchmark alone, stopped on exit."""
    missing = missing_binaries("redis-server", "redis-cli")
    if missing:
        raise SystemExit(f"{', '.join(missing)} not installed: install it or pass --url redis+cluster://...")
    cluster = LocalRedisCluster(preexec_fn=server_child_setup)
    with exit_signals_deferred():
        cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


class Children:
    """Child processes (forked) with one duplex pipe each; all of them stopped on ``close()``.

    As a context manager it stops them on exit, at once if an exception (Ctrl-C, SIGTERM) unwinds.

    ``start(target, *args)`` runs ``target(conn, *args)`` in a child after :func:`child_setup`.
    """

    def __init__(self) -> None:
        self.processes: list[ForkProcess] = []
        self.conns: list[multiprocessing.connection.Connection] = []

    def start(self, target: Callable[..., None], *args: Any) -> multiprocessing.connection.Connection:
        parent_end, child_end = FORK.Pipe(duplex=True)
        process = FORK.Process(target=_child_main, args=(target, child_end, *args), daemon=True)
        with exit_signals_deferred():
            process.start()
            self.processes.append(process)
        child_end.close()
        self.conns.append(parent_end)
        return parent_end

    def expect_all(
        self, kind: str, timeout: float, conns: Sequence[multiprocessing.connection.Connection] = ()
    ) -> list[Any]:
        """One ``(kind, payload)`` message from each child (in child order); raises on error/timeout."""
        pending = list(conns or self.conns)
        order = {id(c): i for i, c in enumerate(pending)}
        replies: list[Any] = [None] * len(pending)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(pending)} child process(es) did not send {kind!r} within {timeout:.0f} s")
            for conn in multiprocessing.connection.wait(pending, timeout=left):
                assert isinstance(conn, multiprocessing.connection.Connection)
                try:
                    got, payload = conn.recv()
                except EOFError:
                    raise RuntimeError("a child process exited unexpectedly") from None
                if got == "error":
                    raise RuntimeError(f"a child process failed:\n{payload}")
                if got != kind:
                    raise RuntimeError(f"expected {kind!r} from a child, got {got!r}")
                replies[order[id(conn)]] = payload
                pending.remove(conn)
        return replies

    def send_all(self, message: Any, conns: Sequence[multiprocessing.connection.Connection] = ()) -> None:
        for conn in conns or self.conns:
            conn.send(message)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        self.close(grace=0.0 if exc_type is not None else 2.0)

    def close(self, grace: float = 2.0) -> None:
        """Stop every child: wait ``grace`` seconds for a clean exit, then SIGTERM, then SIGKILL."""
        deadline = time.monotonic() + grace
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join(2.0)
        for conn in self.conns:
            conn.close()
        self.processes.clear()
        self.conns.clear()


def _child_main(target: Callable[..., None], conn: multiprocessing.connection.Connection, *args: Any) -> None:
    child_setup()
    try:
        target(conn, *args)
    except BaseException:
        import traceback

        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", traceback.format_exc()))
        raise
    finally:
        conn.close()


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> None:
    """Run a benchmark's ``main``: SIGTERM and Ctrl-C unwind through its ``finally`` blocks."""
    install_exit_handlers()
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted: every process this benchmark started has been stopped", file=sys.stderr)
        code = 130
    sys.exit(code)
