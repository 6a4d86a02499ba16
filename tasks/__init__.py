"""Built-in benchmarks, one module each; importing this package registers them."""
from qbench.tasks import (  # noqa: F401 (importing them registers them)
    agiqa3k,
    csiq,
    demo,
    dq495k,
    kadid,
    koniq,
    livew,
    pipal,
    spaq,
    sriqa,
    yaml_task,
)
