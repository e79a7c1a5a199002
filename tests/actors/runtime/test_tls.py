"""``wss://``: certificates are verified by default; a session connects with the CA given
in ``sslopt``."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from actors import ManagedBacktestSession, ManagedSessionError
from protocol import (
    CreateSession,
)
from protocol.simulator import LocalSimulator
from tests.support.harness import FAST, QUICK_RETRY, check_exact, drive


@pytest.fixture
def tls_sim(tmp_path: Path) -> Iterator[tuple[LocalSimulator, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with LocalSimulator(seed=4, slots=100, ssl_context=server_context) as simulator:
        yield simulator, ca_file


def test_wss_rejects_an_untrusted_certificate_at_once(tls_sim: tuple[LocalSimulator, Path]
                                                      ) -> None:
    simulator, _ = tls_sim
    assert simulator.url.startswith("wss://")
    first, _ = simulator.available_range()
    with pytest.raises(ManagedSessionError) as info:
        ManagedBacktestSession.start(simulator.url, "local-dev-key",
                                     CreateSession(first, first + 5), timing=FAST,
                                     policy=QUICK_RETRY)
    assert info.value.kind == "create"
    assert "certificate not trusted" in str(info.value)
    assert simulator.upgrade_requests() == {}  # refused before any HTTP was sent


def test_wss_accepts_the_certificate_with_its_ca(tls_sim: tuple[LocalSimulator, Path]) -> None:
    simulator, ca_file = tls_sim
    first, _ = simulator.available_range()
    session = ManagedBacktestSession.start(simulator.url, "local-dev-key",
                                           CreateSession(first, first + 30), timing=FAST,
                                           policy=QUICK_RETRY,
                                           sslopt={"ca_certs": str(ca_file)})
    try:
        session.subscribe_transactions(simulator.addresses[:2])
        assert session.session_info.rpc_endpoint.startswith("https://127.0.0.1:")
        events = drive(session)
    finally:
        session.shutdown()
    check_exact(events, simulator.expected(first, first + 30,
                                           transactions=simulator.addresses[:2]))
