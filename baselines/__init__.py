"""The model catalogue: every named model qbench can run, and the published figures.
Importing this package registers them."""
from qbench.baselines import classical, openai_api, precomputed, qalign, qinsight, stats  # noqa: F401 (registers them)
