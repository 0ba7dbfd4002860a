"""dlx.arguments: a group argument's value against its target's annotation, in isolation."""

from typing import Literal

import pytest

from dlx.arguments import accepts, argument_types, describe
from dlx.data.parity import Parity


@pytest.mark.parametrize(
    ("hint", "value", "ok"),
    [
        (int, 3, True), (int, 3.0, False), (int, True, False), (int, "3", False),
        (float, 3, True), (float, 0.5, True), (float, False, False),
        (bool, True, True), (bool, 1, False),
        (str, "a", True), (str, 1, False),
        (int | None, None, True), (int | None, "x", False),
        (list[int], [1, 2], True), (list[int], [1, "a"], False), (list[int], 1, False),
        (tuple[float, float], [0.9, 0.999], True), (tuple[float, float], [0.9], False),
        (tuple[int, ...], (1, 2, 3), True),
        (Literal["a", "b"], "a", True), (Literal["a", "b"], "c", False),
        (object, "anything", True),
    ],
)
def test_accepts(hint, value, ok: bool) -> None:  # noqa: ANN001 - annotations and values of every kind
    assert accepts(hint, value) is ok


def test_describe_names_config_types_only() -> None:
    import torch

    assert describe(int | None) == "an integer or null"
    assert describe(tuple[float | torch.Tensor, float | torch.Tensor]) == "a list of 2 numbers"
    assert describe(list[int]) == "a list of integers"


def test_forwarded_kwargs_are_typed_by_the_base_class() -> None:
    hints = argument_types(Parity)
    assert hints["length"] is int  # Parity's own
    assert "batch_size" in hints and "flip" in hints  # TensorData's, reached through **kwargs
