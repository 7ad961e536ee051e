"""Prometheus metrics of one server instance (one registry each), the /metrics endpoint that
serves them, and the reward-hacking watch (reward distribution, length correlation, ensemble
disagreement).

May import: nothing of rmserve (prometheus-client and numpy).
"""
