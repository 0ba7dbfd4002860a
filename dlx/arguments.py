"""The `_target_`s of a config and their arguments, checked before anything is built: every target must start
with an allowed prefix (dlx., torch., torchvision., or one the user trusts in `allowed_targets`), and the group
arguments (model.*, data.*, optimizer.*, ...) must fit the annotations of their target's signature.

The root and trainer keys have a structured schema (dlx.config); the groups vary by choice, so their types
come from the constructors' annotations: `model.width=abc` fails with the key named and the type it needs,
instead of a `TypeError` from deep inside the model. Annotations that are not plain data types (modules,
tensors, callables) are not checked; constructors that forward **kwargs are checked against their bases too.
"""

import importlib
import inspect
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dlx.errors import ConfigError

ALLOWED_PREFIXES = ("dlx.", "torch.", "torchvision.")


def check_targets(cfg: DictConfig) -> None:
    """Refuse any `_target_` outside dlx, torch, torchvision and `allowed_targets` (nothing is imported here)."""
    allowed = ALLOWED_PREFIXES + tuple(p.rstrip(".") + "." for p in cfg.get("allowed_targets") or [])
    for path, node in target_nodes(cfg, ""):
        target = str(node._target_)
        if not target.startswith(allowed):
            raise ConfigError(
                f"{path}._target_", target,
                f"targets must start with {', '.join(allowed)} (add a prefix to allowed_targets to trust it)",
            )


def check_arguments(cfg: DictConfig) -> None:
    """Raise ConfigError for the first group argument whose value its target's annotation refuses.

    Call after `check_targets`: only allowlisted targets are imported here.
    """
    # Data first: model and loss arguments interpolate from it (${data.num_classes}).
    for path, node in sorted(target_nodes(cfg, ""), key=lambda item: item[0].split(".")[0] != "data"):
        hints = argument_types(load_target(path, str(node._target_)))
        for name in node.keys():
            if str(name).startswith("_") or name not in hints or isinstance(node._get_node(name), DictConfig):
                continue
            value = node[name]
            value = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
            if not accepts(hints[name], value):
                raise ConfigError(f"{path}.{name}", value, f"must be {describe(hints[name])}")


def load_target(path: str, target: str) -> Any:
    """The class or function a dotted `_target_` names (the longest importable module, then attributes);
    one line naming the key when it cannot be found."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError as e:
            if i == 1:
                raise ConfigError(f"{path}._target_", target, f"cannot be imported ({e})") from None
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError as e:
            raise ConfigError(f"{path}._target_", target, f"cannot be imported ({e})") from None
        return obj
    raise ConfigError(f"{path}._target_", target, "is empty")


def target_nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    """Every config node with a `_target_`, with its dotted path."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                yield from target_nodes(child, f"{path}.{key}" if path else str(key))


def argument_types(target: Any) -> dict[str, Any]:
    """Annotated keyword arguments of a class's __init__ (and its bases' when it takes **kwargs) or a function."""
    hints: dict[str, Any] = {}
    if inspect.isclass(target):
        chain = [c.__init__ for c in inspect.getmro(target) if "__init__" in vars(c)]
    else:
        chain = [target]
    for fn in chain:
        try:
            params = inspect.signature(fn).parameters
            annotations = typing.get_type_hints(fn)
        except (TypeError, ValueError, NameError):  # builtins, unresolvable forward references: not checked
            break
        for name, p in params.items():
            if name not in hints and name in annotations and p.kind is not p.VAR_KEYWORD:
                hints[name] = annotations[name]
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break  # the bases' arguments only reach them through **kwargs
    return hints


def accepts(hint: Any, value: Any) -> bool:
    """Whether a plain config value fits a type annotation; annotations it cannot judge accept anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(accepts(a, value) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(accepts(a, v) for a, v in zip(args, value, strict=True))
        return not args or all(accepts(args[0], v) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict | DictConfig)
    return True  # modules, tensors, callables, ...: not a config type


CONFIG_TYPES = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def describe(hint: Any) -> str:
    """An annotation in words, config types only: 'an integer', 'a number or null', 'a list of 2 numbers'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in args if a in CONFIG_TYPES or typing.get_origin(a) in (list, tuple, Sequence, typing.Literal)]
        return " or ".join(dict.fromkeys(describe(a) for a in kept or args))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if hint in CONFIG_TYPES:
        return CONFIG_TYPES[hint]
    if origin in (list, tuple, Sequence):
        if not args:
            return "a list"
        count = f"{len(args)} " if origin is tuple and args[-1] is not Ellipsis else ""
        return f"a list of {count}{plural(args[0])}"
    return getattr(hint, "__name__", str(hint))


def plural(hint: Any) -> str:
    """'numbers' for float (also inside a union with non-config types, as torch's float | Tensor)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kept = [a for a in typing.get_args(hint) if a in PLURALS]
        return " or ".join(PLURALS[a] for a in kept) if kept else "values"
    return PLURALS.get(hint, "values")
