"""Peer libraries run through the benchmark harness on the same splits, each isolated in its own virtualenv."""
