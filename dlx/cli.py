"""The `dlx` command. Nothing here imports torch: `dlx --help` and `dlx runs` start in a blink.

`dlx train` hands the command line to Hydra (composition, run folders, sweeps, launchers), after
composing and checking every job's config first, so a typo fails in one line before any folder is
made. Other commands are argparse programs in their own modules, imported only when called.
"""

import errno
import os
import signal
import sys
import threading
import warnings
from importlib import import_module
from pathlib import Path

from dlx.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, DlxError

# conf/hydra/launcher/{joblib,submitit_slurm}.yaml give dlx's defaults to the plugins' schemas of the same
# name, which Hydra 1.3 still merges (and types) but announces as deprecated in every (worker) process.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")

# command -> (module, one-line help). Each module has `main(argv: list[str]) -> int`.
COMMANDS = {
    "train": ("dlx.cli", "train a model: dlx train model=resnet data=cifar10 optimizer.lr=0.05 [-m for sweeps]"),
    "resume": ("dlx.resume", "continue an interrupted run in its own folder: dlx resume RUN_DIR [overrides]"),
    "runs": ("dlx.runs", "table of runs under experiments/ (or PATH): dlx runs [PATH] [--sort KEY] [--limit N]"),
    "models": ("dlx.models_table",
               "every model with parameters and FLOPs at a data set's shape: dlx models [overrides]"),
    "compare": ("dlx.compare", "mean +- std of sweep runs grouped by overrides minus seed: dlx compare [SWEEP_DIR]"),
    "eval": ("dlx.analysis.evaluate", "test metrics of a run's best weights, MC-dropout: dlx eval RUN_DIR"),
    "predict": ("dlx.analysis.predict", "class probabilities for image files: dlx predict RUN_DIR FILE..."),
    "viz": ("dlx.analysis.viz", "look inside a trained net: dlx viz cam|filters|embed|eigen|... RUN_DIR"),
    "sample": ("dlx.sample", "images from a trained VAE or GAN: dlx sample RUN_DIR [--n 64] [--out FILE.png]"),
    "export": ("dlx.export", "the trained model as ONNX or torch.export, checked: dlx export RUN_DIR --format onnx"),
    "lr-find": ("dlx.lr_find", "learning-rate range test (Smith 2017), suggests optimizer.lr: dlx lr-find [overrides]"),
    "active": ("dlx.analysis.active", "active learning with MC-dropout acquisition: dlx active [overrides]"),
    "claims": ("dlx.claims", "rerun the lecture-claim presets, check their criteria: dlx claims [NAME...] [--seeds 3]"),
}

USAGE = "usage: dlx COMMAND [ARGS]   (dlx --version)\n\ncommands:\n" + "\n".join(
    f"  {k:<8} {v[1]}" for k, v in COMMANDS.items())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0)
    if argv[0] in ("--version", "-V", "version"):
        from dlx import __version__

        print(f"dlx {__version__}")
        sys.exit(0)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command '{command}': choose one of {', '.join(COMMANDS)}")
    try:
        module = import_module(COMMANDS[command][0])
        code = train(rest) if command == "train" else module.main(rest)
    except DlxError as e:
        fail(str(e))
    except KeyboardInterrupt as e:  # Ctrl-C outside the loop's own handling, or twice: one line, no traceback
        print(f"dlx: {e}" if str(e) else "dlx: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("dlx."):
            fail(f"'dlx {command}' is not available in this version ({e.name} is missing)")
        raise
    sys.exit(code or 0)


def entry() -> None:
    """The console script: `main`, then exit without tearing the interpreter down.

    Once torch (and torch._dynamo, which building any optimizer imports) is loaded, Python's own
    finalization takes about 1.2 s on a 2-core CPU, freeing thousands of modules one by one: a fifth of
    a whole `dlx train` on MNIST. By the time `main` returns, every run file is written, fsynced and
    closed, so after the atexit handlers (multiprocessing's among them) and a flush of the logs and
    streams, `os._exit` ends the process. An uncaught exception or a live thread takes the normal way out.
    """
    try:
        main()
        code: object = 0
    except SystemExit as e:
        code = e.code
    if threading.active_count() > 1:
        sys.exit(code)
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what SystemExit does with a message
        code = 1
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`dlx runs | head`): nothing more to deliver
            pass
    os._exit(code or 0)


