"""libvirt's remote protocol in front of the bus: real virsh and libvirt-python manage
virtbus hosts with ``virtbus+tcp://GATEWAY/HOST``."""

from agent.gateway.server import DEFAULT_PORT, Gateway, tls_context

__all__ = ["DEFAULT_PORT", "Gateway", "tls_context"]
