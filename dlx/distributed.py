"""Data-parallel training: `trainer.devices=N`, `torchrun ... -m dlx.cli train ...`, and multi-node torchrun.

One run, one folder, N processes (ranks). Rank 0 owns the run folder: it is the only process that goes
through Hydra (so only one folder is made, lightning-hydra-template#393), the only one that writes
TensorBoard, metrics, summary and checkpoints, and it hands the run to the others:

- `trainer.devices=N`: the job's process spawns N ranks (torch.multiprocessing, `spawn`) on this
  machine, each told the run folder and the resolved config; the job process only waits.
- torchrun (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR in the environment, one or many nodes): every rank
  starts `dlx train`; rank 0 runs Hydra and broadcasts each job (config, folder) to the others, which
  skip Hydra and wait for jobs until rank 0 says the sweep is over, so a sweep of DDP jobs gives one
  folder per job.

Each rank builds the same run (`dlx.prepare.setup` with a `Ranks`: the training batches are sharded,
rank r taking every world_size-th batch of the same permutation, so the global batch is
`data.batch_size * world_size`: halve `data.batch_size` on 2 ranks to train exactly like one process)
and trains it with the same loop as one process. `Ranks` is where the ranks agree, at fixed points of
the loop: at set-up it wraps the model of tasks whose spec allows it in `DistributedDataParallel`, once
(`Task.wrap_model`: the task keeps its plain model for state_dict keys, evaluation, EMA and visuals),
or gives the Stepper a gradient average over the ranks; training metrics are all-reduced before they
are logged; the stop signal is agreed on every step; validation numbers are rank 0's on every rank, so
best checkpoint, early stopping and plateau schedules decide alike everywhere.
nccl on GPUs, gloo on CPU.
"""

import os
import signal
import socket
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from dlx.errors import ConfigError, DlxError
from dlx.state import Meter, Processes
from dlx.tasks.base import Task, TaskSpec

TIMEOUT = timedelta(minutes=30)


# ---- who am I -------------------------------------------------------------------------------------
def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) when started by torchrun with more than one process, else None."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))


def is_follower() -> bool:
    """A torchrun rank other than 0: it trains what rank 0 broadcasts and never runs Hydra."""
    env = torchrun_env()
    return env is not None and env[0] != 0


def backend() -> str:
    """gloo for CPU tensors, nccl for CUDA tensors (one process group serves both)."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def uses_cuda(cfg: DictConfig) -> bool:
    device = str(cfg.trainer.device)
    return torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))


def check(cfg: DictConfig, world_size: int) -> None:
    """Settings that cannot work across processes, as one-line errors."""
    device = str(cfg.trainer.device)
    if device.startswith("cuda:"):
        raise ConfigError("trainer.device", device, "with several processes use trainer.device=cuda (or auto): "
                          "rank r takes GPU r of its node")
    if device == "mps" or (device == "auto" and not torch.cuda.is_available() and torch.backends.mps.is_available()):
        raise ConfigError("trainer.devices", world_size, "data-parallel training runs on CUDA or CPU, not MPS; "
                          "set trainer.device=cpu")
    if uses_cuda(cfg) and torchrun_env() is None and world_size > torch.cuda.device_count():
        raise ConfigError("trainer.devices", world_size, f"this machine has {torch.cuda.device_count()} GPUs")


# ---- entry: one run, however many processes ---------------------------------------------------------
def run(cfg: DictConfig, run_dir: Path, resume: bool = False, job_num: int | None = None) -> int:
    """Train one run in `run_dir` (fresh or resumed) on `trainer.devices` processes; return the exit code."""
    env = torchrun_env()
    n = cfg.trainer.devices
    if env is not None:
        if n not in (1, env[1]):
            raise ConfigError("trainer.devices", n, f"differs from torchrun's world size {env[1]}; "
                              "under torchrun leave trainer.devices=1")
        check(cfg, env[1])
        return lead(cfg, run_dir, resume)
    if n == 1:
        pin_job_device(cfg, job_num)
        from dlx.loop import run as train_run

        return train_run(cfg, run_dir, resume=resume)
    check(cfg, n)
    return spawn(cfg, run_dir, resume, n, first_gpu=(job_num or 0) * n)


def pin_job_device(cfg: DictConfig, job_num: int | None) -> None:
    """Parallel sweep jobs on a machine with several GPUs: job k takes GPU k mod count (device auto/cuda)."""
    if job_num is None or not uses_cuda(cfg) or str(cfg.trainer.device).startswith("cuda:"):
        return
    count = torch.cuda.device_count()
    if count > 1:
        torch.cuda.set_device(job_num % count)


# ---- trainer.devices=N: spawn the ranks here ----------------------------------------------------------
def spawn(cfg: DictConfig, run_dir: Path, resume: bool, n: int, first_gpu: int = 0) -> int:
    """Start n ranks on this machine, wait for them, return rank 0's exit code."""
    import torch.multiprocessing as mp

    plain = OmegaConf.to_container(cfg, resolve=True)
    method = start_method(cfg)
    results = mp.get_context(method).SimpleQueue()
    init = f"tcp://127.0.0.1:{free_port()}"
    procs = mp.start_processes(_spawned, args=(n, init, plain, str(run_dir), resume, results, first_gpu),
                               nprocs=n, join=False, start_method=method)
    # Ctrl-C reaches the ranks from the terminal; a SIGTERM sent to this process alone is passed on.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda s, f: _forward(procs))}
    try:
        while not procs.join():
            pass
    except Exception as e:  # noqa: BLE001 - a rank failed; a user error it reported is one line
        messages = _drain(results)
        errors = [m for kind, m in messages if kind == "error"]
        if errors:
            raise DlxError(errors[0]) from None
        raise RuntimeError(f"a data-parallel rank failed:\n{e}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [m for kind, m in _drain(results) if kind == "code"]
    return codes[0] if codes else 1


def start_method(cfg: DictConfig) -> str:
    """fork on CPU (the ranks start in a blink, with torch already imported); spawn for CUDA, which a
    forked child cannot initialize, and wherever fork is not the platform's safe default."""
    if sys.platform == "linux" and not uses_cuda(cfg) and not torch.cuda.is_initialized():
        return "fork"
    return "spawn"


def _forward(procs: Any) -> None:
    """Pass SIGTERM on to the ranks: they agree on the step to stop at and rank 0 saves (see sync_stop)."""
    for p in procs.processes:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)


