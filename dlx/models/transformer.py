"""A small causal Transformer language model in the spirit of nanoGPT (GPT-2, Radford et al. 2019).

    ids (B, T) -> token embedding + learned position embedding (B, T, C)
               -> n_layer x [x + attn(LN(x)), x + mlp(LN(x))]       (pre-LN blocks)
               -> LN -> linear read-out tied to the token embedding -> logits (B, T, vocab_size)

Self-attention is causal: a lower-triangular mask sets the scores of later positions to -inf before the
softmax, so the output at position t depends on ids 0..t only and one forward pass trains all T next-token
predictions at once (teacher forcing). Positions are learned embeddings for 0..block_size-1, so a sequence
may be at most `block_size` long; a sampler crops its context to the last `block_size` tokens.
Initialization as GPT-2: N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layer)).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions <= t."""

    def __init__(self, n_embd: int, n_head: int, block_size: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)  # queries, keys and values of all heads in one matmul
        self.proj = nn.Linear(n_embd, n_embd)
        self.attn_drop, self.resid_drop = nn.Dropout(dropout), nn.Dropout(dropout)
        # (1, 1, T, T): 1 where a query (row) may look at a key (column), i.e. on and below the diagonal.
        self.register_buffer("mask", torch.ones(block_size, block_size).tril().view(1, 1, block_size, block_size),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, h, T, d)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])  # (B, h, T, T) scaled dot products
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))  # no looking ahead
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, h, T, d) -> (B, T, C): heads side by side
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN Transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with a 4x wider GELU hidden layer."""

    def __init__(self, n_embd: int, n_head: int, block_size: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, dropout)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd),
                                 nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CausalTransformer(nn.Module):
    """GPT-style decoder-only language model.

    Args:
        vocab_size: number of token ids (from `data.vocab_size`).
        block_size: longest sequence (positions with an embedding); from `data.seq_len`.
        n_layer: Transformer blocks.
        n_head: attention heads per block (must divide n_embd).
        n_embd: width of the residual stream C.
        dropout: on attention weights, residual branches and embeddings.
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int = 4, n_head: int = 4, n_embd: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        for key, value in (("vocab_size", vocab_size), ("block_size", block_size), ("n_layer", n_layer),
                           ("n_head", n_head), ("n_embd", n_embd)):
            if value < 1:
                raise ValueError(f"{key}={value!r} is not allowed: >= 1")
        if n_embd % n_head:
            raise ValueError(f"n_head={n_head!r} is not allowed: must divide n_embd={n_embd}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r} is not allowed: a probability in [0, 1)")
        self.block_size = block_size
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(n_embd, n_head, block_size, dropout) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying (Press & Wolf 2017), as GPT-2
        self.apply(_init)
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):  # residual projections
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))

    def forward(self, ids: Tensor) -> Tensor:
        T = ids.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size={self.block_size}")
        pos = torch.arange(T, device=ids.device)  # (T,)
        x = self.drop(self.tok(ids) + self.pos(pos))  # (B, T, C) + (T, C)
        return self.head(self.ln_f(self.blocks(x)))  # (B, T, vocab_size)


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, 0.0, 0.02)
