"""Recurrent nets: Elman RNN, LSTM (Hochreiter & Schmidhuber 1997) and GRU (Cho et al. 2014).

Many-to-one (`RecurrentNet`, a sequence classifier): input (B, T, input_size) -> the last layer's final
hidden state -> (B, num_classes). Sequences of different lengths are left-padded with zero vectors by the
data (parity), so the last time step is always the last real input and the forward direction's final state
has read the whole sequence.

Bidirectional: the backward direction reads from step T-1 down to step 0, so its summary of the whole
sequence is its state after step 0, not its output at step T-1 (which has seen one input). The classifier
gets [forward state after step T-1, backward state after step 0], both taken from `h_n`. With left
padding the backward direction reads the padding last; zero vectors only leave the bias terms.

Many-to-many (`RecurrentLM`, a character language model): ids (B, T) -> embedding -> the recurrent stack
-> a linear layer at every step -> logits (B, T, vocab_size) of the next character. Unidirectional, so
the output at step t has read ids 0..t only.
"""

from typing import Any

from torch import Tensor, nn

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentNet(nn.Module):
    """A stack of recurrent layers and a linear classifier on the final state.

    Args:
        input_size: features per time step (from `data.input_size`).
        num_classes: output units.
        cell: rnn (tanh Elman), lstm or gru.
        hidden_size: units per layer and direction.
        num_layers: stacked recurrent layers.
        bidirectional: add a backward direction to every layer.
        dropout: drop probability between stacked layers (PyTorch applies none after the last) and before
            the classifier.
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is not allowed: choose one of {', '.join(CELLS)}")
        for key, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"{key}={value!r} is not allowed: >= 1")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} is not allowed: a probability in [0, 1)")
        self.directions = 2 if bidirectional else 1
        self.rnn = CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,  # between layers only; PyTorch warns on one layer
            bidirectional=bidirectional,
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size * self.directions, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        _, h_n = self.rnn(x)  # x: (B, T, input_size)
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n); the cell state is internal memory, h is the output
            h_n = h_n[0]
        # h_n: (num_layers * directions, B, H), layer-major; the last layer's forward state (after step T-1)
        # and, when bidirectional, its backward state (after step 0).
        last = h_n[-self.directions :]  # (directions, B, H)
        return self.classifier(last.transpose(0, 1).flatten(1))  # (B, directions * H) -> (B, num_classes)


class RecurrentLM(nn.Module):
    """Embedding, a stack of recurrent layers and a linear read-out of the next token at every step.

    Args:
        vocab_size: number of token ids (from `data.vocab_size`).
        cell: rnn (tanh Elman), lstm or gru.
        embed_dim: size of each token's learned embedding.
        hidden_size: units per layer.
        num_layers: stacked recurrent layers.
        dropout: drop probability on the embeddings, between stacked layers and before the read-out
            (Zaremba et al. 2014: on the non-recurrent connections only).
    """

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        embed_dim: int = 64,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is not allowed: choose one of {', '.join(CELLS)}")
        for key, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden_size", hidden_size),
                           ("num_layers", num_layers)):
            if value < 1:
                raise ValueError(f"{key}={value!r} is not allowed: >= 1")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} is not allowed: a probability in [0, 1)")
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.rnn = CELLS[cell](embed_dim, hidden_size, num_layers=num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: Tensor) -> Tensor:
        """Logits (B, T, vocab_size) of the token after each position of ids (B, T), from a zero state."""
        return self.advance(ids)[0]

    def advance(self, ids: Tensor, state: Tensor | tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Any]:
        """Read ids (B, T) on from `state` (None = zeros): the logits (B, T, vocab_size) and the state after them.

        A sampler feeds one id at a time with the state carried over (char-rnn's sampling), in O(1) per id.
        """
        h, state = self.rnn(self.drop(self.embed(ids)), state)  # (B, T) -> (B, T, E) -> (B, T, H)
        return self.head(self.drop(h)), state
