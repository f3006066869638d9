"""Offline evaluation: splits that never leak the future, full-ranking metrics with confidence intervals."""
