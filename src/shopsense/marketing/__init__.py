"""Precision marketing: profiles are read, never recomputed; segments, audiences, campaigns, experiments, uplift."""
