"""Scoring: the metrics shared by evaluation reports and RL rewards (one module, so they cannot drift)."""
