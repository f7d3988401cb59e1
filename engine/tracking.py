"""Experiment trackers (``train.py --tracker``): the run's settings, its per-epoch losses and metrics and its final
metrics, recorded in TensorBoard or MLflow as well as in the run folder.

One small interface, :class:`Tracker`: ``start(cfg, run_dir, history)`` once the run folder is written,
``log_epoch(row)`` after each epoch (a row of ``metrics.csv``), ``finish(summary)`` with the run's summary, and
``close()``, which the trainer calls whatever happened (a run that raised is closed too, and marked failed where
the tracker has such a mark). :func:`make_tracker` gives the one ``--tracker`` names; without one, a
:class:`NullTracker` that does nothing. The optional packages are imported only when their tracker is asked for,
in its constructor, before the run folder is touched; a missing one is a one-line :class:`DataError` with the pip
command.

What is recorded, under the same names in both:

* settings: the resolved config's fields (lists joined by commas, ``None`` as ``"None"``), each model
  hyperparameter as ``model_args.<name>``, and ``config_hash``; TensorBoard's HParams, MLflow's params;
* per epoch (step = epoch): ``train_loss``, ``valid_loss``, ``valid_acc``, ``valid_f1``, ``lr``,
  ``samples_per_s``, the values of ``metrics.csv``;
* at the end (step = the number of epochs run): ``best_epoch``, ``best_valid_f1``, ``best_valid_acc``,
  ``best_valid_loss``, ``epochs_run``, ``stopped_early`` (0 or 1) and, with ``--test`` and test labels,
  ``test_f1``, ``test_acc``.

TensorBoard writes event files to ``<run>/tb/`` (``tensorboard --logdir <save_root>`` compares runs). MLflow logs
to the server of ``MLFLOW_TRACKING_URI`` when it is set, else to a local file store ``file:<save_root>/mlruns``
(the full mlflow package's ``mlflow ui --backend-store-uri file:<save_root>/mlruns`` shows it): one experiment
per data set, one MLflow run per run folder (named after it, tagged with ``config_hash`` and ``run_dir``). MLflow 3
keeps its file store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; for a file store (``file:`` or a
path) this module sets it to ``true`` unless the environment already says otherwise.

A resumed run (``--resume``) goes on with the record of its first part: TensorBoard adds an event file to the
same ``tb/`` folder, MLflow continues the run tagged with the same folder and config hash. Where there is no such
record (the first part ran without the tracker), the finished epochs are logged first.
"""

import os
import pathlib
import time
import urllib.parse

from common.errors import DataError

EPOCH_METRICS = ("train_loss", "valid_loss", "valid_acc", "valid_f1", "lr", "samples_per_s")
# summary.json key -> the tracker's name of it
FINAL_METRICS = {"best_epoch": "best_epoch", "valid_f1": "best_valid_f1", "valid_acc": "best_valid_acc",
                 "valid_loss": "best_valid_loss", "epochs_run": "epochs_run", "stopped_early": "stopped_early",
                 "test_f1": "test_f1", "test_acc": "test_acc"}
TRACKERS = ("tensorboard", "mlflow")


def make_tracker(name):
    """The tracker ``--tracker`` names: ``tensorboard``, ``mlflow``, or none (``None``, ``""``, ``"none"``)."""
    if name in (None, "", "none"):
        return NullTracker()
    if name == "tensorboard":
        return TensorBoardTracker()
    if name == "mlflow":
        return MlflowTracker()
    raise DataError(f"--tracker {name!r}: use tensorboard or mlflow, or none (no tracker)")


def settings(cfg):
    """The run's settings as flat scalars: the resolved config's fields, ``model_args.<name>`` for each model
    hyperparameter, and ``config_hash``."""
    out = {}
    for key, value in cfg.to_dict().items():
        if key == "model_args":
            for name, v in sorted((value or {}).items()):
                out[f"model_args.{name}"] = _scalar(v)
        else:
            out[key] = _scalar(value)
    out["config_hash"] = cfg.config_hash()
    return out


def _scalar(value):
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def epoch_metrics(row):
    """The tracked values of one ``metrics.csv`` row."""
    return {k: float(row[k]) for k in EPOCH_METRICS if row.get(k) is not None}


def final_metrics(summary):
    """The tracked values of a run's summary."""
    return {name: float(summary[key]) for key, name in FINAL_METRICS.items() if summary.get(key) is not None}


class Tracker:
    """What the trainer calls; every method does nothing here."""

    def start(self, cfg, run_dir, history=()):
        """The run folder is written: record the settings (``history``: the finished epochs of a resumed run)."""

    def log_epoch(self, row):
        """One epoch's row of ``metrics.csv``."""

    def finish(self, summary):
        """The run's summary (``summary.json``): its final metrics; the run succeeded."""

    def close(self):
        """Release the tracker; called whatever happened, also after an error."""


