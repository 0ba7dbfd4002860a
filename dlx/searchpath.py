"""Where `dlx train` finds its configs: dlx's conf/ and the user's own config folders, as Hydra apps do.

Hydra's flags keep their meaning (https://hydra.cc/docs/advanced/hydra-command-line-flags/):

- `--config-dir/-cd DIR` adds DIR to the search path, after the primary folder: a user's `model/tiny.yaml`
  or `experiment/mine.yaml` is found there, dlx's own files keep their names.
- `--config-path/-cp DIR` makes DIR the primary folder (its `train.yaml`, or the file `--config-name` names,
  is the root config). dlx's conf/ stays on the search path after it, so the user's root config can build on
  dlx's groups (`defaults: [train, _self_]`). A relative DIR is relative to the current directory (for an
  installed command there is no script folder to be relative to).
- `--config-name/-cn NAME` picks the root config (default `train`).
- `hydra.searchpath=[file://DIR, pkg://module]` appends folders after all of these.

The pre-training checks, the sweep set-up and shell completion compose inside `initialized()`, with the same
search path the run itself gets, so a user's groups, options and targets are known before any work.
Nothing here imports torch.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlx.errors import DlxError

# Hydra's flags that take a value, as `dlx train` reads them off the command line (space or '=').
VALUE_FLAGS = {"--config-path": "config_path", "-cp": "config_path", "--config-name": "config_name",
               "-cn": "config_name", "--config-dir": "config_dir", "-cd": "config_dir"}


@dataclass(frozen=True)
class Source:
    """The root config's name and the folders it is looked up in (absolute paths)."""

    config_name: str = "train"
    config_path: str | None = None  # the primary folder instead of dlx's conf/
    config_dir: str | None = None  # an extra folder after the primary one

    @property
    def primary(self) -> str:
        from dlx.config import conf_dir

        return self.config_path or str(conf_dir())

    def searchpath_override(self, overrides: list[str]) -> str | None:
        """With a user's primary folder, `hydra.searchpath` must also hold dlx's conf/ (after the user's own
        entries): the override to add, or None when nothing is needed or the command line already has it."""
        if self.config_path is None or any(o.lstrip("+").startswith("hydra.searchpath=") for o in overrides):
            return None
        from dlx.config import conf_dir

        return f"hydra.searchpath=[file://{conf_dir()}]"

    def with_searchpath(self, overrides: list[str]) -> list[str]:
        """`overrides` plus the dlx conf/ entry of `searchpath_override`, merged into the user's own
        `hydra.searchpath` when there is one."""
        if self.config_path is None:
            return list(overrides)
        from dlx.config import conf_dir

        out, merged = [], False
        for o in overrides:
            key, _, value = o.lstrip("+").partition("=")
            if key == "hydra.searchpath" and value.startswith("[") and str(conf_dir()) not in value:
                inner = value.strip()[1:-1].strip()
                o = f"{key}=[{inner + ',' if inner else ''}file://{conf_dir()}]"
                merged = True
            out.append(o)
        extra = self.searchpath_override(out) if not merged else None
        return [*out, extra] if extra else out


def parse(argv: list[str]) -> tuple[Source, list[str]]:
    """Take Hydra's config-location flags off `argv` (either form: `-cd DIR`, `--config-dir=DIR`).

    Returns the Source (folders made absolute, checked to exist) and the remaining arguments.
    """
    values: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=")
        if flag in VALUE_FLAGS and (eq or i + 1 < len(argv)):
            if not eq:
                value, i = argv[i + 1], i + 1
            values[VALUE_FLAGS[flag]] = value
        elif flag in VALUE_FLAGS:
            raise DlxError(f"{flag} needs a value, e.g. {flag} myconf")
        else:
            rest.append(arg)
        i += 1
    for key in ("config_path", "config_dir"):
        if key in values:
            folder = Path(values[key]).expanduser().absolute()
            if not folder.is_dir():
                flag = "--" + key.replace("_", "-")
                raise DlxError(f"{flag} {values[key]}: no such folder ({folder})")
            values[key] = str(folder)
    name = values.get("config_name", "train")
    if name.endswith(".yaml"):
        name = name[: -len(".yaml")]
    return Source(name, values.get("config_path"), values.get("config_dir")), rest


def flags(source: Source) -> list[str]:
    """The command-line flags that give Hydra's own main the folders of `source` (the primary folder and the
    config name go to the decorator instead)."""
    return [f"--config-dir={source.config_dir}"] if source.config_dir else []


_CURRENT: dict[str, Source] = {}


def use(source: Source) -> None:
    """Make `source` the one that `initialized()` (and so every composition in this process) uses."""
    _CURRENT["source"] = source


def current() -> Source:
    return _CURRENT.get("source", Source())


@contextmanager
def initialized(source: Source | None = None) -> Iterator[Any]:
    """Hydra's global state with the search path `dlx train` runs with, as `@hydra.main` builds it (Hydra's own
    configs, the primary folder, plugins' additions, `--config-dir`, the schemas); cleared on exit.

    Yields Hydra's `Hydra` object (`compose_config`, `config_loader`).
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    source = source or current()
    search_path = create_config_search_path(source.primary)
    if source.config_dir:
        search_path.prepend(provider="command-line", path=f"file://{source.config_dir}",
                            anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    try:
        yield Hydra.create_main_hydra2(task_name="dlx", config_search_path=search_path)
    finally:
        GlobalHydra.instance().clear()
