"""Shell completion of `dlx` for bash, zsh and fish: commands, and for `dlx train` config groups, their options
and config keys (`model=<TAB>`, `trainer.<TAB>`, `+optimizer.<TAB>`), from the same search path the run would
use (a user's `--config-dir` included).

    eval "$(dlx train --shell-completion install=bash)"     # in ~/.bashrc; zsh: install=zsh in ~/.zshrc
    dlx train --shell-completion install=fish | source      # in ~/.config/fish/config.fish

The shell function asks `dlx train --shell-completion query=SHELL` with the line typed so far in `COMP_LINE`;
the answer comes from Hydra's own completion logic (groups, options, keys of the composed config). Hydra's
scripts call the program without its subcommand, so dlx writes its own. Nothing here imports torch: a query
answers in well under a second.
"""

import os
import shlex

from dlx.errors import DlxError

SHELLS = ("bash", "zsh", "fish")
ACTIONS = ("install", "uninstall", "query")
USAGE = ("--shell-completion needs one of install=SHELL, uninstall=SHELL or query=SHELL (SHELL: bash, zsh, fish), "
         'e.g. eval "$(dlx train --shell-completion install=bash)"')
# Flags of `dlx train` (Hydra's), offered when the word under the cursor starts with '-'.
FLAGS = ("--multirun", "--config-dir", "--config-path", "--config-name", "--cfg", "--resolve", "--package",
         "--info", "--help", "--hydra-help", "--shell-completion")


def main(argv: list[str]) -> int:
    """`dlx train --shell-completion ACTION=SHELL`: print a script, or answer a query."""
    words = [a for a in argv if a not in ("--shell-completion", "-sc")]
    requests = [w.split("=", 1) for w in words if w.split("=", 1)[0] in ACTIONS]
    if len(requests) != 1 or len(requests[0]) != 2 or requests[0][1] not in SHELLS:
        raise DlxError(USAGE)
    action, shell = requests[0]
    if action == "query":
        print("\n".join(query(os.environ.get("COMP_LINE", ""))))
    else:
        print(SCRIPTS[shell][action].replace("@COMMANDS@", " ".join(commands())))
    return 0


def commands() -> list[str]:
    from dlx.cli import COMMANDS

    return list(COMMANDS)


def query(line: str) -> list[str]:
    """Completions of the last word of `line` (`dlx train ...` as typed so far)."""
    try:
        tokens = shlex.split(line)
    except ValueError:  # an open quote
        tokens = line.split()
    new_word = not line or line[-1].isspace()
    if "train" in tokens:
        tokens = tokens[tokens.index("train") + 1:]
    word = "" if new_word or not tokens else tokens[-1]
    before = tokens if new_word else tokens[:-1]
    if word.startswith("-"):
        return [f for f in FLAGS if f.startswith(word)]
    if before and before[-1] in ("--config-dir", "-cd", "--config-path", "-cp"):
        return []  # a folder: the shell's own file completion
    return config_words(before, word)


def config_words(before: list[str], word: str) -> list[str]:
    """Hydra's completion of `word` given the words before it: groups (`model=`), options (`model=resnet`) and
    keys (`trainer.epochs=`), with the user's config folders of `before` on the search path."""
    from hydra.plugins.completion_plugin import DefaultCompletionPlugin

    from dlx import config, resolvers, searchpath

    try:
        source, rest = searchpath.parse(before)
    except DlxError:  # a folder still being typed
        source, rest = searchpath.Source(), [b for b in before if not b.startswith("-")]
    multirun = any(a in ("-m", "--multirun") for a in rest)
    overrides = source.with_searchpath([a for a in rest if not a.startswith("-") and "=" in a])
    resolvers.register()
    config.register_schema()
    line = " ".join(["-m"] * multirun + [shlex.quote(o) for o in overrides] + [word])
    if not word:
        line += " "
    with searchpath.initialized(source) as hydra:
        plugin = DefaultCompletionPlugin(hydra.config_loader)
        found = plugin._query(config_name=source.config_name, line=line)
    # Hydra's own groups (hydra/launcher=...) are for experts; keep them when asked for.
    return [f for f in found if word.lstrip("+~").startswith("hydra") or not f.lstrip("+~").startswith("hydra")]


BASH_INSTALL = r'''# dlx completion for bash: eval "$(dlx train --shell-completion install=bash)"
_dlx_completion() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
    if (( COMP_CWORD == 1 )); then
        COMPREPLY=($(compgen -W "@COMMANDS@" -- "$cur"))
        return
    fi
    if [[ "${COMP_WORDS[1]}" != "train" ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    fi
    local line="${COMP_LINE:0:COMP_POINT}"
    local word="${line##*[[:space:]]}"   # the whole word at the cursor ('=' and ':' are word breaks for bash)
    local prefix="${word%"$cur"}"
    [[ "$cur" == "=" || "$cur" == ":" ]] && prefix="${word%?}"
    local IFS=$'\n' c
    local candidates=($(COMP_LINE="$line" "${COMP_WORDS[0]}" train --shell-completion query=bash 2>/dev/null))
    COMPREPLY=()
    for c in "${candidates[@]}"; do
        [[ "$c" == "$word"* ]] && COMPREPLY+=("${c#"$prefix"}")
    done
}
complete -o nospace -o default -F _dlx_completion dlx'''

BASH_UNINSTALL = "complete -r dlx 2>/dev/null; unset -f _dlx_completion"

ZSH_INSTALL = r'''# dlx completion for zsh: eval "$(dlx train --shell-completion install=zsh)"
_dlx() {
    if (( CURRENT == 2 )); then
        compadd -- @COMMANDS@
        return
    fi
    if [[ "${words[2]}" != "train" ]]; then
        _files
        return
    fi
    local -a candidates
    local line="${BUFFER[1,CURSOR]}"
    candidates=("${(@f)$(COMP_LINE="$line" "${words[1]}" train --shell-completion query=zsh 2>/dev/null)}")
    compadd -S '' -- "${candidates[@]}"
}
(( $+functions[compdef] )) || { autoload -Uz compinit && compinit }
compdef _dlx dlx'''

ZSH_UNINSTALL = "compdef -d dlx; unfunction _dlx 2>/dev/null"

FISH_INSTALL = r'''# dlx completion for fish: dlx train --shell-completion install=fish | source
function __dlx_train_complete
    set -lx COMP_LINE (commandline -cp)
    set -l program (commandline -cpo)[1]
    $program train --shell-completion query=fish 2>/dev/null
end
complete -c dlx -n __fish_use_subcommand -f -a '@COMMANDS@'
complete -c dlx -n '__fish_seen_subcommand_from train' -f -a '(__dlx_train_complete)'
'''

FISH_UNINSTALL = "complete -e -c dlx; functions -e __dlx_train_complete"

SCRIPTS = {
    "bash": {"install": BASH_INSTALL, "uninstall": BASH_UNINSTALL},
    "zsh": {"install": ZSH_INSTALL, "uninstall": ZSH_UNINSTALL},
    "fish": {"install": FISH_INSTALL, "uninstall": FISH_UNINSTALL},
}
