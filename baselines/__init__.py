"""The model catalogue: every named model qbench can run, and the published figures.
Importing this package registers them."""
from . import classical, precomputed, qalign, qinsight, stats  # noqa: F401
