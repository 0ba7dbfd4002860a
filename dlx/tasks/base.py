"""The contract between a task and the training loop.

A task is an nn.Module that owns the model(s) and the loss math. The loop (dlx.loop) owns devices,
autocast, train/eval switching, clipping, the finite check, checkpoints, logging and data parallelism.
The two meet in three places only:

1. **Methods** the loop calls: `param_groups()`, `training_step(batch, step)`, `validation_step(batch)`,
   `visuals(batch)`, `on_fit_start(data)`, `check_batch(batch)`, `on_validation_end(data)`, and
   `recalibrate(inputs)` when the spec asks for it. A task asks for an optimizer update by calling
   `step(name, loss)` (the Stepper) once per update: classification once per batch, a GAN k times for
   "disc" and once for "gen".
2. **The spec** (`Task.spec()` -> `TaskSpec`): what the loop must know beyond the methods, declared, never
   probed. Which optimizers and how many updates each makes per training step (schedules are sized in
   each optimizer's own updates), whether data parallelism may wrap the model in DDP, whether a step may
   leave parameters without gradients, whether BatchNorm statistics are recomputed before evaluation
   (and from how many recent training batches), the model's named extra outputs, and the metrics
   `on_validation_end` may return (a `trainer.monitor` on one of them is checked against this list).
3. **What models declare to their task** (`ModelSpec`, a model's `model_spec()` via `Declares`): the
   model-side facts of the spec (drop-path skips parameters, recalibration, auxiliary heads).

Metrics are returned as dicts of 0-d tensors that are *means over the batch*; the loop weights them by
the batch size, accumulates them on the device and reads them only at log intervals, so a task must
never call `.item()`. `validation_step`, `visuals`, `on_validation_end` and `check_batch` run in eval mode under
`torch.no_grad()`; the loop switches modes and restores them, tasks never do.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from torch import Tensor, nn

Step = Callable[[str, Tensor], None]  # step(name, loss): backward + clip + finite check + optimizer step


@dataclass(frozen=True)
class ModelSpec:
    """What a model tells its task beyond `forward`.

    Attributes:
        skips_parameters: a training forward may leave some parameters without a gradient (drop-path,
            stochastic depth): data parallelism must look for unused parameters.
        recalibration_batches: recompute the BatchNorm statistics from this many of the latest training
            inputs before each evaluation (`recalibrate(inputs)`); 0 = never.
        extra_outputs: names of the outputs `forward(x, extra_outputs=True)` returns beside the main one
            (GoogLeNet's auxiliary heads "aux1", "aux2") as `(main, {name: tensor})`, in training mode.
    """

    skips_parameters: bool = False
    recalibration_batches: int = 0
    extra_outputs: tuple[str, ...] = ()


class Declares:
    """Mixin of models with a ModelSpec other than the default (plain models need nothing)."""

    def model_spec(self) -> ModelSpec:
        raise NotImplementedError

    def recalibrate(self, inputs: Sequence[Tensor]) -> None:
        """Recompute BatchNorm statistics on `inputs` (only for `recalibration_batches > 0`)."""
        raise NotImplementedError


def model_spec(model: nn.Module) -> ModelSpec:
    """The model's declaration: its own for a `Declares` model, else the default (nothing special)."""
    return model.model_spec() if isinstance(model, Declares) else ModelSpec()


@dataclass(frozen=True)
class TaskSpec:
    """What the loop reads about a task (`Task.spec()`), instead of looking for attributes.

    Attributes:
        updates: optimizer name -> updates it makes per training step (before gradient accumulation); the
            keys are those of `param_groups()`. A GAN with k=2: {"gen": 1, "disc": 2}.
        ddp_wraps_model: data parallelism may wrap `model` in DistributedDataParallel: training_step calls
            nothing of the model but its forward, through `train_model`, once per backward, and there is a
            single optimizer. Otherwise gradients are averaged over the ranks before each update.
        skips_parameters: see ModelSpec.
        recalibration_batches: see ModelSpec; the loop keeps that many training inputs (in last.pt too, so a
            resumed run recalibrates on the same batches) and calls `recalibrate(inputs)` before evaluating.
        extra_outputs: see ModelSpec.
        end_metrics: names (without the split) of the metrics `on_validation_end` may return, e.g. ("ppl",); the
            loop checks `trainer.monitor` against them before training and refuses a name not declared here.
    """

    updates: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({"main": 1}))
    ddp_wraps_model: bool = False
    skips_parameters: bool = False
    recalibration_batches: int = 0
    extra_outputs: tuple[str, ...] = ()
    end_metrics: tuple[str, ...] = ()