def fail(message: str) -> None:
    """A user error: one plain line, exit code 2, traceback only with DLX_DEBUG=1."""
    if os.environ.get("DLX_DEBUG") and sys.exc_info()[0] is not None:
        import traceback

        traceback.print_exc()
    print(f"dlx: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


# ---- dlx train ------------------------------------------------------------------------------------
def train(argv: list[str]) -> int:
    """Check every job's config, then let Hydra run (or sweep) `dlx.loop.run`."""
    from dlx import config, resolvers, searchpath

    if "--shell-completion" in argv or "-sc" in argv:
        from dlx import completion

        return completion.main(argv)
    source, argv = searchpath.parse(argv)  # --config-dir/-cd, --config-path/-cp, --config-name/-cn
    searchpath.use(source)
    argv = with_searchpath(source, argv)
    # A user's model (allowed_targets=[mymodels]) may live in the current folder, as it would for `python -m`.
    sys.path.append(os.getcwd())
    resolvers.register()
    config.register_schema()
    if any(a.startswith("hparams_search=") for a in argv) and not {"-m", "--multirun"} & set(argv):
        argv = ["-m", *argv]  # an Optuna search is a sweep
    # --help/--info show what exists whatever the overrides; --cfg shows the config a run would get, so it is
    # checked like one (a value a run would refuse is not printed as if it were fine).
    inspect_flags = ("--help", "-h", "--hydra-help", "--info")
    inspecting = any(a in inspect_flags for a in argv)
    overrides = split_flags(argv)[1]
    if not inspecting:
        job_lists = job_overrides(overrides)
        if len(job_lists) > 1 and not {"-m", "--multirun"} & set(argv):
            swept = next(o for o in overrides if len(job_overrides([o])) > 1)
            raise DlxError(f"{swept.split('=')[0].lstrip('+~')}: '{swept}' lists several values, which is a sweep: "
                           "add -m to run one job per value (or quote it, key='a,b', to mean one string)")
        if "-m" in argv or "--multirun" in argv:
            from dlx import sweep as sweeps

            job_lists = sweeps.expand_presets(job_lists, sweeps.preset_params)  # each swept preset's own sweep
        jobs = [config.check(job) for job in job_lists]
        for folder in dict.fromkeys(str(cfg.paths.experiments) for cfg, _ in jobs):
            config.check_writable("paths.experiments", Path(folder))
        named = any(o.split("=")[0].lstrip("+~") == "name" for o in overrides)
        names = list(dict.fromkeys(str(cfg.name) for cfg, _ in jobs))
        if not named and jobs[0][0].name == config.default_name([jobs[0][1]]):
            # The default name interpolates Hydra's choices, which a sweep cannot resolve for its folder
            # (hydra.sweep.dir is resolved before any job): name the run from the checked jobs instead.
            argv = [*argv, f"name={config.default_name([choices for _, choices in jobs])}"]
        elif not named and len(names) > 1 and not any(o.lstrip("+~").startswith("sweep.name=") for o in overrides):
            # Jobs named by their presets (-m experiment=a,b) keep their names; their one sweep folder is
            # named after all of them.
            argv = [*argv, f"sweep.name={'+'.join(names)}"]
        if "-m" in argv or "--multirun" in argv:
            # Job folders are named by what the sweep varies only: 0-optimizer.lr=0.1, not every override.
            fixed = [o.split("=")[0].lstrip("+~") for o in overrides if len(job_overrides([o])) == 1]
            excluded = ",".join(["name", "sweep.name", "paths.experiments", *fixed])
            argv = [*argv, f"hydra.job.config.override_dirname.exclude_keys=[{excluded}]"]
            argv = [*argv, *short_job_folders(overrides, [cfg for cfg, _ in jobs], set(fixed))]
    return launch(argv)


def short_job_folders(overrides: list[str], jobs: list, fixed: set[str]) -> list[str]:
    """`hydra.sweep.subdir=${hydra.job.num}` when a job's folder, named by its swept overrides, would be longer
    than a file name may be (the job would fail to start and the sweep with it); the overrides stay in each
    job's .hydra/overrides.yaml, where `dlx compare` reads them."""
    from dlx.config import NAME_MAX

    if any(o.lstrip("+~").startswith("hydra.sweep.subdir=") for o in overrides):
        return []
    longest = 0
    for num, job in enumerate(job_overrides(overrides)):
        swept = [o for o in job if o.split("=")[0].lstrip("+~") not in fixed]
        longest = max(longest, len(f"{num}-{','.join(swept)}".encode()))
    if longest <= NAME_MAX:
        return []
    print(f"dlx: note: job folders are numbered only (0, 1, ...): named by their overrides they would be "
          f"{longest} bytes, more than a file name may have ({NAME_MAX})", file=sys.stderr)
    return ["hydra.sweep.subdir=${hydra.job.num}"]


def with_searchpath(source, argv: list[str]) -> list[str]:  # noqa: ANN001 - searchpath.Source
    """`argv` whose `hydra.searchpath` also holds dlx's conf/ when the user's folder is the primary one."""
    overrides = [a for a in argv if not a.startswith("-")]
    merged = source.with_searchpath(overrides)
    replaced = dict(zip(overrides, merged, strict=False))
    return [replaced.get(a, a) for a in argv] + merged[len(overrides):]


def launch(argv: list[str]) -> int:
    """Hydra's run or sweep; a sweep's folder is chosen first and summarized last (dlx.sweep), and under
    torchrun only rank 0 runs Hydra while the other ranks train the jobs it hands them (dlx.distributed)."""
    if any(a in ("--help", "-h", "--hydra-help", "--info", "-c", "--resolve") or a.startswith("--cfg") for a in argv):
        # Hydra refuses -m with --cfg/--info; what a sweep would launch shows all the same without it.
        return hydra_main([a for a in argv if a not in ("-m", "--multirun")])
    torchrun = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if torchrun:
        from dlx import distributed

        if distributed.is_follower():
            return distributed.follow()
        distributed.init_torchrun()
    sweep = None
    if "-m" in argv or "--multirun" in argv:
        from dlx import sweep as sweeps

        sweep = sweeps.prepare([a for a in argv if not a.startswith("-")])
        argv = [*argv, *sweep.hydra_overrides]
        if sweep.basic:
            from hydra.core.plugins import Plugins

            from hydra_plugins.dlx_sweeper import DlxSweeper

            # Hydra's plugin scan misses a package that an editable install maps by a finder: register it.
            Plugins.instance().register(DlxSweeper)
    try:
        code = hydra_main(argv)
    except KeyboardInterrupt:
        if sweep is None:
            raise
        from dlx.errors import EXIT_INTERRUPTED

        print("dlx: sweep interrupted; run the same command again to resume it", file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        if torchrun:
            distributed.release()
    return code if sweep is None else max(code, sweeps.report(sweep))


def job_overrides(overrides: list[str], limit: int = 64) -> list[list[str]]:
    """The override lists of a sweep's jobs (Hydra's cartesian product), at most `limit` of them.

    Range and interval sweeps (Optuna) are left out: their values are chosen while sweeping.
    """
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dlx.config import explain

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 - Hydra's parse errors; turned into one line naming the override
        for override in overrides:
            try:
                parser.parse_overrides([override])
            except Exception as one:  # noqa: BLE001
                key = override.split("=", 1)[0]
                reason = str(one).strip().splitlines()[0] if str(one).strip() else type(one).__name__
                raise DlxError(f"{key}: cannot parse the override '{override}': {reason}") from None
        raise explain(e) from None
    lists = []
    for o in parsed:
        key = o.get_key_element()
        if not o.is_sweep_override():
            lists.append([f"{key}={o.get_value_element_as_str()}"])
        elif o.is_discrete_sweep():
            lists.append([f"{key}={v}" for v in o.sweep_string_iterator()])
    return [list(x) for x in itertools.islice(itertools.product(*lists), limit)]


def train_one(cfg, run_dir, resume: bool = False) -> int:  # noqa: ANN001 - DictConfig, Path
    """One run: in this process (dlx.loop), or on `trainer.devices` processes / under torchrun, where
    data parallelism wraps the same run (dlx.distributed)."""
    if cfg.trainer.devices == 1 and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        from dlx.loop import run
    else:
        from dlx.distributed import run
    return run(cfg, run_dir, resume=resume)


_EXIT: dict = {"code": 0, "error": None, "run_dir": None}


def last_run_dir():  # noqa: ANN201 - Path | None
    """The folder of the last single run this process trained (for dlx.api.train)."""
    return _EXIT["run_dir"]


def remove_if_unused(run_dir) -> None:  # noqa: ANN001 - Path
    """A single run that failed before training leaves only Hydra's records: remove that empty shell."""
    import shutil

    leftovers = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if leftovers <= {".hydra", "train.log", ".lock"}:
        shutil.rmtree(run_dir, ignore_errors=True)
        for parent in list(run_dir.parents)[:2]:  # <name>/ and experiments/, when this run made them
            try:
                parent.rmdir()  # only if empty
            except OSError:
                break


def hydra_main(argv: list[str]) -> int:
    """Run Hydra's main on `argv` with conf/ as the config folder; return the worst job exit code."""
    import hydra

    from dlx import searchpath

    source = searchpath.current()

    @hydra.main(config_path=source.primary, config_name=source.config_name, version_base="1.3")
    def job(cfg) -> int:  # noqa: ANN001 - DictConfig
        from dlx import sweep

        code = run_job(cfg)
        _EXIT["code"] = max(_EXIT["code"], code)
        return sweep.finish(code)  # the exit code; in a sweep the job's objective (Optuna optimizes it)

    sys.argv = ["dlx", *searchpath.flags(source), *hydra_order(argv)]
    _EXIT.update(code=0, error=None, run_dir=None)
    job()
    if _EXIT["error"]:
        raise DlxError(_EXIT["error"])
    return _EXIT["code"]


# Hydra's flags that take a value (--info's is optional: one of its choices).
HYDRA_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--experimental-rerun")
INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def hydra_order(argv: list[str]) -> list[str]:
    """Flags (with their values) before the overrides: Hydra's argparse reads its positional overrides in one
    run, so `a=1 --cfg job name=x` (an override dlx appends after a user's flag) would be refused."""
    flags, overrides = split_flags(argv)
    return flags + overrides


def split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags with their values, and the overrides."""
    flags, overrides, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        takes = a in HYDRA_VALUE_FLAGS or (a in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in INFO_CHOICES)
        if takes and i + 1 < len(argv):
            flags += [a, argv[i + 1]]
            i += 2
            continue
        (flags if a.startswith("-") else overrides).append(a)
        i += 1
    return flags, overrides


def run_job(cfg) -> int:  # noqa: ANN001 - DictConfig
    """One Hydra job: resolve the config in the job's folder and train."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from dlx.config import check_config

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    sweeping = hc.mode == RunMode.MULTIRUN
    _EXIT["run_dir"] = run_dir
    # Until the loop installs its own handler, SIGINT and SIGTERM stop set-up, and the folder is cleaned up.
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
    try:
        OmegaConf.resolve(cfg)  # `${hydra:...}` (the run name) can only be resolved inside the job
        check_config(cfg)
        from dlx import sweep

        try:
            if sweeping:
                return sweep.execute(cfg, run_dir)  # a sweep skips done jobs, resumes interrupted ones
            try:
                return train_one(cfg, run_dir)
            finally:
                sweep.mark(cfg, run_dir)  # a run that got going can be found by later sweeps
        except OSError as e:  # a full disk, a read-only folder: the machine refused, one line names the file
            if e.errno not in ENVIRONMENT_ERRORS:
                raise
            raise DlxError(f"cannot write {e.filename or run_dir}: {e.strerror}") from None
    except KeyboardInterrupt:
        if not sweeping:
            remove_if_unused(run_dir)  # stopped while setting up: no empty run folder is left behind
        raise
    except DlxError as e:
        if not sweeping:  # reported by main() as one line, after Hydra has returned
            _EXIT["error"] = str(e)
            remove_if_unused(run_dir)
            return EXIT_USER_ERROR
        print(f"dlx: error in job {hc.job.num} ({run_dir}): {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as e:  # a bug in one sweep job must not stop the sweep: record it and go on
        if not sweeping:
            raise
        import traceback

        (run_dir / "error.txt").write_text(traceback.format_exc())
        print(f"dlx: job {hc.job.num} failed ({run_dir}): {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# errno values that say the machine, not dlx or the config, refused: one line, as a user error.
ENVIRONMENT_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name} before training started; nothing was saved")


if __name__ == "__main__":  # torchrun --nproc_per_node N -m dlx.cli train ...
    entry()
