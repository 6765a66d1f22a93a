"""The real services the integration, security and fault suites use, and fresh names
on them."""

from __future__ import annotations

import os
import uuid

AMQP_URL = os.environ.get("VIRTBUS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
IMAGE = "virtbus-test:latest"


def new_host() -> str:
    return f"t{uuid.uuid4().hex[:12]}"