def _drain(queue: Any) -> list[tuple[str, Any]]:
    out = []
    while not queue.empty():
        out.append(queue.get())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(rank: int, n: int, init: str, plain: dict, run_dir: str, resume: bool, results: Any,
             first_gpu: int) -> None:
    """One spawned rank: join the group, train, report rank 0's exit code (or a user error)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // n))  # n ranks share the cores
    cfg = OmegaConf.create(plain)
    if uses_cuda(cfg):
        torch.cuda.set_device((first_gpu + rank) % torch.cuda.device_count())
    dist.init_process_group(backend(), init_method=init, rank=rank, world_size=n, timeout=TIMEOUT)
    try:
        code = train_rank(cfg, Path(run_dir), resume)
        if rank == 0:
            results.put(("code", code))
    except DlxError as e:
        results.put(("error", str(e)))
        raise
    finally:
        dist.destroy_process_group()


# ---- torchrun: rank 0 leads, the others follow ---------------------------------------------------------
def init_torchrun() -> None:
    """Join torchrun's process group (env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE) once."""
    if dist.is_initialized():
        return
    _, _, local_rank = torchrun_env()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend(), timeout=TIMEOUT)


def lead(cfg: DictConfig, run_dir: Path, resume: bool) -> int:
    """Rank 0 under torchrun: send this job to the followers, then train it with them."""
    if not dist.is_initialized():  # a launcher's worker process: the followers wait on rank 0's own process
        raise DlxError("this process is not in torchrun's process group: under torchrun, `dlx train` runs the "
                       "jobs of a sweep one after the other on all ranks (keep the default launcher)")
    _broadcast({"cfg": OmegaConf.to_container(cfg, resolve=True), "run_dir": str(run_dir), "resume": resume})
    return train_rank(cfg, run_dir, resume)


def release() -> None:
    """Rank 0 under torchrun, when Hydra is done (or failed): tell the followers there are no more jobs."""
    if dist.is_initialized():
        _broadcast(None)
        dist.destroy_process_group()


def follow() -> int:
    """A torchrun rank other than 0: train every job rank 0 broadcasts, until it sends None."""
    init_torchrun()
    code = 0
    try:
        while (job := _broadcast(None)) is not None:
            code = max(code, train_rank(OmegaConf.create(job["cfg"]), Path(job["run_dir"]), job["resume"]))
    finally:
        dist.destroy_process_group()
    return code


