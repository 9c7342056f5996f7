"""The private redis-server launcher used by the demo, the benchmarks and the tests."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from promptreg.registry import RegistryUnavailableError
from promptreg.registry.cli.local_server import LocalRedisServer
from tests.redis_server import RedisServer


def test_missing_executable_is_a_typed_error(tmp_path: Path) -> None:
    server = LocalRedisServer(str(tmp_path / "no-such-redis-server"))
    with pytest.raises(RegistryUnavailableError, match="cannot run"):
        server.start()
    assert server.process is None
    server.cleanup()
    assert not server.dir.exists()


def test_server_that_exits_at_once_is_a_typed_error(redis_server: RedisServer) -> None:
    # (redis_server only makes sure redis-server is installed, or skips with the usual message)
    clash = LocalRedisServer(extra_args=("--no-such-option", "yes"))
    with pytest.raises(RegistryUnavailableError, match="exited with code"):
        clash.start()
    clash.cleanup()


def test_context_manager_starts_and_always_stops(redis_server: RedisServer) -> None:
    # (redis_server only makes sure redis-server is installed, or skips with the usual message)
    with LocalRedisServer(appendonly=True) as server:
        with redis.Redis.from_url(server.url) as conn:
            conn.set("k", "v")
        server.kill()
        server.start()  # same port and dir: AOF brings the write back
        with redis.Redis.from_url(server.url) as conn:
            assert conn.get("k") == b"v"
        process = server.process
        workdir = server.dir
    assert process is not None and process.poll() is not None
    assert not workdir.exists()


def test_a_second_start_leaks_no_server_and_a_foreign_one_on_the_port_is_an_error(redis_server: RedisServer) -> None:
    # (redis_server only makes sure redis-server is installed, or skips with the usual message)
    server = LocalRedisServer().start()
    try:
        first = server.process
        with server:  # entering a started server starts nothing more ...
            assert server.process is first
        assert first is not None and first.poll() is not None  # ... and leaving it stops the one process
        squatter = LocalRedisServer()
        squatter.port = redis_server.port  # the port is taken by another server
        with pytest.raises(RegistryUnavailableError, match="exited with code"):
            squatter.start()  # its own process cannot bind: the other server answering is no success
        squatter.cleanup()
    finally:
        server.cleanup()


def test_a_port_taken_before_the_first_start_moves_the_server_to_another(redis_server: RedisServer) -> None:
    # (redis_server only makes sure redis-server is installed, or skips with the usual message)
    server = LocalRedisServer()
    picked = server.port
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind(("127.0.0.1", picked))  # another process got it between the pick and the bind
            taken.listen()
            server.start()
            assert server.port != picked
            with redis.Redis.from_url(server.url) as conn:
                assert conn.ping()
    finally:
        server.cleanup()
