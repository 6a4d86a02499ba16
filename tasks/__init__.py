"""Built-in benchmarks, one module each; importing this package registers them."""
from . import agiqa3k, csiq, demo, dq495k, kadid, koniq, livew, pipal, spaq, sriqa  # noqa: F401
