"""Private Sentinel and Cluster deployments on free 127.0.0.1 ports, for the tests and the benchmarks.

:class:`LocalSentinelDeployment`: a primary, two replicas and three sentinels (``redis-sentinel``),
with fast failover (``down-after-milliseconds`` 1000). :class:`LocalRedisCluster`: three masters
(``--cluster-enabled yes``) joined by ``redis-cli --cluster create``. Every process is started by the
caller and stopped by it (``cleanup()``, also when ``start()`` fails), by its own process handle;
``preexec_fn`` runs in each server process before exec (the benchmarks make them die with their
parent). Not for production: use your own Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import redis

from promptreg.registry.cli.local_server import LocalRedisServer, free_port, wait_until

SERVICE = "promptreg"
"""The Sentinel service name of :class:`LocalSentinelDeployment`."""
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000

PreExec = Callable[[], None] | None


def missing_binaries(*names: str) -> list[str]:
    """The executables among ``names`` that are not on PATH."""
    return [name for name in names if shutil.which(name) is None]


class RedisNode(LocalRedisServer):
    """A data node of a deployment."""


class SentinelProcess:
    """One ``redis-sentinel`` monitoring :data:`SERVICE`."""

    def __init__(self, primary_port: int, quorum: int = 2, preexec_fn: PreExec = None) -> None:
        executable = shutil.which("redis-sentinel")
        if executable is None:
            raise RuntimeError("redis-sentinel is not installed (apt-get install redis-sentinel)")
        self.executable = executable
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="promptreg-sentinel-"))
        self.config = self.dir / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\n"
            f"logfile {self.dir / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 2\n"
        )
        self.preexec_fn = preexec_fn
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.process = subprocess.Popen(
            [self.executable, str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=self.preexec_fn,
        )  # fmt: skip
        if not wait_until(self._ping, 10.0, 0.02):
            raise RuntimeError(f"redis-sentinel on port {self.port} did not answer")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def _ping(self) -> bool:
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalSentinelDeployment:
    """A primary, two replicas and three sentinels; ``min-replicas-to-write`` on every data node."""

    def __init__(self, *, min_replicas_to_write: int = 1, appendonly: bool = True, preexec_fn: PreExec = None) -> None:
        self.min_replicas_to_write = min_replicas_to_write
        self.preexec_fn = preexec_fn
        common = ("--min-replicas-to-write", str(min_replicas_to_write), "--min-replicas-max-lag", "10")
        self.primary = RedisNode(appendonly=appendonly, extra_args=common, preexec_fn=preexec_fn)
        self.replicas = [
            RedisNode(
                appendonly=appendonly,
                extra_args=(*common, "--replicaof", "127.0.0.1", str(self.primary.port), "--replica-priority", str(p)),
                preexec_fn=preexec_fn,
            )
            for p in (100, 90)
        ]
        self.sentinels: list[SentinelProcess] = []

    @property
    def data_nodes(self) -> list[RedisNode]:
        return [self.primary, *self.replicas]

    def start(self) -> Self:
        """Start every process and wait until the replicas are synced and the sentinels see them all."""
        try:
            for server in self.data_nodes:
                server.start()
            if not wait_until(self._replicas_synced, 15.0, 0.05):
                raise RuntimeError("the replicas did not sync with the primary")
            for _ in range(3):
                self.sentinels.append(SentinelProcess(self.primary.port, preexec_fn=self.preexec_fn))
                self.sentinels[-1].start()
            if not wait_until(self._sentinels_ready, 20.0, 0.1):
                raise RuntimeError("the sentinels did not discover each other and the replicas")
        except BaseException:
            self.cleanup()
            raise
        return self

    def url(self, query: str = "") -> str:
        """``redis+sentinel://`` naming the three sentinels and :data:`SERVICE`."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0" + (f"?{query}" if query else "")

    def master_address(self) -> tuple[str, int] | None:
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as c:
                    host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                    return str(host), int(port)
            except (redis.RedisError, TypeError, ValueError):
                continue
        return None

    def node_on(self, port: int) -> RedisNode:
        return next(s for s in self.data_nodes if s.port == port)

    def _replicas_synced(self) -> bool:
        try:
            with self.primary.client() as c:
                info = c.info("replication")
            return int(info.get("connected_slaves", 0)) == len(self.replicas) and all(
                info.get(f"slave{i}", {}).get("state") == "online" for i in range(len(self.replicas))
            )
        except redis.RedisError:
            return False

    def _sentinels_ready(self) -> bool:
        try:
            for sentinel in self.sentinels:
                with sentinel.client() as c:
                    fields = c.sentinel_master(SERVICE)
                    if int(fields["num-other-sentinels"]) < 2 or int(fields["num-slaves"]) < 2:
                        return False
            return True
        except (redis.RedisError, KeyError, ValueError, TypeError):
            return False

    def failover(self, timeout: float = 20.0) -> tuple[str, int]:
        """``SENTINEL FAILOVER`` and wait until every sentinel names a new, answering primary."""
        old = self.master_address()
        with self.sentinels[0].client() as c:
            c.execute_command("SENTINEL", "FAILOVER", SERVICE)
        return self.wait_new_primary(old, timeout)

    def wait_new_primary(self, old: tuple[str, int] | None, timeout: float = 20.0) -> tuple[str, int]:
        """Wait until the sentinels name a primary other than ``old`` that says it is a primary."""
        found: list[tuple[str, int]] = []

        def switched() -> bool:
            address = self.master_address()
            if address is None or address == old:
                return False
            try:
                with redis.Redis(host=address[0], port=address[1], socket_timeout=1) as c:
                    if c.execute_command("ROLE")[0] != b"master":
                        return False
            except redis.RedisError:
                return False
            found[:] = [address]
            return True

        if not wait_until(switched, timeout, 0.02):
            raise AssertionError(f"no new primary within {timeout} s (old {old})")
        return found[0]

    def wait_failover_settled(self, primary: tuple[str, int], timeout: float = 20.0) -> None:
        """Wait until every sentinel names ``primary`` and every other running data node replicates
        from it with its link up: the failover has reconfigured the replicas. Writes made before that
        can be lost to a second failover, which a sentinel starts when the first one times out."""

        def settled() -> bool:
            try:
                for sentinel in self.sentinels:
                    with sentinel.client() as c:
                        host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
                        if (str(host), int(port)) != primary:
                            return False
                for node in self.data_nodes:
                    if node.port == primary[1] or node.process is None or node.process.poll() is not None:
                        continue
                    with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1) as c:
                        role = c.execute_command("ROLE")
                    if role[0] != b"slave" or int(role[2]) != primary[1] or role[3] != b"connected":
                        return False
            except (redis.RedisError, TypeError, ValueError):
                return False
            return True

        if not wait_until(settled, timeout, 0.05):
            raise AssertionError(f"the failover to {primary} did not settle within {timeout} s")

    def cleanup(self) -> None:
        """Stop every process and remove the temp dirs. Idempotent."""
        for sentinel in self.sentinels:
            sentinel.cleanup()
        for server in self.data_nodes:
            server.cleanup()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 <= 65535 and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalRedisCluster:
    """Three cluster masters (no replicas), slots spread by ``redis-cli --cluster create``."""

    def __init__(self, masters: int = 3, *, preexec_fn: PreExec = None) -> None:
        cluster_args: tuple[str, ...] = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        cluster_args += ("--cluster-node-timeout", "2000")
        self.nodes = [RedisNode(extra_args=cluster_args, preexec_fn=preexec_fn) for _ in range(masters)]
        for node in self.nodes:
            node.port = _cluster_port()
            node.choose_port = _cluster_port

    def start(self) -> Self:
        """Start the nodes, create the cluster and wait for ``cluster_state:ok``."""
        redis_cli = shutil.which("redis-cli")
        try:
            if redis_cli is None:
                raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                [redis_cli, "--cluster", "create", *addresses, "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
            )  # fmt: skip
            if not wait_until(self._ready, 20.0, 0.05):
                raise RuntimeError("the cluster did not reach cluster_state:ok")
        except BaseException:
            self.cleanup()
            raise
        return self

    def url(self, node: int = 0, query: str = "") -> str:
        """``redis+cluster://`` with node ``node`` as the startup node."""
        return f"redis+cluster://127.0.0.1:{self.nodes[node].port}/" + (f"?{query}" if query else "")

    def _ready(self) -> bool:
        try:
            for node in self.nodes:
                with node.client() as c:
                    if b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                        return False
            return True
        except redis.RedisError:
            return False

    def owner_of(self, key: str) -> RedisNode:
        """The node whose slots include ``key``'s slot."""
        with self.nodes[0].client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
        for node in self.nodes:
            with node.client() as c:
                if self._owns(c, slot):
                    return node
        raise AssertionError(f"no node owns slot {slot}")

    @staticmethod
    def _owns(conn: redis.Redis, slot: int) -> bool:
        my_id = conn.execute_command("CLUSTER", "MYID")  # type: ignore[no-untyped-call]
        for start, end, *holders in conn.execute_command("CLUSTER", "SLOTS"):  # type: ignore[no-untyped-call]
            if int(start) <= slot <= int(end):
                return bool(holders[0][2] == my_id)
        return False

    def node_id(self, node: RedisNode) -> str:
        with node.client() as c:
            raw = c.execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def migrate_slot(self, key: str, source: RedisNode, target: RedisNode, batch: int = 10) -> None:
        """Move ``key``'s slot from ``source`` to ``target`` the way ``redis-cli --cluster reshard`` does."""
        with source.client() as src, target.client() as dst:
            slot = int(src.execute_command("CLUSTER", "KEYSLOT", key))
            source_id, target_id = self.node_id(source), self.node_id(target)
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while True:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
                time.sleep(0.01)  # let writes interleave with the migration
            for node in [target, source, *(n for n in self.nodes if n not in (target, source))]:
                with node.client() as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def cleanup(self) -> None:
        """Stop every node and remove the temp dirs. Idempotent."""
        for node in self.nodes:
            node.cleanup()
