"""redis-py exceptions are translated by class, in one table, to a message that says which case; a
failed connection (unreachable sentinels, TLS to a plain server, a cluster refusing the password) is
one short line that says what happened, against real servers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError

from promptreg.registry import (
    PromptRegistryError,
    PromptRegistryFactory,
    RegistryAuthError,
    RegistryUnavailableError,
)
from promptreg.registry.cli import cli
from promptreg.registry.redis.errors import translate_redis_error
from tests.conftest import need_binaries
from tests.redis_server import RedisServer, free_port, wait_until

SECRET = "hunter2-s3cret"
PASSWORD = "the-right-pw-9"


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (BusyLoadingError("LOADING Redis is loading"), "loading"),
        (ReadOnlyError("You can't write against a read only replica."), "read-only replica"),
        (ClusterDownError("CLUSTERDOWN The cluster is down"), "cluster down"),
        (TryAgainError("TRYAGAIN"), "TRYAGAIN"),
        (MovedError("3999 127.0.0.1:6381"), "MOVED"),
        (AskError("3999 127.0.0.1:6381"), "ASK"),
        (MasterNotFoundError("No master found for 'svc'"), "no primary"),
        (OutOfMemoryError("OOM command not allowed"), "out of memory"),
        (RedisTimeoutError("Timeout reading from socket"), "timed out"),
        (RedisConnectionError("Connection refused"), "unreachable"),
        (ResponseError("Command # 1 (EVALSHA x) of pipeline caused error: NOREPLICAS Not enough"), "min-replicas"),
    ],
)
def test_unavailable_cases_say_which(exc: Exception, says: str) -> None:
    error = translate_redis_error(exc)
    assert type(error) is RegistryUnavailableError and says in str(error)


def test_other_replies_are_generic_registry_errors() -> None:
    error = translate_redis_error(ResponseError("ERR something else"))
    assert type(error) is PromptRegistryError


def test_a_cluster_error_is_translated_by_its_cause() -> None:
    try:
        try:
            raise AuthenticationError("invalid username-password pair or user is disabled.")
        except AuthenticationError as cause:
            raise RedisClusterException("Redis Cluster cannot be connected: ...") from cause
    except RedisClusterException as exc:
        error = translate_redis_error(exc)
    assert type(error) is RegistryAuthError and "authentication failed" in str(error)
    assert type(translate_redis_error(RedisClusterException("no cause"))) is RegistryUnavailableError


def test_object_dumps_are_left_out_but_words_in_angle_brackets_stay() -> None:
    dump = "<redis.client.Redis(<redis.connection.ConnectionPool(<redis.connection.Connection(host=h,port=1)>)>)>"
    error = translate_redis_error(RedisConnectionError(f"{dump} - failed, HELLO AUTH <user> <pass> instead"))
    assert str(error) == "redis is unreachable: - failed, HELLO AUTH <user> <pass> instead"
    long = translate_redis_error(RedisConnectionError("x" * 1000))
    assert len(str(long)) < 300


# -- connection failures against real servers: one short line that says what happened ----------------


def _one_short_line(message: str, *, without: str = SECRET) -> str:
    assert "\n" not in message and len(message) < 300, (len(message), message)
    assert without not in message
    assert "<redis." not in message and "object at 0x" not in message  # no redis-py object dumps
    return message


def _cli_error(url: str) -> str:
    result = CliRunner().invoke(cli, ["--url", url, "list"], catch_exceptions=False)
    assert result.exit_code == 1 and result.stdout == "", result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return _one_short_line(result.stderr.strip())


def test_unreachable_sentinels_are_one_line_naming_them_and_the_service() -> None:
    first, second = free_port(), free_port()  # nothing listens on either
    url = f"redis+sentinel://:{SECRET}@127.0.0.1:{first},127.0.0.1:{second}/mymaster?sentinel_password={SECRET}"
    registry = PromptRegistryFactory.from_url(url)
    with pytest.raises(RegistryUnavailableError) as caught:
        registry.list_prompts()
    registry.close()
    message = _one_short_line(str(caught.value))
    assert message == (
        f"no primary for service 'mymaster': no sentinel answered at 127.0.0.1:{first}, 127.0.0.1:{second} "
        "(Connection refused)"
    )
    assert not isinstance(caught.value, RegistryAuthError)
    assert f"127.0.0.1:{first}, 127.0.0.1:{second}" in _cli_error(url)


@pytest.mark.redis
def test_rediss_to_a_plain_server_says_the_tls_handshake_timed_out(redis_server: RedisServer) -> None:
    url = f"rediss://:{SECRET}@127.0.0.1:{redis_server.port}/0"
    started = time.monotonic()
    registry = PromptRegistryFactory.from_url(url, socket_connect_timeout=1)
    with pytest.raises(RegistryUnavailableError) as caught:
        registry.list_prompts()
    registry.close()
    assert time.monotonic() - started < 10
    message = _one_short_line(str(caught.value))
    assert message == (
        f"TLS handshake with 127.0.0.1:{redis_server.port} timed out: "
        "if that server does not speak TLS, use redis:// instead of rediss://"
    )
    assert not isinstance(caught.value, RegistryAuthError)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 <= 65535:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def cluster_with_password() -> Iterator[RedisServer]:
    """One real cluster-mode redis-server serving every slot, whose clients must give PASSWORD."""
    need_binaries("redis-server")
    server = RedisServer(extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"))
    server.port = _cluster_port()
    try:
        server.start()
        with server.client() as admin:
            admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            assert wait_until(lambda: b"cluster_state:ok" in admin.execute_command("CLUSTER", "INFO"), 20)
            admin.config_set("requirepass", PASSWORD)
        yield server
    finally:
        server.cleanup()


@pytest.mark.redis
def test_a_cluster_refusing_the_password_is_an_auth_error(cluster_with_password: RedisServer, namespace: str) -> None:
    port = cluster_with_password.port
    url = f"redis+cluster://:{SECRET}@127.0.0.1:{port}/"
    with pytest.raises(RegistryAuthError) as caught:
        PromptRegistryFactory.from_url(url, namespace=namespace)
    message = _one_short_line(str(caught.value))
    assert message.startswith(f"redis authentication failed (cluster nodes 127.0.0.1:{port}): ")
    assert isinstance(caught.value.__cause__, RedisClusterException)
    assert _cli_error(url).startswith(f"error: redis authentication failed (cluster nodes 127.0.0.1:{port})")

    with pytest.raises(RegistryAuthError) as caught:
        PromptRegistryFactory.from_url(f"redis+cluster://127.0.0.1:{port}/", namespace=namespace)
    assert _one_short_line(str(caught.value)) == (
        f"redis authentication failed (cluster nodes 127.0.0.1:{port}): "
        "the server requires a password and none was given"
    )

    # The right password works: the refusal above was the password, not the node.
    with PromptRegistryFactory.from_url(f"redis+cluster://:{PASSWORD}@127.0.0.1:{port}/", namespace=namespace) as reg:
        reg.create_prompt("p")
        assert reg.list_prompts() == ["p"]
