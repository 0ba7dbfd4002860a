"""Character-level language modelling: the text data, the causal models, the free-running sampler, perplexity,
and `dlx train experiment=char_lm` / `dlx sample` end to end."""

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from dlx.data.text import VOCAB, CharText, decode, encode, read_corpus
from dlx.losses.classification import CrossEntropy
from dlx.models.recurrent import RecurrentLM
from dlx.models.transformer import CausalTransformer
from dlx.tasks.lm import LanguageModel, generate
from tests.conftest import events, metrics_lines, run_dirs, run_dlx, summary


class Recorder(nn.Module):
    """A causal 'model' that remembers every input it was given and answers with fixed random logits."""

    def __init__(self, vocab: int = len(VOCAB)):
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)) * 3)
        self.seen: list[Tensor] = []

    def forward(self, ids: Tensor) -> Tensor:
        self.seen.append(ids.clone())
        return self.table[ids]  # (B, T, V): the next id depends on the current one only


def test_text_splits_are_contiguous_chunks_independent_of_the_seed():
    def load(seed: int) -> CharText:
        data = CharText(length=32, seed=seed)
        data.setup("cpu")
        return data

    a, b = load(0), load(7)
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split][0], b.splits[split][0])  # the seed never moves the text between splits
    ids = encode(read_corpus("pydoc_topics", None))
    n = len(ids)
    x, y = a.splits["val"]
    start = n - int(n * 0.05) - int(n * 0.05)  # validation is the chunk after the first 90%
    assert torch.equal(x.flatten(), ids[start : start + x.numel()])  # windows side by side, no overlap
    assert torch.equal(y[:, :-1], x[:, 1:])  # targets: the inputs shifted by one character
    test_x = a.splits["test"][0]
    assert torch.equal(test_x[0], ids[n - int(n * 0.05) :][:32])
    assert a.facts() == {"vocab_size": 98, "num_classes": 98, "seq_len": 32}
    assert decode(encode("def f(x):\n\treturn \u201cx\u201d")) == 'def f(x):\n\treturn "x"'


def test_sampler_only_ever_reads_the_prompt_and_its_own_outputs():
    model, prompt = Recorder(), encode("def ")[None].repeat(2, 1)  # (2, 4)
    out = generate(model, prompt, 20, context=8, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 24) and torch.equal(out[:, :4], prompt)
    assert len(model.seen) == 20
    for i, ids in enumerate(model.seen):  # step i reads what was there before id 4 + i: the last 8 of them
        end = 4 + i
        assert torch.equal(ids, out[:, max(0, end - 8) : end])
    assert not torch.equal(out[0], out[1])  # sampled, not greedy: the two rows draw differently
    greedy = generate(Recorder(), prompt, 5, context=8, temperature=0)
    table = Recorder().table
    assert torch.equal(greedy[:, 5:], table[greedy[:, 4:8]].argmax(-1))  # temperature 0: the most likely id


def test_recurrent_sampler_carries_the_state_of_exactly_its_own_outputs():
    torch.manual_seed(0)
    model = RecurrentLM(len(VOCAB), cell="gru", embed_dim=8, hidden_size=16, num_layers=2).eval()
    g = torch.Generator().manual_seed(0)
    out = generate(model, encode("ab")[None], 30, context=4, temperature=1.0, generator=g)
    # The id at each position is drawn from the logits of one forward pass over everything before it: same
    # sample when the draws are replayed from the full-sequence logits with the same generator.
    logits = model(out[:, :-1])[0]  # (31, V)
    g = torch.Generator().manual_seed(0)
    replay = [int(torch.multinomial(logits[t].softmax(-1), 1, generator=g)) for t in range(1, 31)]
    assert out[0, 2:].tolist() == replay


