"""Data parallelism over the processes of `accelerate launch` (torch.distributed underneath): which
process this is, the token-balanced split of the work that rank 0 planned, and passing Python
objects between processes. A process not started by a launcher is the only rank and pays nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from ..launch import launch_env  # re-exported: callers import it from here too

# a rank that finishes its shard waits for the slowest one inside a collective; the launcher stops the
# whole job when a process dies, so this only bounds a process that hangs without dying
TIMEOUT_S = float(os.environ.get("PROMPTKIT_DIST_TIMEOUT_S", 6 * 3600))


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank `rank` of `world` (rank 0 plans, saves and reports)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str | None = None  # the device accelerate gave this process, when launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def broadcast(self, obj):
        """Rank 0's `obj`, on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world}"


def current(device: str = "auto") -> Ranks:
    """The ranks of this job: set up by `accelerate launch` (or torchrun) through its environment,
    a single rank otherwise. On machines without GPUs (or with `device='cpu'`) processes talk over gloo."""
    if launch_env()[1] <= 1:
        return Ranks()
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    state = PartialState(cpu=cpu, timeout=timedelta(seconds=TIMEOUT_S))
    return Ranks(state.process_index, state.num_processes, state.local_process_index, str(state.device))


def shard_by_cost(costs: list[int], world: int) -> list[list[int]]:
    """Split positions 0..n-1, in order, into `world` contiguous runs of about equal total cost.

    Contiguous runs keep neighbours together (the caller orders work so that prompts sharing a
    prefix are neighbours); each boundary lands within one item's cost of the ideal split."""
    total = sum(costs)
    shards: list[list[int]] = [[] for _ in range(world)]
    done, k = 0, 0
    for i, cost in enumerate(costs):
        # move on once this shard holds its share, measured at the item's midpoint
        while k < world - 1 and (done + cost / 2) > total * (k + 1) / world:
            k += 1
        shards[k].append(i)
        done += cost
    return shards
