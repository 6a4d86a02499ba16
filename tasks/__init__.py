"""Built-in benchmarks, one module each; importing this package registers them."""
from qbench.tasks import agiqa3k, csiq, demo, dq495k, kadid, koniq, livew, pipal, spaq, sriqa  # noqa: F401
