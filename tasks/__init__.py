"""Built-in benchmarks, one module each; importing this package registers them."""
from . import demo, dq495k  # noqa: F401
