"""``rediss://``: the registry, the client and the CLI's factory over TLS to a real redis-server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from promptreg.client import PromptClient
from promptreg.registry import PromptRegistryFactory, RegistryUnavailableError
from promptreg.registry.cli.local_server import free_port
from tests.conftest import REQUIRE_REDIS
from tests.redis_server import RedisServer, wait_until

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server with a TLS port and a self-signed certificate; yields a verifying rediss:// URL."""
    if shutil.which("openssl") is None:
        if REQUIRE_REDIS:
            pytest.fail("openssl is needed to make the TLS test certificate")
        pytest.skip("openssl is not installed: TLS tests skipped")
    certs = tmp_path_factory.mktemp("tls")
    cert, key = certs / "cert.pem", certs / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    tls_port = free_port()
    server = RedisServer(
        extra_args=("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                    "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
    )  # fmt: skip
    try:
        server.start()
        yield f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"
    finally:
        server.cleanup()


def test_registry_and_client_work_over_tls(tls_url: str, namespace: str) -> None:
    with PromptRegistryFactory.from_url(tls_url, namespace=namespace) as registry:
        registry.create_prompt("movie-critic")
        registry.add_version("movie-critic", "v1 {{movie}}")
        registry.add_version("movie-critic", "v2 {{movie}}")
        registry.set_label("movie-critic", "production", 1)
        with PromptClient(tls_url, namespace=namespace, start_timeout=10) as prompts:
            assert prompts.wait_ready(10)
            assert prompts.render("movie-critic", movie="Alien") == "v1 Alien"
            registry.set_label("movie-critic", "production", 2)
            assert wait_until(lambda: prompts.get("movie-critic").version == 2, timeout=10)
            assert prompts.status().state.value == "live"


def test_untrusted_certificate_is_registry_unavailable(tls_url: str, namespace: str) -> None:
    untrusted = tls_url.split("?", 1)[0]  # verify against the system store, which lacks our CA
    with (
        PromptRegistryFactory.from_url(untrusted, namespace=namespace) as registry,
        pytest.raises(RegistryUnavailableError),
    ):
        registry.list_prompts()