def _broadcast(obj: Any) -> Any:
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---- one rank of one run ----------------------------------------------------------------------------
def train_rank(cfg: DictConfig, run_dir: Path, resume: bool) -> int:
    """What every rank does for a run; rank 0 also locks and logs the folder and reads last.pt."""
    from dlx import checkpoint, loop, prepare
    from dlx.lock import RunLock

    processes = Ranks(dist.get_rank(), dist.get_world_size())
    with ExitStack() as stack:
        state = None
        if processes.is_main:
            prepare.configure_logging(run_dir)
            stack.enter_context(RunLock(run_dir))
            if resume:
                state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
                prepare.check_resumable(state["config"], cfg)
        if resume:  # the folder may exist on node 0 only: rank 0 sends the checkpoint
            state = _broadcast(state)
        r = prepare.setup(cfg, run_dir, resume_state=state, processes=processes)
        if processes.is_main and resume:
            prepare.record_config(run_dir, cfg)
        return loop.train_and_test(r)


class Ranks(Processes):
    """How the ranks of one data-parallel run agree (see dlx.state.Processes for when the loop asks)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self.ddp: torch.nn.Module | None = None
        self.task: torch.nn.Module | None = None
        self.device = torch.device("cpu")

    def prepare(self, task: Task, spec: TaskSpec, device: torch.device) -> Callable | None:
        """DDP around the model of tasks whose spec allows it; the others average gradients by hand.

        Tasks that call model methods other than forward (an autoencoder's encode/decode) or step several
        optimizers in turn on one batch (a GAN: D on G's samples, then G through a frozen D) do what DDP's
        reducer cannot follow; for them each optimizer's gradients are averaged over the ranks before its
        update, and rank 0's buffers (BatchNorm statistics) are broadcast after each step, as DDP does.
        """
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.task, self.device = task, device
        trainable = any(p.requires_grad for p in task.model.parameters())
        if spec.ddp_wraps_model and len(spec.updates) == 1 and trainable:
            ids = [torch.cuda.current_device()] if device.type == "cuda" else None
            # Stochastic depth and drop-path leave a different set of weights without a gradient on each step
            # (and rank): DDP must look for them, a graph traversal per step the other models do without.
            task.wrap_model(lambda m: DDP(m, device_ids=ids, find_unused_parameters=spec.skips_parameters))
            self.ddp = task.train_model
            return None
        broadcast_state(task)
        return average_gradients

    def meter(self) -> Meter:
        return SyncedMeter()

    def micro_step(self, completes_update: bool) -> AbstractContextManager:
        # DDP decides at forward time whether the next backward all-reduces: only the last micro-step of a
        # gradient accumulation does (no_sync around the others, forward and backward both).
        return self.ddp.no_sync() if self.ddp is not None and not completes_update else nullcontext()

    def after_step(self) -> None:
        if self.ddp is None:  # rank 0's BatchNorm statistics everywhere, as DDP's broadcast_buffers does
            for buffer in self.task.buffers():
                dist.broadcast(buffer, src=0)

    def after_recalibration(self, module: torch.nn.Module) -> None:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)

    def stop(self, requested: str | None) -> bool:
        return sync_stop(requested, self.device)

    def from_main(self, obj: Any) -> Any:
        return _broadcast(obj)

    def gather(self, obj: Any) -> list[Any]:
        return gather(obj)


def broadcast_state(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (what DDP does when it wraps a module)."""
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


def average_gradients(params: list[Tensor]) -> None:
    """Mean of each gradient over the ranks, in one all-reduce (after a small one that agrees on which
    parameters have a gradient anywhere). A parameter without a gradient on some ranks counts zeros there;
    one without a gradient on every rank keeps none, so the optimizer leaves it alone as in one process
    (a stacked autoencoder's layers outside the phase being trained)."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    dist.all_reduce(has)  # (P,): on how many ranks each parameter has a gradient
    used = [p for p, n in zip(params, has.tolist(), strict=True) if n > 0]
    if not used:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in used]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for p, g in zip(used, _unflatten_dense_tensors(flat, grads), strict=True):
        p.grad = g.view_as(p)


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (checkpoints keep each rank's RNG state)."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sync_stop(requested: str | None, device: torch.device) -> bool:
    """Every rank stops at the same step if any rank got a stop signal (one tiny all-reduce per step).

    The loop acts on the returned value, not on its own signal, so a signal that lands after the
    all-reduce waits for the next step on every rank alike.
    """
    flag = torch.tensor([1.0 if requested else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class SyncedMeter(Meter):
    """A Meter whose read() first sums the batch-weighted sums and counts of all ranks (all-reduce)."""

    def read(self, prefix: str) -> dict[str, float]:
        if self.sums:
            keys = sorted(self.sums)
            device = self.sums[keys[0]].device
            count = torch.tensor(float(self.count), device=device)
            packed = torch.stack([*(self.sums[k].float() for k in keys), count])  # (K + 1,)
            dist.all_reduce(packed)
            self.sums = dict(zip(keys, packed[:-1], strict=True))
            self.count = int(packed[-1].item())
        return super().read(prefix)
