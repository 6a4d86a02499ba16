"""Where this process stands under a launcher (torchrun, accelerate launch, SLURM through
them): its rank, the number of processes and its rank on its node, as the launcher's
environment variables say. Read here and nowhere else."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Place:
    rank: int = 0
    world: int = 1        # processes taking part
    local_rank: int = 0   # this process's rank on its node (its GPU)


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def launcher_place() -> Place:
    """RANK, WORLD_SIZE and LOCAL_RANK as set by the launcher (one process when unset)."""
    return Place(_int_env("RANK", 0), max(1, _int_env("WORLD_SIZE", 1)),
                 _int_env("LOCAL_RANK", 0))
