"""The stages of one search, called by ``search/tune.py``.

A search is identified by its folder ``<storage-path>/<name>``. That folder contains Ray
Tune's experiment state, the trials' Ray Train runs (``train_runs/<trial id>``) and
``sweep.json``: the settings a ``--resume`` needs to continue the same MLflow parent
run with the same space and base run.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hmlc_core.config import ConfigError

from search import spaces, tracking
from search.budgets import Budget, default_budget_name, get_budget
from search.cli import SearchOptions, SearchSetupError, absolute_storage_path, is_remote, join_storage
from search.leaderboard import (
    OBJECTIVE,
    TrialRecord,
    best_record,
    build_leaderboard,
    format_leaderboard,
    save_leaderboard,
)
from search.mapping import RunSettings, apply_sample, build_base_run

logger = logging.getLogger(__name__)

SCHEDULER_METRIC = "val/knn_acc"
SCHEDULER_TIME_ATTR = "epoch"
SWEEP_FILE = "sweep.json"
TRAIN_RUNS = "train_runs"
REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_INTERRUPTED = 130


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Dataset facts the search needs before any trial starts."""

    name: str
    level_names: tuple[str, ...]
    modality: str
    in_channels: int
    train_size: int

    @property
    def num_levels(self) -> int:
        return len(self.level_names)


@dataclasses.dataclass(frozen=True)
class SweepState:
    """Settings of a search, saved as ``sweep.json`` so that ``--resume`` reuses them."""

    name: str
    sweep_id: str
    method: str
    dataset: str
    budget: str
    seed: int
    num_samples: int
    max_concurrent_trials: int
    epochs: int
    grace_period: int
    reduction_factor: int
    tracking_uri: str
    experiment_name: str
    experiment_id: str
    parent_run_id: str
    optuna_storage: str | None
    study_name: str
    level_names: list[str]
    space: dict[str, str]
    base_run: dict[str, Any]
    warm_start_study: str | None = None


# Stage: dataset ----------------------------------------------------------------------


def data_config_values(options: SearchOptions) -> dict[str, Any]:
    """Return the DataConfig fields the command line sets."""
    values: dict[str, Any] = {
        "name": options.dataset,
        "data_dir": options.data_dir,
        "download": options.download,
    }
    if options.data_csv is not None:
        values["csv_path"] = options.data_csv
    return values


def inspect_dataset(options: SearchOptions) -> DatasetInfo:
    """Load the official training split once to check the files and read the hierarchy.

    The test split is located too, so that the final evaluation cannot fail on missing
    files after hours of search.

    Raises:
        SearchSetupError: the dataset files are missing or invalid.
    """
    from hmlc_core.data import DataConfig, DataError, load_official_split, load_test_split

    try:
        config = DataConfig.from_dict(data_config_values(options))
        train = load_official_split(config, "train")
        load_test_split(config)
    except (DataError, ConfigError, FileNotFoundError) as error:
        raise SearchSetupError(
            f"dataset {options.dataset!r} is not usable: {error}\n"
            "Pass --data-dir with the folder that contains the files."
        ) from error
    in_channels = int(train.inputs.shape[1]) if train.modality == "image" else int(train.inputs.shape[-1])
    return DatasetInfo(
        name=options.dataset,
        level_names=tuple(train.hierarchy.level_names),
        modality=train.modality,
        in_channels=in_channels,
        train_size=len(train),
    )


# Stage: Ray --------------------------------------------------------------------------


def start_ray(options: SearchOptions) -> None:
    """Join ``--address``, or start a local cluster bound to 127.0.0.1; reuse a running one."""
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(_python_path())}}
    if options.address is not None:
        ray.init(address=options.address, runtime_env=runtime_env)
        return
    from hmlc_core.train.local_ray import init_local_ray

    init_local_ray(num_cpus=options.num_cpus or os.cpu_count(), runtime_env=runtime_env)


def _python_path() -> list[str]:
    existing = [part for part in os.environ.get("PYTHONPATH", "").split(os.pathsep) if part]
    return [str(REPO_ROOT), *(part for part in existing if part != str(REPO_ROOT))]


