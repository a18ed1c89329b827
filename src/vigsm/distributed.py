"""Several processes, one per GPU, through torch's own launcher (torchrun); nothing of our own to schedule.

A stage whose ``gpus`` param asks for more than one process re-executes itself under
``python -m torch.distributed.run --standalone --nproc_per_node N`` (:func:`relaunch`), so the dvc.yaml
command stays one line. A process started by a launcher (``RANK`` and ``WORLD_SIZE`` set: this one, or a
multi-node ``torchrun`` typed by hand) is a worker and never relaunches; its world size is the launcher's.

On a machine without CUDA the processes use gloo on the CPU. That is what the tests run (two gloo
processes on the tiny model), through the same ``gpus`` param a user sets, so that what DVC tracks is
what ran: an environment switch would change the per-process batch without DVC seeing it.

With ``gpus: 1`` and no launcher nothing here imports torch or starts a process group.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from vigsm.config import Gpus, TrainParams
from vigsm.errors import VigsmError

T = TypeVar("T")


def is_worker() -> bool:
    """True in a process started by torch's launcher (it sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    return int(os.environ["WORLD_SIZE"]) if is_worker() else 1


def rank() -> int:
    return int(os.environ["RANK"]) if is_worker() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_worker() else 0


def is_main() -> bool:
    """The one process that writes the stage's outputs."""
    return rank() == 0


def resolve_gpus(gpus: Gpus, key: str) -> int:
    """Processes to run for a ``gpus`` param (``key`` names it in errors): ``auto`` = every visible CUDA
    device, or 1 on a machine without one; an integer on a CPU-only machine = that many gloo processes."""
    if gpus == 1:
        return 1  # today's single process: no torch import, no launcher
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == "auto":
        return max(count, 1)
    if count and gpus > count:
        raise VigsmError(f"params: {key}: {gpus} processes asked for but {count} CUDA devices are visible; "
                         f"set {key} to at most {count} or to auto")
    return int(gpus)


def planned_world_size(gpus: Gpus, key: str) -> int:
    """The world size this stage runs with: the launcher's in a worker, else :func:`resolve_gpus`.

    A worker ignores ``gpus``: under a hand-typed multi-node torchrun the world spans every node.
    """
    return world_size() if is_worker() else resolve_gpus(gpus, key)


def split_batch(per_device: int, accumulation: int, world: int) -> tuple[int, int]:
    """(per-device batch, accumulation steps) for each of ``world`` processes, keeping the rows per
    optimiser step (per_device x accumulation for one process) unchanged.

    Accumulation is divided first, by gcd(accumulation, world): each process keeps the per-device batch
    one GPU was shown to fit. The remaining factor divides the per-device batch (12 x 1 on 2 processes:
    6 x 1 each). Each optimiser step still consumes the same consecutive rows of the same shuffled order,
    and the loss is averaged over all their completion tokens (transformers' num_items_in_batch, summed
    across processes), so what is learned is the same up to rounding. A split that does not divide
    raises one line naming the keys.
    """
    by_accumulation = math.gcd(accumulation, world)
    by_batch = world // by_accumulation
    if per_device % by_batch:
        raise VigsmError(
            f"params: train.per_device_train_batch_size x train.gradient_accumulation_steps = {per_device} x "
            f"{accumulation} rows per step cannot be shared by {world} processes; make "
            f"train.gradient_accumulation_steps or train.per_device_train_batch_size divisible by train.gpus "
            f"(or change train.gpus)")
    return per_device // by_batch, accumulation // by_accumulation


def per_process_train(train_p: TrainParams, world: int) -> TrainParams:
    """``train_p`` with the per-process batch and accumulation of :func:`split_batch` (unchanged for 1)."""
    if world == 1:
        return train_p
    batch, accumulation = split_batch(train_p.per_device_train_batch_size, train_p.gradient_accumulation_steps, world)
    # eval_loss is the mean, over evaluation steps, of each step's loss per completion token, and with
    # several processes a step's tokens are counted across all of them. Dividing the eval batch keeps each
    # step's rows those of one GPU, so eval_loss stays comparable with one-GPU runs; when it does not
    # divide, the steps are larger and eval_loss averages slightly differently (learning is unaffected).
    eval_batch = train_p.per_device_eval_batch_size
    if eval_batch % world == 0:
        eval_batch //= world
    else:
        print(f"[vigsm] train.per_device_eval_batch_size={eval_batch} does not divide by {world} processes: "
              f"eval_loss groups {eval_batch * world} rows per step instead of {eval_batch}", flush=True)
    return dataclasses.replace(train_p, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                               per_device_eval_batch_size=eval_batch)


