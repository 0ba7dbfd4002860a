"""`logger=mlflow`: the run also goes to an MLflow tracking server (optional extra `pip install 'dlx[mlflow]'`).

The run folder stays the record (TensorBoard, metrics.jsonl, summary.json, checkpoints); MLflow gets a copy:
the flattened config as params (the keys of TensorBoard's HParams), metrics at their log steps, tags (status,
run folder, command, git commit, the user's `logger.tags`), and at the end summary.json, the config, train.log
and the evaluated weights (best.pt) as artifacts, with the run's end status (completed -> FINISHED,
interrupted -> KILLED, failed or diverged -> FAILED).

- **One experiment per folder under experiments/**: a run's name, or a sweep's `sweep.name`, so a sweep's
  jobs are grouped as one MLflow experiment (`logger.experiment` names another).
- **Resume continues the same MLflow run**: its id is kept in the run folder (mlflow.json). Metric rows are
  sent when a checkpoint covers their step, so the steps a resume trains again are never sent twice and the
  MLflow history matches metrics.jsonl. Params that a resume changes (trainer.max_steps=...) cannot change in
  MLflow; they are recorded in the tag `dlx.resumed_with`.
- **Never a lost run**: the server is reached before training; when it does not answer, the run stops there in
  one line (`logger.on_unreachable=fail`), or trains with local logging only after one warning
  (`logger.on_unreachable=local`). A server that goes away during training costs one warning, not the run.

Nothing here imports mlflow at start-up: `dlx train` without `logger=mlflow` never needs it.
"""

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

from dlx.errors import ConfigError, DlxError

log = logging.getLogger("dlx")

ON_UNREACHABLE = ("fail", "local")
# MLflow's own run states (mlflow.entities.RunStatus) for dlx's summary.json statuses.
END_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "failed": "FAILED", "diverged": "FAILED"}
MAX_PARAM_CHARS = 500  # MLflow servers before 2.x refuse longer param values; the run folder keeps the rest
BATCH = {"params": 100, "metrics": 1000, "tags": 100}  # MLflow's limits per log_batch request
RECORD = "mlflow.json"  # in the run folder: where this run lives in MLflow
# A tracking server that does not answer must not hold a run up for minutes: MLflow's defaults retry a
# request 7 times with exponential backoff (~4 minutes). Settings the user exported win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def require_mlflow() -> Any:
    """The mlflow package, or one line saying how to install it."""
    try:
        import mlflow
    except ModuleNotFoundError:
        raise DlxError("logger=mlflow needs MLflow: pip install 'dlx[mlflow]' (or pip install mlflow)") from None
    return mlflow