def cluster_has_gpu() -> bool:
    """Return True when the running Ray cluster has at least one GPU."""
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def trial_capacity(
    num_workers: int, cpus_per_worker: float, use_gpu: bool, may_autoscale: bool = False
) -> int | None:
    """Return how many trials fit on the cluster at once.

    Args:
        may_autoscale: the cluster was joined with --address and may add nodes on demand
            (an autoscaling cluster starts with no worker nodes), so a shortage is only
            logged and None (no limit from the current size) is returned.

    Raises:
        SearchSetupError: one trial needs more CPUs or GPUs than a local cluster has.
    """
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    needed_cpus = num_workers * cpus_per_worker
    needed_gpus = num_workers if use_gpu else 0
    if may_autoscale and (needed_cpus > cpus or needed_gpus > gpus):
        logger.warning(
            "one trial needs %g CPUs and %d GPUs; the cluster has %g CPUs and %g GPUs now, so "
            "trials wait until the autoscaler adds nodes",
            needed_cpus,
            needed_gpus,
            cpus,
            gpus,
        )
        return None
    if needed_cpus > cpus:
        raise SearchSetupError(
            f"--num-workers {num_workers} x --cpus-per-worker {cpus_per_worker:g} needs "
            f"{needed_cpus:g} CPUs but the Ray cluster has {cpus:g}; lower --num-workers or "
            "--cpus-per-worker, or join a bigger cluster with --address"
        )
    capacity = math.floor(cpus / needed_cpus)
    if use_gpu:
        if num_workers > gpus:
            raise SearchSetupError(
                f"--num-workers {num_workers} with --use-gpu needs {num_workers} GPUs but the "
                f"Ray cluster has {gpus:g}; lower --num-workers or pass --no-use-gpu"
            )
        capacity = min(capacity, math.floor(gpus / num_workers))
    return max(capacity, 1)


# Stage: runs and space ---------------------------------------------------------------


def resolve_budget(options: SearchOptions) -> Budget:
    """Return ``--budget``, or the default for the cluster (full with a GPU, else local)."""
    if options.budget is not None:
        return get_budget(options.budget)
    return get_budget(default_budget_name(cluster_has_gpu()))


def run_settings(options: SearchOptions, budget: Budget, info: DatasetInfo) -> RunSettings:
    """Combine command line and budget into the per-run settings."""
    return RunSettings(
        method=options.method,
        dataset=options.dataset,
        data_dir=options.data_dir,
        in_channels=info.in_channels,
        epochs=options.epochs or budget.epochs_for(options.dataset),
        batch_size=options.batch_size or budget.batch_size,
        max_steps_per_epoch=options.max_steps_per_epoch or budget.max_steps_per_epoch,
        num_workers=options.num_workers,
        use_gpu=budget.use_gpu if options.use_gpu is None else options.use_gpu,
        cpus_per_worker=options.cpus_per_worker,
        seed=options.seed,
    )


def build_run_and_space(
    options: SearchOptions, budget: Budget, info: DatasetInfo
) -> tuple[Any, spaces.SearchSpace]:
    """Return the base RunConfig and the checked search space.

    Raises:
        SearchSetupError: a run setting is invalid or the space contains values the method
            cannot use.
    """
    settings = run_settings(options, budget, info)
    try:
        base = build_base_run(settings, budget)
        if options.data_csv is not None:
            base = base.replace(data=base.data.replace(csv_path=options.data_csv))
        if options.download:
            base = base.replace(data=base.data.replace(download=True))
    except ConfigError as error:
        raise SearchSetupError(f"invalid run setting: {error}") from error
    channels = base.model.encoder.out_dim
    try:
        space = spaces.search_space(options.method, info.num_levels, channels)
        overrides: dict[str, Any] = {}
        if options.space_file is not None:
            overrides.update(spaces.load_override_file(options.space_file))
        for text in options.space:
            name, value = spaces.parse_override(text)
            overrides[name] = value
        space = spaces.apply_overrides(space, overrides, options.method, info.num_levels, channels)
    except spaces.SpaceError as error:
        raise SearchSetupError(f"invalid search space: {error}") from error
    check_sample_maps(base, space, info.num_levels)
    return base, space