class NullTracker(Tracker):
    """No tracker (the default)."""


class TensorBoardTracker(Tracker):
    """Event files in ``<run>/tb/``: one scalar per metric and epoch, the settings as HParams."""

    def __init__(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError:
            raise DataError("--tracker tensorboard needs the tensorboard package: pip install tensorboard") from None
        self._writer_class, self._hparams = SummaryWriter, hparams
        self.writer, self.metric_names, self.params = None, (), {}

    def start(self, cfg, run_dir, history=()):
        log_dir = os.path.join(run_dir, "tb")
        recorded = os.path.isdir(log_dir) and any(n.startswith("events.") for n in os.listdir(log_dir))
        self.writer = self._writer_class(log_dir=log_dir)
        self.params = settings(cfg)
        self.metric_names = [n for k, n in FINAL_METRICS.items() if cfg.test or not k.startswith("test_")]
        if not recorded:  # the HParams plugin reads the settings and the final metrics' names from these
            exp, ssi, _ = self._hparams(self.params, {n: 0.0 for n in self.metric_names})
            self.writer.file_writer.add_summary(exp)
            self.writer.file_writer.add_summary(ssi)
            for row in history:
                self.log_epoch(row)
        self.writer.flush()

    def log_epoch(self, row):
        step = int(row["epoch"])
        for key, value in epoch_metrics(row).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, summary):
        step = int(summary.get("epochs_run") or summary["best_epoch"])
        for name, value in final_metrics(summary).items():
            self.writer.add_scalar(name, value, step)
        _, _, sei = self._hparams(self.params, {n: 0.0 for n in self.metric_names})  # session end: success
        self.writer.file_writer.add_summary(sei)
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def mlflow_uri(save_root):
    """The tracking URI: ``MLFLOW_TRACKING_URI`` when set, else the file store ``<save_root>/mlruns``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or pathlib.Path(os.path.abspath(save_root), "mlruns").as_uri()


class MlflowTracker(Tracker):
    """An MLflow run per run folder, in the experiment named after the data set."""

    PARAM_CHARS = 500  # the longest param value every MLflow version takes

    def __init__(self):
        try:
            import mlflow  # noqa: F401
            from mlflow.entities import Metric, Param, RunTag
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise DataError("--tracker mlflow needs the mlflow package: pip install mlflow-skinny (or mlflow)") \
                from None
        self._client_class, self._metric, self._param, self._tag = MlflowClient, Metric, Param, RunTag
        self.client, self.run_id, self.uri, self.succeeded = None, None, None, False

    def start(self, cfg, run_dir, history=()):
        from mlflow.exceptions import MlflowException

        self.uri = mlflow_uri(cfg.save_root)
        if urllib.parse.urlparse(self.uri).scheme in ("", "file"):  # a file store (a plain path is one too)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            self.client = self._client_class(tracking_uri=self.uri)
            experiment = self._experiment(cfg.dataset)
        except MlflowException as e:
            raise DataError(f"--tracker mlflow: the tracking store {self.uri} refused the run "
                            f"({str(e).splitlines()[0][:300]}); set MLFLOW_TRACKING_URI to one that works") from None
        tags = {"config_hash": cfg.config_hash(), "run_dir": run_dir}
        run = self._earlier_run(experiment, tags) if history else None
        if run is None:
            run = self.client.create_run(experiment, run_name=os.path.basename(os.path.normpath(run_dir)), tags=tags)
            logged = {}
        else:
            self.client.update_run(run.info.run_id, status="RUNNING")
            logged = run.data.params
        self.run_id = run.info.run_id
        params = [self._param(k, str(v)[:self.PARAM_CHARS]) for k, v in settings(cfg).items() if k not in logged]
        for i in range(0, len(params), 100):  # at most 100 params per call
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        if history and not logged:  # the first part was not tracked here: its epochs first
            for row in history:
                self.log_epoch(row)

    def _experiment(self, name):
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # made meanwhile by another run of the data set
            return self.client.get_experiment_by_name(name).experiment_id

    def _earlier_run(self, experiment, tags):
        if "'" in tags["run_dir"]:
            return None
        found = self.client.search_runs([experiment], filter_string=" and ".join(
            f"tags.{k} = '{v}'" for k, v in tags.items()), order_by=["attributes.start_time DESC"], max_results=1)
        return found[0] if found else None

    def _log(self, values, step):
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(k, v, now, step) for k, v in values.items()])

    def log_epoch(self, row):
        self._log(epoch_metrics(row), int(row["epoch"]))

    def finish(self, summary):
        self._log(final_metrics(summary), int(summary.get("epochs_run") or summary["best_epoch"]))
        self.succeeded = True

    def close(self):
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status="FINISHED" if self.succeeded else "FAILED")
            self.run_id = None