class MlflowLogger:
    """Sends one dlx run to MLflow. Built from conf/logger/mlflow.yaml; `start()` connects before training.

    Args:
        tracking_uri: the tracking server (http://host:5000) or store (sqlite:///mlflow.db); null = MLflow's
            own default (the MLFLOW_TRACKING_URI variable, else a local store in the current folder).
        experiment: MLflow experiment name; null = the folder under experiments/ (run name or sweep.name).
        tags: extra tags for the MLflow run, e.g. {team: vision}.
        on_unreachable: fail (one line, no training) | local (a warning, then local logging only).
        log_checkpoint: upload the evaluated weights (checkpoints/best.pt) at the end.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        tags: dict[str, str] | None = None,
        on_unreachable: Literal["fail", "local"] = "fail",
        log_checkpoint: bool = True,
    ):
        if on_unreachable not in ON_UNREACHABLE:
            raise ConfigError("logger.on_unreachable", on_unreachable, f"choose one of {', '.join(ON_UNREACHABLE)}")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.on_unreachable = on_unreachable
        self.log_checkpoint = log_checkpoint
        self.client: Any = None
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self.pending: list[tuple[int, float, dict[str, float]]] = []  # (step, time, metrics) not yet sent
        self.broken = False

    # ---- start ------------------------------------------------------------------------------------------
    def start(self, run_dir: Path, experiment: str, hparams: dict[str, Any], tags: dict[str, str]) -> bool:
        """Create the MLflow run (or reopen the one in RUN_DIR/mlflow.json); False when logging locally only.

        Raises:
            DlxError: the server does not answer and `on_unreachable=fail`, or the extra is not installed.
        """
        require_mlflow()
        from mlflow.tracking import MlflowClient

        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self.run_dir = Path(run_dir)
        name = self.experiment or experiment
        try:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            experiment_id = self._experiment_id(name)
            record = self._record()
            if record and record.get("experiment_id") == experiment_id and self._reopen(record["run_id"], hparams):
                log.info("MLflow: continuing run %s in experiment %r (%s)", self.run_id, name, self.uri)
            else:
                self._create(experiment_id, hparams, {**tags, **self.tags})
                log.info("MLflow: run %s in experiment %r (%s)", self.run_id, name, self.uri)
        except DlxError:
            raise
        except Exception as e:  # noqa: BLE001 - connection errors, HTTP errors, a refused store: one line
            reason = one_line(e)
            if self.on_unreachable == "fail":
                raise DlxError(f"MLflow tracking server {self.uri} cannot be used: {reason}; start it or fix "
                               "logger.tracking_uri (logger.on_unreachable=local trains with local logging only)"
                               ) from None
            self._warn(f"MLflow tracking server {self.uri} cannot be used ({reason}); this run logs locally only")
            self.broken = True
            return False
        from dlx.rundir import write_json

        write_json(self.run_dir / RECORD, {"tracking_uri": self.uri, "experiment": name,
                                           "experiment_id": experiment_id, "run_id": self.run_id})
        return True

    @property
    def uri(self) -> str:
        if self.client is not None:
            return str(self.client.tracking_uri)
        return self.tracking_uri or "(MLflow's default)"

    def _experiment_id(self, name: str) -> str:
        """The experiment's id, created when missing (two sweep jobs may race to create it)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise DlxError(f"MLflow experiment {name!r} is deleted on {self.uri}: restore it "
                               "(mlflow experiments restore) or set logger.experiment to another name")
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # noqa: BLE001 - created by a parallel job in between
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _record(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.run_dir / RECORD).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def _create(self, experiment_id: str, hparams: dict[str, Any], tags: dict[str, str]) -> None:
        run = self.client.create_run(experiment_id, run_name=tags.get("mlflow.runName"), tags=tags)
        self.run_id = run.info.run_id
        self._log_params(params_of(hparams))

    def _reopen(self, run_id: str, hparams: dict[str, Any]) -> bool:
        """A resumed run: the same MLflow run again RUNNING, with the params it did not have yet."""
        try:
            run = self.client.get_run(run_id)
        except Exception:  # noqa: BLE001 - deleted on the server: a new MLflow run is made instead
            self._warn(f"MLflow run {run_id} of this run folder is gone from {self.uri}; logging to a new one")
            return False
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        old, new = run.data.params, params_of(hparams)
        changed = {k: v for k, v in new.items() if k in old and old[k] != v}
        self._log_params({k: v for k, v in new.items() if k not in old})
        if changed:
            text = " ".join(f"{k}={v}" for k, v in changed.items())
            self.client.set_tag(run_id, "dlx.resumed_with", text[:5000])
        return True

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), BATCH["params"]):
            self.client.log_batch(self.run_id, params=items[i : i + BATCH["params"]], synchronous=True)

    # ---- during the run ---------------------------------------------------------------------------------
    def metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Keep a log step's metrics until a checkpoint covers the step (see `checkpointed`)."""
        if not self.broken:
            self.pending.append((step, time.time(), dict(metrics)))

    def checkpointed(self, step: int) -> None:
        """A checkpoint at `step` was written: send every metric row up to it (a resume never repeats them)."""
        self._send([row for row in self.pending if row[0] <= step])
        self.pending = [row for row in self.pending if row[0] > step]

    def _send(self, rows: list[tuple[int, float, dict[str, float]]]) -> None:
        if self.broken or not rows:
            return
        from mlflow.entities import Metric

        items = [Metric(k, float(v), int(t * 1000), step) for step, t, m in rows for k, v in m.items()]
        try:
            for i in range(0, len(items), BATCH["metrics"]):
                self.client.log_batch(self.run_id, metrics=items[i : i + BATCH["metrics"]], synchronous=True)
        except Exception as e:  # noqa: BLE001 - the server went away: the run goes on, logged locally
            self._stop(f"sending metrics at step {rows[-1][0]}", e)

    # ---- the end ----------------------------------------------------------------------------------------
    def end(self, status: str) -> None:
        """Send what is left, upload the run's files (`artifacts`), set the status tag and the end state."""
        if self.broken or self.run_id is None:
            return
        files = artifacts(self.run_dir, self.log_checkpoint)
        # A failed run may be resumed from its last checkpoint: rows after it would be sent twice then.
        self._send(self.pending if status != "failed" else [])
        self.pending = []
        try:
            for artifact, path in files.items():
                if path.is_file():
                    folder = str(Path(artifact).parent) if Path(artifact).parent != Path(".") else None
                    self.client.log_artifact(self.run_id, str(path), artifact_path=folder)
            self.client.set_tag(self.run_id, "dlx.status", status)
            self.client.set_terminated(self.run_id, status=END_STATUS.get(status, "FAILED"))
        except Exception as e:  # noqa: BLE001 - the run folder has it all
            self._stop("ending the run", e)

    def _stop(self, doing: str, e: Exception) -> None:
        self.broken = True
        self._warn(f"MLflow logging stopped while {doing} ({one_line(e)}); the run folder keeps everything")

    def _warn(self, message: str) -> None:
        log.warning(message)
        print(f"dlx: warning: {message}", file=sys.stderr)


