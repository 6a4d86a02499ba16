"""The model catalogue: every named model qbench can run, and the figures their papers
published. Importing this package registers them."""
from pathlib import Path

from qbench.baselines import (  # noqa: F401 (importing them registers them)
    classical,
    openai_api,
    precomputed,
    qalign,
    qinsight,
    stats,
)
from qbench.results.published import register_published
from qbench.results.tables import set_default_tasks

register_published(Path(__file__).with_name("published.csv"))
# Q-Insight's Table 1, in its order: the default columns of `leaderboard --layout paper`
set_default_tasks("score", ("koniq", "spaq", "kadid", "pipal", "livew", "agiqa3k", "csiq"))
