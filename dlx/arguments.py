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

# Where a `_target_` may point without `allowed_targets`: the packages whose classes a config builds. Not all of
# dlx, torch and torchvision: `torch.save`, `torch.hub.load`, `dlx.checkpoint.save` write files or run code.
ALLOWED_PREFIXES = ("dlx.models.", "dlx.data.", "dlx.losses.", "dlx.tasks.", "dlx.schedulers.", "dlx.init.",
                    "dlx.loggers.", "torch.nn.", "torch.optim.", "torchvision.models.", "torchvision.transforms.")
# Inside those, functions (not classes) may be targets only here: factories that build and return an object.
FUNCTION_PREFIXES = ("dlx.schedulers.", "dlx.init.", "torch.nn.init.", "torchvision.models.",
                     "torchvision.transforms.functional.")
# Hydra's own keys in a target node; every other key is an argument of the target.
META_KEYS = ("_target_", "_partial_", "_args_", "_convert_", "_recursive_")
# Keys a data config declares for models to interpolate (${data.num_classes}) instead of passing them on.
DATA_DECLARATIONS = ("channels", "size", "num_classes", "in_features", "input_size", "seq_len", "vocab_size")


def allowed_prefixes(cfg: DictConfig) -> tuple[str, ...]:
    return ALLOWED_PREFIXES + tuple(str(p).rstrip(".") + "." for p in cfg.get("allowed_targets") or [])


def check_targets(cfg: DictConfig) -> None:
    """Refuse any `_target_`, anywhere in the config (nested keys, lists, `_args_`, interpolated), outside the
    allowed packages and `allowed_targets`, and any Hydra key dlx does not know. Nothing is imported here."""
    allowed = allowed_prefixes(cfg)
    for path, node in target_nodes(cfg, ""):
        target = node._get_node("_target_")._value() if node._get_node("_target_") is not None else None
        target = node["_target_"] if isinstance(target, str) and "${" in target else target  # interpolated
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{path}._target_", target, "must be a dotted class name, e.g. dlx.models.mlp.MLP")
        if not target.startswith(allowed) or ".." in target or target.endswith("."):
            raise ConfigError(
                f"{path}._target_", target,
                f"targets must start with {', '.join(allowed)}; to trust this one, add "
                f"allowed_targets=[{target.split('.')[0]}] (command line or config)",
            )
        for key in node.keys():
            if str(key).startswith("_") and str(key).endswith("_") and key not in META_KEYS:
                raise ConfigError(f"{path}.{key}", node._get_node(key)._value(),
                                  f"is not a key dlx passes to Hydra; use one of {', '.join(META_KEYS)}")


def check_arguments(cfg: DictConfig) -> None:
    """Raise ConfigError for the first target that is not a buildable class or factory, the first key its
    target does not take, and the first group argument whose value its target's annotation refuses.

    Call after `check_targets`: only allowlisted targets are imported here. Nothing is instantiated.
    """
    trusted = tuple(str(p).rstrip(".") + "." for p in cfg.get("allowed_targets") or [])
    # Data first: model and loss arguments interpolate from it (${data.num_classes}).
    for path, node in sorted(target_nodes(cfg, ""), key=lambda item: item[0].split(".")[0] != "data"):
        name = str(node._target_)
        target = load_target(path, name)
        if not inspect.isclass(target) and not name.startswith(FUNCTION_PREFIXES + trusted):
            raise ConfigError(f"{path}._target_", name, "is a function, not a class: only classes (and the "
                              f"factories under {', '.join(FUNCTION_PREFIXES)}) are built from a config")
        check_keys(path, node, target)
        hints = argument_types(target)
        for key in node.keys():
            if str(key).startswith("_") or key not in hints:
                continue
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                if "_target_" in child and not takes_objects(hints[key]):
                    raise ConfigError(f"{path}.{key}", f"<{child._target_}>", f"must be {describe(hints[key])}, "
                                      "not an object built from a _target_")
                continue
            value = node[key]
            value = OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
            if not accepts(hints[key], value):
                raise ConfigError(f"{path}.{key}", value, f"must be {describe(hints[key])}")


def check_keys(path: str, node: DictConfig, target: Any) -> None:
    """Every key of a target node must be an argument its target takes: Hydra would otherwise build the
    key's value (a nested `_target_`) before the call fails on the unknown argument."""
    names = argument_names(target)
    if names is None:  # **kwargs all the way down: the target decides
        return
    declared = DATA_DECLARATIONS if path == "data" else ()
    for key in node.keys():
        key = str(key)
        if key in META_KEYS or key in names or key in declared:
            continue
        value = node._get_node(key)._value()
        shown = f"<{value.get('_target_')}>" if isinstance(value, DictConfig) and "_target_" in value else value
        raise ConfigError(f"{path}.{key}", shown, f"{getattr(target, '__qualname__', target)} takes no such "
                          f"argument; it takes {', '.join(sorted(names)) or 'none'}")


def argument_names(target: Any) -> set[str] | None:
    """Names of the keyword arguments a class's __init__ (through bases reached by **kwargs) or a function
    takes; None when a **kwargs is not resolved to named arguments."""
    names: set[str] = set()
    chain = [c.__init__ for c in inspect.getmro(target) if "__init__" in vars(c)] if inspect.isclass(target) \
        else [target]
    for fn in chain:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # builtins without a signature: not checkable
            return None
        names |= {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names - {"self"}
    return None


def takes_argument(cfg: DictConfig, node: DictConfig, name: str) -> bool:
    """Whether an allowed target takes `name` (so that `+group.name=...` would reach it)."""
    if not str(node._target_).startswith(allowed_prefixes(cfg)):
        return False
    names = argument_names(load_target("", str(node._target_)))
    return names is None or name in names


def takes_objects(hint: Any) -> bool:
    """Whether an annotation allows something other than plain config values (a module, a callable, ...)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(takes_objects(a) for a in args)
    return hint not in CONFIG_TYPES and origin not in (list, tuple, Sequence, dict, typing.Literal) \
        and hint not in (list, tuple, dict)


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
    """Every config node with a `_target_`, anywhere (dict values, list items, `_args_`), with its path:
    `model`, `model.block`, `model.layers[0]`."""
    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return
        if "_target_" in node:
            yield path, node
        for key in node.keys():
            yield from target_nodes(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return
        for i in range(len(node)):
            yield from target_nodes(node._get_node(i), f"{path}[{i}]")


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