def check_sample_maps(base: Any, space: spaces.SearchSpace, num_levels: int) -> None:
    """Map the space's lower corner to a RunConfig once, so config errors show up now."""
    corner = {name: _corner_value(knob) for name, knob in space.items()}
    try:
        apply_sample(base, corner, num_levels)
    except (ConfigError, spaces.SpaceError) as error:
        raise SearchSetupError(f"the search space does not fit the run: {error}") from error


def _corner_value(knob: spaces.Knob) -> Any:
    if isinstance(knob, spaces.Fixed):
        return knob.value
    if isinstance(knob, spaces.Choice):
        return knob.values[0]
    return knob.low


# Stage: search folder and state ------------------------------------------------------


def default_search_prefix(method: str, dataset: str, budget: str, seed: int) -> str:
    """Return the name prefix shared by every search of these settings."""
    return f"{method}-{dataset}-{budget}-seed{seed}-"


def new_search_name(options: SearchOptions, budget: str) -> str:
    """Return ``--name`` or a fresh default name with the UTC time."""
    if options.name is not None:
        return options.name
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return default_search_prefix(options.method, options.dataset, budget, options.seed) + stamp


def find_search_to_resume(options: SearchOptions, storage: str) -> str:
    """Return the name of the search ``--resume`` continues.

    Raises:
        SearchSetupError: no such search exists.
    """
    if options.name is not None:
        return options.name
    if is_remote(storage):
        raise SearchSetupError("--resume with an s3:// --storage-path needs --name")
    root = Path(storage)
    budgets = [options.budget] if options.budget else ["smoke", "local", "full"]
    prefixes = [default_search_prefix(options.method, options.dataset, b, options.seed) for b in budgets]
    candidates = sorted(
        (path for path in root.glob("*") if (path / SWEEP_FILE).is_file() and path.name.startswith(tuple(prefixes))),
        key=lambda path: path.name[-15:],
    )
    if not candidates:
        raise SearchSetupError(
            f"no search to resume under {storage} for method {options.method!r}, dataset "
            f"{options.dataset!r} and seed {options.seed}; pass --name of the search folder"
        )
    return candidates[-1].name


def _filesystem(storage: str) -> tuple[Any, str]:
    import pyarrow.fs

    if is_remote(storage):
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), storage


def save_sweep_state(storage: str, state: SweepState) -> None:
    """Write ``sweep.json`` into the search folder (local or remote).

    A remote copy is written locally first and uploaded with ``pyarrow.fs.copy_files``,
    the upload path Ray's own storage code uses.
    """
    import pyarrow.fs

    text = json.dumps(dataclasses.asdict(state), indent=2)
    if not is_remote(storage):
        folder = Path(storage) / state.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SWEEP_FILE).write_text(text)
        return
    filesystem, base = _filesystem(storage)
    with tempfile.TemporaryDirectory(prefix="hmlc-sweep-") as scratch:
        local = Path(scratch) / SWEEP_FILE
        local.write_text(text)
        pyarrow.fs.copy_files(
            str(local),
            f"{base.rstrip('/')}/{state.name}/{SWEEP_FILE}",
            destination_filesystem=filesystem,
        )


def load_sweep_state(storage: str, name: str) -> SweepState:
    """Read ``sweep.json`` of search ``name``.

    Raises:
        SearchSetupError: the search folder has no ``sweep.json``.
    """
    filesystem, base = _filesystem(storage)
    path = f"{base.rstrip('/')}/{name}/{SWEEP_FILE}"
    try:
        with filesystem.open_input_stream(path) as stream:
            values = json.loads(stream.read().decode())
    except (FileNotFoundError, OSError) as error:
        raise SearchSetupError(
            f"search {name!r} has no {SWEEP_FILE} under {storage}; check --name and --storage-path"
        ) from error
    return SweepState(**values)


# Stage: Tune -------------------------------------------------------------------------


def trial_dirname(trial: Any) -> str:
    """Name each trial's folder after its id, so results map back to trials."""
    return str(trial.trial_id)


