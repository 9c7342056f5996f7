"""Real Sentinel and Cluster deployments for the tests: the launchers of :mod:`devservers.local_ha`.

:class:`SentinelDeployment`: a primary, two replicas and three sentinels, fast failover.
:class:`ClusterDeployment`: three masters. Every process is started by the test and stopped by it
(``cleanup()``, also on failure), by its own process handle.
"""

from __future__ import annotations

from devservers.local_ha import (
    DOWN_AFTER_MS,
    FAILOVER_TIMEOUT_MS,
    SERVICE,
    LocalRedisCluster,
    LocalSentinelDeployment,
    RedisNode,
    SentinelProcess,
    missing_binaries,
)

SentinelDeployment = LocalSentinelDeployment
ClusterDeployment = LocalRedisCluster

__all__ = [
    "DOWN_AFTER_MS",
    "FAILOVER_TIMEOUT_MS",
    "SERVICE",
    "ClusterDeployment",
    "RedisNode",
    "SentinelDeployment",
    "SentinelProcess",
    "missing_binaries",
]
