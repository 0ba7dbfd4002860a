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

Each rank builds the same run (`dlx.train.setup` with its rank: the training batches are sharded,
rank r taking every world_size-th batch of the same permutation, so the global batch is
`data.batch_size * world_size`: halve `data.batch_size` on 2 ranks to train exactly like one process)
and trains it with `DistributedDataParallel` around each of the task's modules that have trainable
parameters. The task keeps its plain modules: the DDP wrappers are swapped in only for the duration of
a training step, so checkpoints, evaluation, EMA and visuals see the same modules and the same
state_dict keys as a one-process run (evaluation never enters a collective on rank 0 alone).
Training metrics are all-reduced before they are logged; the stop signal is agreed on every step.
nccl on GPUs, gloo on CPU.
"""

import os
import signal
import socket
import sys
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from dlx.errors import ConfigError, DlxError
from dlx.train import Meter

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
        from dlx.train import run as train_run

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
    from dlx import checkpoint, train
    from dlx.lock import RunLock

    rank, world_size = dist.get_rank(), dist.get_world_size()
    with ExitStack() as stack:
        state = None
        if rank == 0:
            train.configure_logging(run_dir)
            stack.enter_context(RunLock(run_dir))
            if resume:
                state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
                train.check_resumable(state["config"], cfg)
                train.record_config(run_dir, cfg)
        if resume:  # the folder may exist on node 0 only: rank 0 sends the checkpoint
            state = _broadcast(state)
        r = train.setup(cfg, run_dir, resume_state=state, rank=rank, world_size=world_size)
        wrap(r)
        return train.train_and_test(r)


def wrap(r: Any) -> None:
    """DDP around the task's trainable modules for its training steps; synced metrics and stop signal."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    task, stepper = r.task, r.stepper
    ids = [torch.cuda.current_device()] if r.device.type == "cuda" else None
    # Stochastic depth and drop-path leave a different set of weights without a gradient on each step (and
    # rank): DDP must look for them, a graph traversal per step that the other models do without.
    unused = any(getattr(m, "may_skip_parameters", False) for m in task.modules())
    wrapped = {
        name: DDP(child, device_ids=ids, find_unused_parameters=unused)
        for name, child in task.named_children()
        if any(p.requires_grad for p in child.parameters())
    } if len(r.optimizers) == 1 and task.ddp_wraps_model else {}
    if not wrapped:
        # Tasks that call model methods other than forward (an autoencoder's encode/decode) or step several
        # optimizers in turn on one batch (a GAN: D on G's samples, then G through a frozen D) do what DDP's
        # reducer cannot follow; here each optimizer's gradients are averaged over the ranks before its update.
        broadcast_state(task)
        stepper.grad_sync = average_gradients
    plain_step = task.training_step

    def training_step(batch: tuple[Tensor, ...], step: Any) -> dict[str, Tensor]:
        # DDP decides at forward time whether the next backward all-reduces: only the last micro-step of
        # a gradient accumulation does (no_sync around the others, forward and backward both).
        acc = stepper.accumulate
        last_micro = acc == 1 or any((m + 1) % acc == 0 for m in stepper.micro.values())
        with ExitStack() as stack:
            for name, ddp in wrapped.items():
                setattr(task, name, ddp)
                if not last_micro:
                    stack.enter_context(ddp.no_sync())
            try:
                return plain_step(batch, step)
            finally:
                for name, ddp in wrapped.items():
                    setattr(task, name, ddp.module)
                if not wrapped:  # rank 0's BatchNorm statistics everywhere, as DDP's broadcast_buffers does
                    for buffer in task.buffers():
                        dist.broadcast(buffer, src=0)

    task.training_step = training_step
    meter = SyncedMeter()
    meter.load_state_dict(r.meter.state_dict())
    r.meter = meter
    r.sync_stop = lambda stop: sync_stop(stop, r.device)
    r.gather = gather
    r.meta["world_size"] = r.world_size


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


def sync_stop(stop: Any, device: torch.device) -> bool:
    """Every rank stops at the same step if any rank got a stop signal (one tiny all-reduce per step).

    The loop acts on the returned value, not on `stop.requested`, so a signal that lands after the
    all-reduce waits for the next step on every rank alike.
    """
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    agreed = bool(flag.item())
    if agreed and not stop.requested:
        stop.requested = "SIGTERM (another rank)"
    return agreed


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
