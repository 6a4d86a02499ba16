"""qbench.core: the interfaces and records every stage shares."""