def launcher_command(world: int, argv: list[str]) -> list[str]:
    """The command that runs ``argv`` (a script and its arguments) as ``world`` local workers."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", *argv]


def relaunch(world: int) -> NoReturn:
    """Replace this process by torch's launcher running this same script as ``world`` workers.

    exec, not a child: the launcher gets this process's id, so a signal sent to it (Ctrl-C, DVC's
    SIGTERM) reaches the launcher, which stops its workers.
    """
    cmd = launcher_command(world, sys.argv)
    print(f"[vigsm] {world} processes: {' '.join(cmd[1:5])} {' '.join(sys.argv)}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


def die_with_launcher() -> None:
    """Have the kernel kill this worker when its launcher dies (Linux; elsewhere nothing).

    torchrun starts each worker in a session of its own and stops them when it is asked to (SIGTERM,
    Ctrl-C), but a launcher killed outright (SIGKILL, the OOM killer) would leave them training on and
    writing beside the rerun. Called in every worker before any work.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the launcher died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _accept_indexed_cpu_locations() -> None:
    """Let torch.load map onto ``cpu:<n>``. Under gloo, accelerate names each process's device ``cpu:<rank>``
    and transformers' Trainer resumes the optimizer with that as map_location, which torch only knows as
    ``cpu``; without this, resuming on several CPU processes fails. CUDA runs never get here."""
    import torch

    def deserialize(obj: Any, location: str) -> Any:
        return obj if location.startswith("cpu:") else None

    torch.serialization.register_package(97, lambda obj: None, deserialize)  # after the built-in ones


@contextmanager
def process_group(backend: str | None = None, timeout: timedelta | None = None) -> Iterator[None]:
    """In a worker, join the process group (NCCL with CUDA, gloo without, unless ``backend`` says) and
    leave it cleanly on exit (``destroy_process_group``); outside a launcher, do nothing."""
    if world_size() == 1:
        yield
        return
    die_with_launcher()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            # Each process owns one device; loaders that place on the current device follow it.
            torch.cuda.set_device(local_rank())
        else:
            _accept_indexed_cpu_locations()
        backend = backend or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend=backend, **({"timeout": timeout} if timeout else {}))
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process of the group gets here (no-op in a single process)."""
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` in a single process)."""
    if world_size() == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def from_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on the main process only and hand its (picklable) result to every process.

    For the steps that change files other processes then read (cleaning a checkpoint directory): they
    wait until the main process is done.
    """
    if world_size() == 1:
        return fn()
    import torch.distributed as dist

    box: list[Any] = [None]
    error: BaseException | None = None
    if is_main():
        try:
            box[0] = ("ok", fn())
        except Exception as exc:  # noqa: BLE001 - re-raised below; the others must not wait forever
            error, box[0] = exc, ("error", str(exc))
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    status, value = box[0]
    if status == "error":
        raise VigsmError(f"the main process failed: {value}")
    return value


def shard(rows: list[T], rank: int, world: int) -> list[T]:
    """Process ``rank``'s share of ``rows``: every ``world``-th row from ``rank`` (deterministic; strided,
    so that long and short questions, wherever they sit in the file, are dealt evenly)."""
    return rows[rank::world]


def shard_path(out: Path, fingerprint: str, rank: int, world: int) -> Path:
    """Where process ``rank`` writes its shard of ``out``: beside it, named by the run's fingerprint, so a
    finished shard is reused by a rerun of the same run and never by another."""
    return out.with_name(f"{out.name}.shard{rank}of{world}-{fingerprint[:16]}")


def merge_shards(order: list[str], shards: list[list[dict]]) -> list[dict]:
    """The rows of every shard, in ``order`` (ids): the test file's order, as one process writes it.

    Every id must be in exactly one shard; anything else (a lost or doubled question) is an error.
    """
    by_id: dict[str, dict] = {}
    for rows in shards:
        for row in rows:
            if row["id"] in by_id:
                raise VigsmError(f"question {row['id']} was generated by two processes")
            by_id[row["id"]] = row
    missing = [i for i in order if i not in by_id]
    if missing or len(by_id) != len(order):
        raise VigsmError(f"the shards hold {len(by_id)} questions for {len(order)} asked"
                         + (f" ({missing[0]} missing)" if missing else ""))
    return [by_id[i] for i in order]