def make_trainable(state: SweepState, storage: str, options: SearchOptions) -> Any:
    """Return the Tune trainable: :func:`search.trial.run_trial` with the search's context."""
    from ray import tune

    from search.trial import TrialContext, run_trial

    marker_dir = os.path.join(tempfile.gettempdir(), f"hmlc-debug-{state.sweep_id}")
    context = TrialContext(
        base_run=state.base_run,
        num_levels=len(state.level_names),
        tracking_uri=state.tracking_uri,
        experiment_id=state.experiment_id,
        parent_run_id=state.parent_run_id,
        sweep_id=state.sweep_id,
        method=state.method,
        dataset=state.dataset,
        train_storage=join_storage(storage, state.name, TRAIN_RUNS),
        fail_mode=options.debug_fail_trial,
        fail_marker_dir=marker_dir if options.debug_fail_trial else None,
    )
    # The trial function only waits on its TorchTrainer, whose workers reserve the CPUs
    # and GPUs. Tune rejects an empty reservation, so the trial reserves 1 MiB of memory.
    return tune.with_resources(tune.with_parameters(run_trial, context=context), {"cpu": 0, "memory": 2**20})


def make_searcher(state: SweepState) -> Any:
    """Return Optuna TPE (seeded) on ``val/probe_acc``, storing its study when configured."""
    from search.searcher import FinalMetricOptunaSearch

    storage = None
    if state.optuna_storage is not None:
        import optuna

        storage = optuna.storages.RDBStorage(state.optuna_storage)
    warm_start = ()
    if state.warm_start_study is not None:
        warm_start = finished_trials(state.optuna_storage, state.warm_start_study)
    return FinalMetricOptunaSearch(
        metric=OBJECTIVE,
        mode="max",
        seed=state.seed,
        storage=storage,
        study_name=state.study_name,
        warm_start_trials=warm_start,
    )


def finished_trials(optuna_storage: str | None, study_name: str) -> list[tuple[dict[str, Any], float]]:
    """Return the (params, objective) pairs of a stored study's completed trials.

    Raises:
        SearchSetupError: there is no Optuna storage, or it contains no study of that name.
    """
    import optuna

    if optuna_storage is None:
        raise SearchSetupError(
            f"--warm-start {study_name!r} needs an Optuna storage; drop --optuna-storage memory"
        )
    names = optuna.study.get_all_study_names(storage=optuna_storage)
    if study_name not in names:
        raise SearchSetupError(
            f"--warm-start: study {study_name!r} was not found in {optuna_storage}; "
            f"stored studies: {', '.join(names) or 'none'}"
        )
    study = optuna.load_study(study_name=study_name, storage=optuna_storage)
    complete = optuna.trial.TrialState.COMPLETE
    return [(dict(t.params), float(t.value)) for t in study.trials if t.state == complete and t.value is not None]


def make_scheduler(state: SweepState) -> Any:
    """Return ASHA on the per-epoch ``val/knn_acc``; trials end on their own at the last epoch."""
    from search.searcher import FinalEpochSafeASHA

    return FinalEpochSafeASHA(
        time_attr=SCHEDULER_TIME_ATTR,
        metric=SCHEDULER_METRIC,
        mode="max",
        max_t=state.epochs,
        grace_period=min(state.grace_period, state.epochs),
        reduction_factor=state.reduction_factor,
        stop_last_trials=False,
    )


def build_tuner(state: SweepState, space: spaces.SearchSpace, storage: str, options: SearchOptions) -> Any:
    """Return a new Tuner for the search."""
    from ray import tune

    from search.status import TrialStatusCallback

    return tune.Tuner(
        make_trainable(state, storage, options),
        param_space=spaces.to_tune_domains(space),
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(state),
            scheduler=make_scheduler(state),
            num_samples=state.num_samples,
            max_concurrent_trials=state.max_concurrent_trials,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=state.name,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=1),
            callbacks=[TrialStatusCallback(state.tracking_uri, state.experiment_id, state.sweep_id)],
        ),
    )


def restore_tuner(state: SweepState, storage: str, options: SearchOptions) -> Any:
    """Return the Tuner of an interrupted search, continuing its unfinished trials."""
    from ray import tune

    path = join_storage(storage, state.name)
    if not tune.Tuner.can_restore(path):
        raise SearchSetupError(
            f"search folder {path} contains no Ray Tune state to resume because it was "
            "interrupted before its first trial. Start it again without --resume"
        )
    return tune.Tuner.restore(
        path,
        trainable=make_trainable(state, storage, options),
        resume_unfinished=True,
        resume_errored=True,
        restart_errored=False,
    )


