"""The bound on opening a connection follows the URL's heartbeat."""

from __future__ import annotations

import pytest

from agent.host.bus import OPEN_TIMEOUT_S, open_timeout_s


@pytest.mark.parametrize(
    ("url", "bound_s"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", OPEN_TIMEOUT_S),
        ("amqp://127.0.0.1/?heartbeat=2", 9.0),
        ("amqps://h/vhost?connection_timeout=3&heartbeat=1", 6.0),
        ("amqp://127.0.0.1/?heartbeat=60", OPEN_TIMEOUT_S),
        ("amqp://127.0.0.1/?heartbeat=0", OPEN_TIMEOUT_S),
        ("amqp://127.0.0.1/?heartbeat=soon", OPEN_TIMEOUT_S),
    ],
)
def test_opening_is_bounded_by_the_urls_heartbeat_when_it_is_shorter(
    url: str, bound_s: float
) -> None:
    """A handshake silent for as long as the heartbeat would take to give up on an open
    connection (``3 * (N + 1)`` s) is on a dead link; no heartbeat (0) or a bad one keeps
    the fixed bound."""
    assert open_timeout_s(url) == bound_s
