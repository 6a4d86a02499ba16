"""qbench.scoring: metrics, their registry and their bootstrap."""
