"""Data-parallel runs on an existing launcher: `torchrun --nproc_per_node N -m qbench run …` or
`accelerate launch -m qbench run …` (and the same across nodes). Both set RANK, WORLD_SIZE and
LOCAL_RANK; qbench then splits every task across the ranks with the shard partition, puts each
rank on its own GPU, and rank 0 alone holds the run folder, gathers the predictions and writes
metrics, manifest and leaderboard. Coordination (barriers, small decisions) goes over gloo, so
it works the same on CPU-only machines and never competes with a model for a GPU.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from qbench.core.launcher import launcher_place

T = TypeVar("T")

# A rank waits at a barrier while the others finish their part of a task: hours on a 7B model.
BARRIER_TIMEOUT = dt.timedelta(hours=48)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.parallel:
            import torch.distributed as dist
            dist.barrier()

    def from_main(self, value: T) -> T:
        """Rank 0's `value`, on every rank (other ranks' own values are ignored)."""
        if not self.parallel:
            return value
        import torch.distributed as dist
        box: list[Any] = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def main_does(self, fn: Callable[[], T]) -> T:
        """`fn()` on rank 0, its result (or its exception, raised) on every rank: a decision
        only rank 0 may take never leaves the other ranks waiting at a barrier."""
        result: Any = None
        if self.main:
            try:
                result = ("ok", fn())
            except Exception as exc:  # handed to every rank, then raised everywhere
                result = ("error", exc)
        outcome, value = self.from_main(result)
        if outcome == "error":
            raise value
        return value

    def device(self, requested: str) -> str:
        """`auto` on a GPU machine is this rank's own GPU (LOCAL_RANK)."""
        if requested != "auto" or not self.parallel:
            return requested
        import torch
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def launched() -> Iterator[Ranks]:
    """The ranks of this process as the launcher set them, with a gloo process group for the
    run's duration when there is more than one (none is created for a single process)."""
    place = launcher_place()
    ranks = Ranks(place.rank, place.world, place.local_rank)
    if not ranks.parallel:
        yield ranks
        return
    import torch.distributed as dist
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield ranks
    finally:
        if owned:
            dist.destroy_process_group()


@contextlib.contextmanager
def on_main(ranks: Ranks, context: contextlib.AbstractContextManager) -> Iterator[None]:
    """Enter `context` (a lock) on rank 0 only; every rank raises what rank 0 raised entering it,
    so that no rank works on a folder rank 0 could not take."""
    with contextlib.ExitStack() as stack:
        ranks.main_does(lambda: stack.enter_context(context) and None)
        yield
