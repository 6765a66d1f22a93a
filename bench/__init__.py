"""Benchmarks of issue 4: what virtbus costs on top of Docker and the broker.

Run them with ``bench/run.sh`` (``--quick`` for a smoke run); see ``bench/main.py``.
"""
