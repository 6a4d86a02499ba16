"""qbench.cli: the qbench command: one module per verb."""