class Task(nn.Module):
    """Base class. Subclasses implement `training_step` and `validation_step`."""

    # The metric that picks best.pt and drives early stopping, unless trainer.monitor overrides it.
    monitor: str = "val/loss"
    monitor_mode: str = "min"
    # See TaskSpec.ddp_wraps_model: only tasks whose training_step calls `self.train_model(x)` and nothing else.
    ddp_wraps_model: bool = False
    # See TaskSpec.end_metrics: what on_validation_end returns (tasks whose list depends on their config override spec).
    end_metrics: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, loss: nn.Module):
        super().__init__()
        self.model, self.loss = model, loss
        self._train_model: list[nn.Module] = []  # a DDP wrapper of `model` (data parallelism), kept out of state_dict

    def spec(self) -> TaskSpec:
        """The declaration the loop reads; tasks with other optimizers than "main" override `updates`."""
        m = model_spec(self.model)
        return TaskSpec(updates=MappingProxyType(dict.fromkeys(self.param_groups(), 1)),
                        ddp_wraps_model=self.ddp_wraps_model, skips_parameters=m.skips_parameters,
                        recalibration_batches=m.recalibration_batches, extra_outputs=m.extra_outputs,
                        end_metrics=self.end_metrics)

    # ---- what the loop calls ------------------------------------------------------------------
    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """Parameters per optimizer. One optimizer "main" by default; a GAN returns "gen" and "disc"."""
        return {"main": [p for p in self.parameters() if p.requires_grad]}

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        """Compute the loss of one batch, call `step(name, loss)`, return batch-mean metrics."""
        raise NotImplementedError

    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Batch-mean metrics of one evaluation batch (no gradients; the loop sets eval mode)."""
        raise NotImplementedError

    def visuals(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Optional images (N, C, H, W) in [0, 1] (or strings: text samples) for TensorBoard, at each validation
        (in eval mode)."""
        return {}

    def figures(self, data, split: str, where: str) -> tuple[dict, dict]:  # noqa: ANN001 - a data module
        """Optional figures of a whole split with the weights as they are, made once at the end of a run (with the
        best weights, in eval mode) and by `dlx eval`: ({name: PIL image}, {name: their numbers as plain
        values}). `where` says what was evaluated, for titles. Classification draws its confusion matrix
        and its most confidently wrong images."""
        return {}, {}

    def on_fit_start(self, data) -> None:  # noqa: ANN001 - a data module (dlx.data.base.TensorData)
        """Optional hook with the set-up data module (e.g. fit a PCA baseline, fix a noise batch)."""

    def check_batch(self, batch: tuple[Tensor, ...]) -> None:
        """Optional check of one validation batch before training, after `on_fit_start` (raise ConfigError for
        data or a loss the model does not fit). The loop calls it in eval mode under `torch.no_grad()`, with the
        RNG state kept, so a forward pass here updates no BatchNorm statistics and draws nothing."""

    def on_validation_end(self, data) -> dict[str, Tensor]:  # noqa: ANN001
        """Optional extra metrics computed once per evaluation over whole data (e.g. FID); means. It ends an
        evaluation: sums a task keeps over a split's validation steps start afresh after it. Every name it may
        return is declared in `TaskSpec.end_metrics`."""
        return {}

    def recalibrate(self, inputs: Sequence[Tensor]) -> None:
        """Recompute the model's BatchNorm statistics on recent training inputs (spec.recalibration_batches)."""
        if isinstance(self.model, Declares):
            self.model.recalibrate(inputs)

    # ---- data parallelism ---------------------------------------------------------------------
    def wrap_model(self, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        """Train through `wrapper(self.model)` (DDP) from now on (spec.ddp_wraps_model); called once, at set-up.

        The wrapper is kept outside the module tree, so state_dict keys, evaluation and EMA copies keep
        seeing the plain model.
        """
        self._train_model = [wrapper(self.model)]

    @property
    def train_model(self) -> nn.Module:
        """The model as training_step calls it: the DDP wrapper under data parallelism, else the model."""
        return self._train_model[0] if self._train_model else self.model