# Stage: results ----------------------------------------------------------------------


def trial_records(results: Any, state: SweepState, client: Any) -> list[TrialRecord]:
    """Turn Tune's ResultGrid into leaderboard records (with each trial's MLflow run)."""
    knob_names = set(state.space)
    records = []
    for result in results:
        trial_id = Path(result.path).name
        metrics = dict(result.metrics or {})
        if result.error is not None:
            status = tracking.STATUS_FAILED
        elif OBJECTIVE in metrics:
            status = tracking.STATUS_COMPLETED
        else:
            status = tracking.STATUS_EARLY_STOPPED
        records.append(
            TrialRecord(
                trial_id=trial_id,
                status=status,
                knobs={key: value for key, value in (result.config or {}).items() if key in knob_names},
                metrics=metrics,
                mlflow_run_id=tracking.find_trial_run(client, state.experiment_id, state.sweep_id, trial_id),
                checkpoint_path=metrics.get("checkpoint_path"),
            )
        )
    return records


def search_interrupted(results: Any, num_samples: int) -> bool:
    """Return True when Tune returned before every trial finished (Ctrl-C, SIGUSR1)."""
    if len(results) < num_samples:
        return True
    return any(result.error is None and not (result.metrics or {}).get("done") for result in results)


def evaluate_on_test(record: TrialRecord, state: SweepState, storage: str) -> dict[str, float]:
    """Probe the best trial's final checkpoint once on the test split (in a Ray task)."""
    import ray

    from hmlc_core.train.config import RunConfig

    run = apply_sample(RunConfig.from_dict(state.base_run), record.knobs, len(state.level_names))
    if record.checkpoint_path is None:
        raise RuntimeError(f"trial {record.trial_id} reported no checkpoint; cannot evaluate it")
    gpus = 1 if run.scaling.use_gpu else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus)(_evaluate_checkpoint_task)
    return ray.get(task.remote(record.checkpoint_path, storage, run))


def _evaluate_checkpoint_task(checkpoint_path: str, storage: str, run: Any) -> dict[str, float]:
    from ray.train import Checkpoint

    from hmlc_core.train.trainer import evaluate_checkpoint

    filesystem, _ = _filesystem(storage)
    checkpoint = Checkpoint(checkpoint_path, filesystem=filesystem if is_remote(storage) else None)
    with checkpoint.as_directory() as folder:
        return evaluate_checkpoint(folder, run, split="test")


def leaderboard_path(options: SearchOptions, storage: str, name: str) -> str:
    """Return ``--leaderboard-csv`` or its default."""
    if options.leaderboard_csv is not None:
        return options.leaderboard_csv
    if is_remote(storage):
        return f"{name}-leaderboard.csv"
    return os.path.join(storage, name, "leaderboard.csv")


def report_results(results: Any, state: SweepState, storage: str, options: SearchOptions, client: Any) -> int:
    """Print and save the leaderboard, test the best trial and log it all to MLflow."""
    records = trial_records(results, state, client)
    frame = build_leaderboard(records)
    csv_path = save_leaderboard(frame, leaderboard_path(options, storage, state.name))
    print(f"\nLeaderboard of search {state.name} ({state.method} on {state.dataset}, sorted by {OBJECTIVE}):")
    print(format_leaderboard(frame))
    print(f"Leaderboard saved to {csv_path}")
    tracking.log_file(client, state.parent_run_id, csv_path)
    best = best_record(records)
    if best is None:
        print("No trial completed, so there is no best configuration to test.")
        tracking.finish_run(client, state.parent_run_id, "FAILED")
        return 1
    test_metrics = evaluate_on_test(best, state, storage)
    tracking.log_metrics_once(client, state.parent_run_id, test_metrics)
    client.set_tag(state.parent_run_id, "best_trial_id", best.trial_id)
    if best.mlflow_run_id is not None:
        client.set_tag(state.parent_run_id, "best_run_id", best.mlflow_run_id)
        tracking.log_metrics_once(client, best.mlflow_run_id, test_metrics)
    tracking.log_metrics_once(
        client, state.parent_run_id, {f"best/{OBJECTIVE}": float(best.metrics[OBJECTIVE])}
    )
    print(f"\nBest trial {best.trial_id}: {OBJECTIVE} = {float(best.metrics[OBJECTIVE]):.4f}")
    for key in sorted(test_metrics):
        print(f"  {key} = {test_metrics[key]:.4f}")
    log_search_reports(client, state, best, storage, options.register_model)
    tracking.finish_run(client, state.parent_run_id, "FINISHED")
    return 0


