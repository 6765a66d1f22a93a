"""The virtbus host agent, its client and CLI."""

__version__ = "0.1.0"
