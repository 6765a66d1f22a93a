"""Broker provisioning: users, permissions and the topology, through RabbitMQ's
management API."""
