"""Classification criteria: cross-entropy vs the lecture's squared error on softmax outputs.

`l1` is the strength of an L1 penalty on the weights (added by the task, which sees the model).
"""

import torch.nn.functional as F
from torch import Tensor, nn


class CrossEntropy(nn.Module):
    """Cross-entropy on logits (B, K) against class indices (B,), with optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0, l1: float = 0.0):
        super().__init__()
        self.label_smoothing, self.l1 = label_smoothing, l1

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)


class SoftmaxMSE(nn.Module):
    """Squared error between softmax(logits) (B, K) and the one-hot target, summed over K, mean over B.

    The lecture's least-squares error: its gradient vanishes when the softmax saturates on the wrong
    class, which is why cross-entropy trains faster.
    """

    def __init__(self, l1: float = 0.0):
        super().__init__()
        self.l1 = l1

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        p = logits.float().softmax(-1)  # (B, K)
        onehot = F.one_hot(target, p.shape[-1]).to(p.dtype)
        return (p - onehot).pow(2).sum(-1).mean()
