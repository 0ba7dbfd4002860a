"""Character-level language modelling: many-to-many sequence prediction (Karpathy's char-rnn, nanoGPT).

Training uses teacher forcing: the model reads the true characters x_0..x_{T-1} of a window and is scored
on predicting x_1..x_T at every position at once (cross-entropy, in nats per character). Sampling is free
running: a prompt is encoded, the next character is drawn from softmax(logits / temperature), appended, and
the model reads its own output from then on (`generate`). A recurrent model carries its state over the
whole sample; a Transformer is shown the last `context` characters (the training window length, the most
its learned positions can take).

Metrics: loss (the loss group's criterion), nll (nats per character, plain cross-entropy), bits_per_char
(nll / ln 2), acc (next-character accuracy); at each validation and test, ppl = exp(mean nll per character
over the whole split), computed from the split's summed NLL (the mean of per-batch exps would overstate it).
Visuals: a sample of `sample_length` characters at `temperature`, written to TensorBoard's TEXT tab.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlx.data.text import decode, encode
from dlx.errors import ConfigError
from dlx.models.recurrent import RecurrentLM
from dlx.tasks.base import Step, Task


def draw(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Next ids (B, 1) from logits (B, V): softmax(logits / temperature) sampled; temperature 0 = argmax."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    return torch.multinomial(F.softmax(logits.float() / temperature, dim=-1), 1, generator=generator)


@torch.no_grad()
def generate(model: nn.Module, prompt: Tensor, length: int, context: int, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> Tensor:
    """Continue each row of `prompt` (B, P) by `length` ids drawn from the model; returns (B, P + length).

    Free running: the model reads the prompt and then only the ids it drew itself. A recurrent model reads
    each new id once, its state carried over from the previous ones (char-rnn); any other causal model
    reads the last `context` ids again at every step (nanoGPT). temperature 0 takes the most likely id.
    """
    ids = prompt
    if isinstance(model, RecurrentLM):
        logits, state = model.advance(prompt)  # (B, P, V)
        for _ in range(length):
            nxt = draw(logits[:, -1], temperature, generator)  # (B, 1)
            ids = torch.cat([ids, nxt], dim=1)
            logits, state = model.advance(nxt, state)
        return ids
    for _ in range(length):
        logits = model(ids[:, -context:])[:, -1]  # (B, V): the distribution of the next id
        ids = torch.cat([ids, draw(logits, temperature, generator)], dim=1)
    return ids


class LanguageModel(Task):
    """Next-token prediction on batches (x (B, T) ids, y (B, T) next ids).

    Args:
        model: ids (B, T) -> logits (B, T, vocab_size), causal (dlx.models.recurrent.RecurrentLM,
            dlx.models.transformer.CausalTransformer).
        loss: criterion on (logits (N, V), ids (N,)) (loss=cross_entropy).
        context: characters the sampler shows the model (from `data.seq_len`: the training window).
        temperature: softmax temperature of the samples logged at each validation (0 = greedy).
        sample_length: characters per logged sample.
        prompt: text the logged samples start from.
    """

    ddp_wraps_model = True  # training_step calls only self.train_model(x)
    end_metrics = ("ppl",)  # on_validation_end: exp of the whole split's mean NLL

    def __init__(self, model: nn.Module, loss: nn.Module, context: int = 128, temperature: float = 0.8,
                 sample_length: int = 300, prompt: str = "\n"):
        super().__init__(model, loss)
        if context < 1:
            raise ConfigError("task.context", context, "must be >= 1")
        if temperature < 0:
            raise ConfigError("task.temperature", temperature, "must be >= 0 (0 = greedy)")
        if sample_length < 0:
            raise ConfigError("task.sample_length", sample_length, "must be >= 0")
        if not prompt:
            raise ConfigError("task.prompt", prompt, "must hold at least one character")
        self.context, self.temperature, self.sample_length, self.prompt = context, temperature, sample_length, prompt
        # Summed NLL and character count of the split being evaluated, for its perplexity (read and reset at
        # the end of each evaluation by on_validation_end).
        self.nll_sum: Tensor | None = None
        self.count: Tensor | None = None

    def training_step(self, batch: tuple[Tensor, ...], step: Step) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        logits = self.train_model(x)  # (B, T, V): teacher forcing, every position predicts its next id
        loss = self.loss(logits.flatten(0, 1), y.flatten())
        step("main", loss)
        logits = logits.detach().flatten(0, 1)
        nll = F.cross_entropy(logits.float(), y.flatten())
        return {"loss": loss.detach(), "nll": nll, "bits_per_char": nll / math.log(2),
                "acc": (logits.argmax(-1) == y.flatten()).float().mean()}

    @torch.no_grad()
    def validation_step(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, y = batch[0], batch[1]
        logits = self.model(x).flatten(0, 1)  # (B*T, V)
        nll_each = F.cross_entropy(logits.float(), y.flatten(), reduction="none")  # (B*T,) nats
        total = nll_each.sum()
        self.nll_sum = total if self.nll_sum is None else self.nll_sum + total
        self.count = (self.count if self.count is not None else 0) + nll_each.numel()
        nll = nll_each.mean()
        return {"loss": self.loss(logits, y.flatten()), "nll": nll, "bits_per_char": nll / math.log(2),
                "acc": (logits.argmax(-1) == y.flatten()).float().mean()}

    @torch.no_grad()
    def on_validation_end(self, data) -> dict[str, Tensor]:  # noqa: ANN001
        if self.nll_sum is None:
            return {}
        ppl = (self.nll_sum / self.count).exp()
        self.nll_sum = self.count = None
        return {"ppl": ppl}

    # ---- sampling -------------------------------------------------------------------------------
    def sample_text(self, prompt: str, length: int, temperature: float, generator: torch.Generator | None = None,
                    n: int = 1) -> list[str]:
        """`n` continuations of `prompt`: the prompt and `length` drawn characters each (in the mode the model is
        in: the loop's visuals and `dlx sample` run in eval mode, so dropout is off)."""
        device = next(self.model.parameters()).device
        start = encode(prompt).to(device)[None].repeat(n, 1)  # (n, P)
        ids = generate(self.model, start, length, self.context, temperature, generator)
        return [decode(row) for row in ids.cpu()]

    def visuals(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor | str]:
        """A free-running sample for TensorBoard's TEXT tab (and train.log), from a fixed seed, so the samples of
        successive validations differ only by what the model learned; the last one is the end of the run's."""
        if not self.sample_length:
            return {}
        device = next(self.model.parameters()).device
        g = torch.Generator(device=device).manual_seed(0)
        return {"samples": self.sample_text(self.prompt, self.sample_length, self.temperature, g)[0]}
