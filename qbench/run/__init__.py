"""qbench.run: running a model over tasks: the run folder, the runner, merge, score."""
