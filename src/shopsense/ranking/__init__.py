"""Learned ranker: P(attention) and P(purchase) heads over candidate items, fusion, rules and diversity."""