def params_of(hparams: dict[str, Any]) -> dict[str, str]:
    """MLflow params from the flattened config: strings, cut to MAX_PARAM_CHARS."""
    out = {}
    for k, v in hparams.items():
        text = str(v).lower() if isinstance(v, bool) else str(v)
        out[k] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return out


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:300] if text else type(e).__name__) or type(e).__name__


def run_tags(run_dir: Path, meta: dict[str, Any], labels: list[str] = ()) -> dict[str, str]:
    """MLflow's system tags (run name, source, git commit) and dlx's own for one run folder; the run's `tags=`
    labels become `dlx.tags` (comma-separated) and one tag each (value "true"), so MLflow can filter on them."""
    tags = {"mlflow.runName": Path(run_dir).name, "dlx.run_dir": str(Path(run_dir).absolute()),
            "mlflow.source.type": "LOCAL", "mlflow.source.name": str(meta.get("command", "dlx train"))}
    if labels:
        tags["dlx.tags"] = ",".join(str(label) for label in labels)
        tags.update({str(label): "true" for label in labels})
    git = meta.get("git")
    if isinstance(git, dict) and git.get("commit"):
        tags["mlflow.source.git.commit"] = str(git["commit"])
        tags["dlx.git_dirty"] = str(bool(git.get("dirty"))).lower()
    if meta.get("dlx"):
        tags["dlx.version"] = str(meta["dlx"])
    return tags


def artifacts(run_dir: Path, log_checkpoint: bool) -> dict[str, Path]:
    """What a finished run uploads: artifact path -> file in the run folder."""
    run_dir = Path(run_dir)
    files = {"summary.json": run_dir / "summary.json", "config.yaml": run_dir / ".hydra" / "config.yaml",
             "train.log": run_dir / "train.log"}
    if log_checkpoint:
        best = run_dir / "checkpoints" / "best.pt"
        files["checkpoints/best.pt"] = best if best.is_file() else run_dir / "checkpoints" / "last.pt"
    return files
