"""Where and how a run computes: device, precision, seeding, determinism, stop signals."""

import os
import random
import signal
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from torch import nn

from dlx.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "16": torch.float16}


_DEFAULT_THREADS: list[int] = []  # torch's own thread count, read before the first run changes it


def set_threads(n: int | None) -> int:
    """torch's CPU threads for this run: `n`, or torch's default (OMP_NUM_THREADS, else the cores) when None, also
    after an earlier run in this process (a sweep job, dlx.train) set another; returns the count in effect.

    On a busy machine the default (one thread per core) can be many times slower than one thread: the threads
    of one op wait for each other while the cores serve other processes."""
    if not _DEFAULT_THREADS:
        _DEFAULT_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(n or _DEFAULT_THREADS[0])
    return torch.get_num_threads()


def pick_device(name: str) -> torch.device:
    """`auto` prefers cuda, then mps, then cpu; an unavailable explicit choice is a user error."""
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device", name, "CUDA is not available on this machine; use auto or cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device", name, "MPS is not available on this machine; use auto or cpu")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 on GPUs that support it (measured faster, no scaler needed), else fp32."""
    name = str(name)
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "32"
    return name


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast context for forward passes (fp32 = no autocast)."""
    if precision == "32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling against underflow; bf16 has fp32's range and does not."""
    return torch.amp.GradScaler(device.type) if precision == "16" else None


def use_channels_last(setting: str, device: torch.device, model: nn.Module) -> bool:
    """NHWC memory format: on by default for conv nets on CUDA (tensor cores want it) and on CPU.

    On CPU (oneDNN) it was measured faster for every conv net tried (benchmarks/bench_formats.py: LeNet,
    ResNet-20, airbench at 8x8 and 32x32; 1.1-1.3x per step on one thread, up to 3x on a busy 2-core machine).
    """
    setting = str(setting).lower()
    if setting == "auto":
        return device.type in ("cuda", "cpu") and any(isinstance(m, nn.Conv2d) for m in model.modules())
    return setting == "true"


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; with `deterministic`, refuse nondeterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms imports torch._inductor and torch._dynamo (1-3 s of start-up on a
    # small CPU), so call it only when determinism is asked for or has to be switched off again.
    if deterministic or torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


class StopSignal:
    """SIGTERM/SIGINT ask the run to finish its step, save and exit; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
