"""Failover timeline on Sentinel: writes lost per ``wait_replicas``, lookup errors, time to converge.

Starts a primary, two replicas and three sentinels on free loopback ports (``redis-server`` and
``redis-sentinel`` must be installed; fast failover: ``down-after-milliseconds`` 1000), 4 clients
doing ``get()`` in a loop and one writer moving a label as fast as it can, then ``SENTINEL FAILOVER``
(or ``--kill``: ``kill -9`` of the primary). For each ``wait_replicas`` setting it prints the writes
acknowledged, those lost (acknowledged but absent from the new primary's history), the writes
refused during the switch, the lookup errors, the switch time and the time until every client
serves the new primary's final state. Run: ``python -m benchmarks.failover [--kill] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from typing import Any

from devservers.local_ha import LocalSentinelDeployment as SentinelDeployment
from promptreg.client import PromptClient
from promptreg.registry import AuditEvent, RedisPromptRegistry, RegistryUnavailableError

NAME, LABEL = "bench-failover", "production"


def run_once(wait_replicas: int, kill: bool, min_replicas_to_write: int) -> dict[str, Any]:
    deployment = SentinelDeployment(min_replicas_to_write=min_replicas_to_write).start()
    namespace = "b" + uuid.uuid4().hex[:10]
    query = f"wait_replicas={wait_replicas}&wait_timeout=0.5" if wait_replicas else ""
    writer = RedisPromptRegistry.from_url(deployment.url(query), namespace=namespace)
    clients: list[PromptClient] = []
    try:
        writer.create_prompt(NAME)
        for n in range(3):
            writer.add_version(NAME, f"v{n}")
        writer.set_label(NAME, LABEL, 1)
        clients = [PromptClient(deployment.url(), namespace=namespace, poll_interval=1.0) for _ in range(4)]
        errors = [0]
        acked: list[AuditEvent] = []
        refused = [0]
        stop = threading.Event()

        def write() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    acked.append(writer.set_label(NAME, LABEL, 1 + n % 3))
                except RegistryUnavailableError:
                    refused[0] += 1
                    time.sleep(0.01)

        def look() -> None:
            while not stop.is_set():
                for prompts in clients:
                    try:
                        prompts.get(NAME, LABEL)
                    except Exception:
                        errors[0] += 1
                time.sleep(0.001)

        threads = [threading.Thread(target=write, daemon=True), threading.Thread(target=look, daemon=True)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        old = deployment.master_address()
        started = time.monotonic()
        if kill:
            assert old is not None
            deployment.node_on(old[1]).kill()
            deployment.wait_new_primary(old, 30)
        else:
            deployment.failover(30)
        switched = time.monotonic() - started
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(30)
        stopped = time.monotonic()
        # The truth is the primary the sentinels name now: after a graceful failover the writer's own
        # connections may still be on the old primary, which kept acknowledging writes for a while.
        truth = RedisPromptRegistry.from_url(deployment.url(), namespace=namespace)
        try:
            final_rev = int(truth.redis.get(truth.keys.rev))
            deadline = stopped + 30
            while time.monotonic() < deadline and not all(p.status().rev == final_rev for p in clients):
                time.sleep(0.005)
            converged = time.monotonic() - stopped
            history = {(e.rev, e.version) for e in truth.history(NAME)}
        finally:
            truth.close()
        lost = sum(1 for e in acked if (e.rev, e.version) not in history)
        return {
            "wait_replicas": wait_replicas,
            "how": "kill -9" if kill else "SENTINEL FAILOVER",
            "acknowledged": len(acked),
            "lost": lost,
            "refused": refused[0],
            "lookup_errors": errors[0],
            "switch_s": round(switched, 2),
            "converged_after_last_write_s": round(converged, 3),
        }
    finally:
        for prompts in clients:
            prompts.close()
        writer.close()
        deployment.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kill", action="store_true", help="kill -9 the primary instead of SENTINEL FAILOVER")
    parser.add_argument("--waits", default="0,1,2", help="wait_replicas settings to compare")
    parser.add_argument("--min-replicas-to-write", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = [run_once(int(w), args.kill, args.min_replicas_to_write) for w in args.waits.split(",")]
    keys = list(rows[0])
    print("  ".join(f"{k:>14}" for k in keys))
    for row in rows:
        print("  ".join(f"{row[k]!s:>14}" for k in keys))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=2)


if __name__ == "__main__":
    main()