def log_search_reports(
    client: Any, state: SweepState, best: TrialRecord, storage: str, registered_model_name: str | None
) -> None:
    """Log the Optuna plots and the best trial's encoder to the parent run.

    A failure here is logged and tagged on the parent run, because the search itself
    has already finished and its results are saved.
    """
    from search import reports

    try:
        if state.optuna_storage is not None:
            import optuna

            study = optuna.load_study(study_name=state.study_name, storage=state.optuna_storage)
            reports.log_optuna_plots(client, state.parent_run_id, study)
        model, example = load_best_model(best, state, storage)
        reports.log_best_encoder(
            client,
            state.parent_run_id,
            model,
            input_example=example,
            registered_model_name=registered_model_name,
        )
    except Exception as error:  # noqa: BLE001 - reports must not fail a finished search
        logger.exception("logging the search reports of MLflow run %s failed", state.parent_run_id)
        client.set_tag(state.parent_run_id, "report_error", f"{type(error).__name__}: {error}"[:5000])


def load_best_model(best: TrialRecord, state: SweepState, storage: str) -> tuple[Any, Any]:
    """Load the best trial's model from its final checkpoint, on the CPU.

    Returns:
        The model in eval mode, and an input example for MLflow: two validation images
        through the evaluation transform.
    """
    from ray.train import Checkpoint

    from hmlc_core.data import build_eval_transform, load_splits
    from hmlc_core.models import build_model
    from hmlc_core.train.checkpoint import load_checkpoint
    from hmlc_core.train.config import RunConfig
    from hmlc_core.train.loop import model_config_for

    if best.checkpoint_path is None:
        raise RuntimeError(f"trial {best.trial_id} reported no checkpoint")
    run = apply_sample(RunConfig.from_dict(state.base_run), best.knobs, len(state.level_names))
    filesystem, _ = _filesystem(storage)
    checkpoint = Checkpoint(best.checkpoint_path, filesystem=filesystem if is_remote(storage) else None)
    model = build_model(model_config_for(run, len(state.level_names)))
    with checkpoint.as_directory() as folder:
        model.load_state_dict(load_checkpoint(folder).model)
    val = load_splits(run.data).val
    example = build_eval_transform(val)(val.inputs[:2])
    return model.eval(), example


# Entry point -------------------------------------------------------------------------


