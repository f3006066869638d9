"""Peer: the ``implicit`` library's ALS and BPR with their documented defaults.

The code lives in :mod:`shopsense.eval.peers`, which ``shopsense evaluate --peers implicit`` runs too.
"""

from shopsense.eval.peers import run_implicit

__all__ = ["run_implicit"]
