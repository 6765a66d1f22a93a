"""The host agent: one per Docker host. It consumes commands, runs them on Docker and
publishes events; it never imports the client, the CLI or the gateway."""