def prepare_new_search(options: SearchOptions, storage: str, tracking_uri: str) -> tuple[SweepState, spaces.SearchSpace]:
    """Check data, cluster, run and space; open the MLflow parent run; save sweep.json."""
    import uuid

    info = inspect_dataset(options)
    budget = get_budget(options.budget) if options.budget else None
    if budget is not None:
        base, space = build_run_and_space(options, budget, info)
    start_ray(options)
    if budget is None:
        budget = resolve_budget(options)
        base, space = build_run_and_space(options, budget, info)
    capacity = trial_capacity(
        base.scaling.num_workers,
        base.scaling.cpus_per_worker,
        base.scaling.use_gpu,
        may_autoscale=options.address is not None,
    )
    requested = options.max_concurrent_trials or budget.max_concurrent_trials
    if capacity is None:
        concurrency = requested or 1
    else:
        concurrency = min(requested or capacity, capacity)
    name = new_search_name(options, budget.name)
    if not is_remote(storage) and (Path(storage) / name / SWEEP_FILE).exists():
        raise SearchSetupError(
            f"search {name!r} already exists under {storage}; pass --resume to continue it "
            "or another --name to start a new one"
        )
    optuna_storage = options.optuna_storage
    if optuna_storage is None:
        optuna_storage = tracking.default_optuna_storage(tracking_uri)
    elif optuna_storage == "memory":
        optuna_storage = None
    if options.warm_start is not None:
        finished_trials(optuna_storage, options.warm_start)  # raises before any run opens
    client = tracking.make_client(tracking_uri)
    experiment_id = tracking.get_or_create_experiment(client, options.experiment_name, tracking_uri)
    sweep_id = uuid.uuid4().hex
    num_samples = options.num_samples or budget.num_samples
    space_text = spaces.describe_space(space)
    tags = {
        tracking.TAG_METHOD: options.method,
        tracking.TAG_DATASET: options.dataset,
        "budget": budget.name,
        "seed": options.seed,
        tracking.TAG_SWEEP: sweep_id,
        "git_commit": tracking.git_commit(REPO_ROOT),
        "search_name": name,
    }
    parent_run_id = tracking.start_parent_run(
        client,
        experiment_id,
        run_name=name,
        tags=tags,
        params={**tags, "num_samples": num_samples, "epochs": base.epochs, "num_workers": base.scaling.num_workers},
        space=space_text,
        budget=budget.describe(),
    )
    state = SweepState(
        name=name,
        sweep_id=sweep_id,
        method=options.method,
        dataset=options.dataset,
        budget=budget.name,
        seed=options.seed,
        num_samples=num_samples,
        max_concurrent_trials=concurrency,
        epochs=base.epochs,
        grace_period=budget.grace_period,
        reduction_factor=budget.reduction_factor,
        tracking_uri=tracking_uri,
        experiment_name=options.experiment_name,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        optuna_storage=optuna_storage,
        study_name=f"{name}-{sweep_id[:8]}",
        level_names=list(info.level_names),
        space=space_text,
        base_run=base.to_dict(),
        warm_start_study=options.warm_start,
    )
    client.set_tag(parent_run_id, "optuna_study", state.study_name)
    tracking.log_yaml(client, parent_run_id, state.base_run, "base_run_config.yaml")
    save_sweep_state(storage, state)
    return state, space


def run_search(options: SearchOptions) -> int:
    """Run (or resume) the search the options describe; return the exit status."""
    # The searcher's metric (val/probe_acc) appears only in a trial's last report, so
    # Tune must not require it in every report.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    storage = absolute_storage_path(options.storage_path)
    space: spaces.SearchSpace | None = None
    if options.resume:
        state = load_sweep_state(storage, find_search_to_resume(options, storage))
        client = tracking.make_client(state.tracking_uri)
        if client.get_run(state.parent_run_id).info.status == "FINISHED":
            print(
                f"Search {state.name} has already finished (MLflow run {state.parent_run_id}); "
                "there is nothing to resume. Start a new search without --resume.",
                flush=True,
            )
            return 0
        start_ray(options)
        tracking.resume_run(client, state.parent_run_id)
    else:
        tracking_uri = tracking.resolve_tracking_uri(options.tracking_uri)
        state, space = prepare_new_search(options, storage, tracking_uri)
        client = tracking.make_client(state.tracking_uri)
    try:
        if space is None:
            tuner = restore_tuner(state, storage, options)
        else:
            tuner = build_tuner(state, space, storage, options)
        print(f"Search {state.name}: MLflow parent run {state.parent_run_id} in {state.tracking_uri}", flush=True)
        results = tuner.fit()
        if search_interrupted(results, state.num_samples):
            tracking.finish_run(client, state.parent_run_id, "KILLED")
            print(
                f"\nSearch {state.name} was interrupted. Continue it with:\n"
                f"  python search/tune.py --method {state.method} --dataset {state.dataset} "
                f"--storage-path {storage} --name {state.name} --resume",
                flush=True,
            )
            return EXIT_INTERRUPTED
        return report_results(results, state, storage, options, client)
    except (KeyboardInterrupt, SearchSetupError):
        tracking.finish_run(client, state.parent_run_id, "KILLED")
        raise
    except Exception:
        logger.exception("search %s failed; marking MLflow run %s FAILED", state.name, state.parent_run_id)
        tracking.finish_run(client, state.parent_run_id, "FAILED")
        raise