def test_causal_transformer_sees_no_later_position():
    torch.manual_seed(0)
    model = CausalTransformer(len(VOCAB), block_size=16, n_layer=2, n_head=2, n_embd=32).eval()
    ids = torch.randint(0, len(VOCAB), (2, 16))
    changed = ids.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % len(VOCAB)
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9])  # positions before the change do not see it
    assert not torch.allclose(a[:, 9:], b[:, 9:])
    assert model.head.weight is model.tok.weight  # read-out tied to the token embedding
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("make", [
    lambda: RecurrentLM(len(VOCAB), cell="lstm", embed_dim=16, hidden_size=32, num_layers=1),
    lambda: CausalTransformer(len(VOCAB), block_size=16, n_layer=1, n_head=2, n_embd=32),
], ids=["lstm", "transformer"])
def test_a_few_steps_of_teacher_forcing_lower_the_loss(make):
    torch.manual_seed(0)
    ids = encode(read_corpus("pydoc_topics", None)[:4000])
    x, y = ids[:-1].unfold(0, 16, 16)[:64], ids[1:].unfold(0, 16, 16)[:64]  # (64, 16) windows and next ids
    task = LanguageModel(make(), CrossEntropy(), context=16)
    opt = torch.optim.Adam(task.parameters(), lr=1e-2)

    def step(name: str, loss: Tensor) -> None:
        opt.zero_grad()
        loss.backward()
        opt.step()

    first = task.training_step((x, y), step)["loss"]
    for _ in range(12):
        last = task.training_step((x, y), step)["loss"]
    assert last < first - 0.8, (first, last)  # from ~ln 98 = 4.6 nats


def test_perplexity_is_exp_of_the_nll_per_character_over_the_split():
    torch.manual_seed(0)
    task = LanguageModel(RecurrentLM(len(VOCAB), cell="rnn", embed_dim=8, hidden_size=8, num_layers=1),
                         CrossEntropy(), context=8).eval()
    batches = [tuple(torch.randint(0, len(VOCAB), (n, 8)) for _ in range(2)) for n in (5, 1)]  # unequal sizes
    per_batch = [task.validation_step(b) for b in batches]
    ppl = task.on_validation_end(None)["ppl"]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    nll = nn.functional.cross_entropy(task.model(x).flatten(0, 1), y.flatten())  # per character, whole split
    torch.testing.assert_close(ppl, nll.exp())
    assert not math.isclose(float(ppl), sum(float(m["nll"].exp()) for m in per_batch) / 2, rel_tol=1e-4)
    assert task.on_validation_end(None) == {}  # the sums start afresh for the next split
    torch.testing.assert_close(per_batch[0]["bits_per_char"], per_batch[0]["nll"] / math.log(2))


def test_char_lm_sweep_trains_every_model_and_dlx_sample_continues_a_prompt(workdir: Path):
    tiny = ["data.length=32", "data.batch_size=32", "data.limit=640", "data.val_fraction=0.01",
            "data.test_fraction=0.01", "trainer.max_steps=40", "trainer.val_every=20", "trainer.log_every=10",
            "trainer.progress=false", "task.sample_length=40", "optimizer.lr=1e-2"]
    done = run_dlx("train", "-m", "experiment=char_lm", "model=char_gru,gpt", *tiny, cwd=workdir,
                   env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    runs = run_dirs(workdir / "experiments")
    assert len(runs) == 2
    for run in runs:
        s = summary(run)
        final = s["metrics"]["final"]
        assert s["status"] == "completed"
        for split in ("val", "test"):
            assert math.isclose(final[f"{split}/ppl"], math.exp(final[f"{split}/nll"]), rel_tol=1e-4)
            assert math.isclose(final[f"{split}/bits_per_char"], final[f"{split}/nll"] / math.log(2), rel_tol=1e-4)
        curve = [m["train/loss"] for m in metrics_lines(run) if "train/loss" in m]
        assert curve[-1] < curve[0] < math.log(98), curve  # the first mean is over steps 1-10
        assert final["val/bits_per_char"] < math.log2(98)  # better than a uniform guess
        assert "samples/text_summary" in events(run).Tags()["tensors"]  # the TEXT tab's free-running sample
    out = workdir / "text.txt"
    done = run_dlx("sample", str(runs[0]), "--prompt", "def ", "--length", "30", "--out", str(out), cwd=workdir)
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")[:-1]  # the file ends with a newline
    assert text.startswith("def ") and len(text) == 34 and text in done.stdout
