"""Starting or joining Ray with resources that cannot starve each other, and Ray Data's settings.

Locally, Ray gets an explicit logical CPU count (params: ray.num_cpus) rather than
"whatever the machine has", and Ray Data gets a CPU cap, so that training workers that
each hold one CPU still leave room for the Ray Data tasks feeding them. With RAY_ADDRESS
(or ray.address) set, the same code joins that cluster instead.

Every Ray Data setting of the project is here, one context manager per purpose:
`training_ingest` and `batch_inference` apply that purpose's settings to Ray Data's
DataContext and restore them on exit. The measurements behind the values are in
docs/performance.md.

The console of a stage shows the stage's own lines and real problems only: what Ray 2.60
prints there that is neither (a token-auth notice, a restart warning for actors that are
never restarted, "Progress bars disabled", deprecation warnings about Ray's own calls) is
removed at its cause below where the cause is a setting of ours, and filtered by its exact
text where Ray raises it about itself.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from seqmodels.config import Config, RayConfig
from seqmodels.errors import ConfigError, SeqmodelsError
from seqmodels.storage import endpoint_environment

if TYPE_CHECKING:  # Ray itself is imported where it runs
    from ray.data import Dataset

# Ray's processes need these malloc settings: without them glibc churns mmap for each
# batch's tensors and a worker thread's own arena undoes that (training and inference
# speed), and mimalloc keeps freed Arrow pages in idle workers (inference memory).
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
                 "MALLOC_ARENA_MAX": "1", "MIMALLOC_PURGE_DELAY": "0"}
# Inference output blocks: a map actor buffers its output until a block reaches this size,
# and Ray's default (128 MiB) let the predictor's memory grow with the number of rows.
INFER_BLOCK_BYTES = 8 << 20
# Ray Data's V2 Parquet reader takes these from the environment when a read is planned: one
# footer-reading actor (its default, 32, took seconds to start on a small machine) and 64 MiB
# per read task (a read task's memory follows what it reads). A user's own value wins.
READ_TASK_BYTES_ENV = "RAY_DATA_PARQUET_BIN_PACKING_BYTES"
INFER_READER_ENV = {"RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1", READ_TASK_BYTES_ENV: str(64 << 20)}
# Training's reader, by the size of its one examples file. V1 reads a file in one task, whose
# private memory grows to about the file's decoded size, outside Ray Data's memory cap: 3.1 GB
# for the 2.7 GB file of 1.9M windows at 100M rows. V2 reads 64 MiB of row groups a task
# (0.25-0.37 GB there) but starts a footer-reading actor for each read, about 1.4 s, twice a
# training run (train and val): most of the read's time on a small file. V1 up to this size.
TRAIN_V1_MAX_BYTES = 256 << 20
# Only for a local Ray (one machine, which nothing drains): Ray Train's preemption watcher
# polls for nodes a cluster is draining, and each worker group's watcher actor is created
# with the workers' handles as arguments and max_restarts=-1, which Ray's core worker logs at
# ERROR level ("has constructor arguments in the object store and max_restarts > 0").
LOCAL_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
# Only for a local Ray: the GCS declares a raylet dead after `health_check_failure_threshold`
# health checks without a reply, and a raylet declared dead exits, taking the driver with it
# (exit status 1; under pytest, with no output at all). With Ray's default of 5, a raylet
# that could not answer for 60 s was declared dead (measured: SIGSTOP for 60 s); a 2-core
# machine running a neighbour's job can stall that long. One machine has no other node to
# move work to, so a stall should slow the run, not end it: with 30, a 75 s stall passed.
# RAY_health_check_failure_threshold in the environment still wins (Ray itself would let
# _system_config win over it).
LOCAL_SYSTEM_CONFIG = {"health_check_failure_threshold": 30}
# Deprecation warnings Ray 2.60 raises about its own calls, as (message, module) regexes:
# DataContext's dataclass __init__ assigns its deprecated fields, so every new context warns;
# Ray Train's DataConfig.default_ingest_options passes exclude_resources to ExecutionOptions.
RAY_OWN_DEPRECATIONS = (
    (r"`(use_push_based_shuffle|use_polars|use_arrow_tensor_v2)` is deprecated", r"ray\.data\.context"),
    (r"`ExecutionOptions\.exclude_resources` is deprecated",
     r"ray\.data\._internal\.execution\.interfaces\.execution_options"),
)


def init_ray(cfg: RayConfig, dashboard: bool = True) -> None:
    """Start a local Ray or join a cluster, once per process, with the workers' environment;
    waits for a start begun by ray_starting, and raises what failed in it. `dashboard`:
    whether a local Ray needs its dashboard (see _start_local); one started without it is
    restarted for a caller that needs it."""
    import ray

    _background.wait()
    if ray.is_initialized():
        if not (dashboard and _local.without_dashboard):
            return
        shutdown_ray()
    _start(cfg, dashboard)


def _start(cfg: RayConfig, dashboard: bool) -> None:
    quiet_ray_deprecations()
    env_vars = {"RAY_DATA_LOG_LEVEL": cfg.log_level,
                "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": str(cfg.train_poll_interval_s),
                **WORKER_MALLOC}
    for name, value in env_vars.items():
        os.environ.setdefault(name, value)  # the local raylet, its workers and the controller inherit these
    try:
        if cfg.resolved_address:
            _join_cluster(cfg, env_vars)
        else:
            _start_local(cfg, dashboard)
    except ConnectionError as error:
        raise SeqmodelsError(f"cannot connect to Ray at {cfg.resolved_address}: {error}",
                             where="RAY_ADDRESS / ray.address",
                             fix="check the address, or unset it to run on a local Ray") from None


@contextlib.contextmanager
def ray_starting(cfg: RayConfig) -> Iterator[None]:
    """Start or join Ray in a background thread while the block runs, so Ray's start-up
    (3-4 s for a local Ray on 2 cores: the GCS, the raylet, its workers) overlaps the
    block's own work, such as loading a model and reading a batch; init_ray then waits for
    it. Leaving the block waits too, so a block that fails never leaves a half-started Ray:
    its own error wins, and Ray, once up, stops at exit as it always does. For inference
    only: a local Ray started here has no dashboard (see _start_local)."""
    _background.begin(cfg)
    try:
        yield
    finally:
        _background.join()
        _background.stopped()


def release_ray() -> None:
    """This process is done with Ray: a Ray that ray_starting started or joined stops in
    the background while the process finishes its own work (a local Ray takes 1.5-2.5 s to
    stop on 2 cores); ray_starting's block waits for it when it ends. Any other Ray, such
    as one a caller of the library runs, is left as it is."""
    _background.stop_soon()


class _BackgroundStart:
    """The one background start of this process (ray_starting), and what it raised.

    The thread lives as long as the process: a local Ray's GCS and raylet are started with
    PR_SET_PDEATHSIG, which kills them when the *thread* that started them ends. It is a
    daemon, so it never holds the interpreter open; Ray's atexit shutdown stops them first."""

    def __init__(self) -> None:
        self._started: threading.Event | None = None
        self._failure: BaseException | None = None
        self._stopping: threading.Thread | None = None

    def begin(self, cfg: RayConfig) -> None:
        import ray

        if ray.is_initialized() or self._started is not None:
            return
        if threading.current_thread() is threading.main_thread():
            # what ray.init does on the main thread only: SIGTERM exits through atexit, which
            # stops a local Ray
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
            logging.getLogger("ray._private.worker").addFilter(_ThreadStartNotice())
        started = self._started = threading.Event()

        def start() -> None:
            try:
                _start(cfg, dashboard=False)
            except BaseException as failure:  # raised by wait(), in the thread that needs Ray
                self._failure = failure
            started.set()
            threading.Event().wait()  # keep Ray's processes: see the class docstring

        threading.Thread(target=start, name="seqmodels-ray-start", daemon=True).start()

    def join(self) -> None:
        """Until the start has finished (or failed)."""
        if self._started is not None:
            self._started.wait()

    def wait(self) -> None:
        self.join()
        failure, self._failure = self._failure, None
        if failure is not None:
            self._started = None  # a later init_ray may try again
            raise failure

    def stop_soon(self) -> None:
        import ray

        if self._started is None or self._stopping is not None or not ray.is_initialized():
            return
        # Ray Data leaves reference cycles holding ObjectRefs. Collected on this thread while
        # the stop runs, their ObjectRefs reach a core worker already shut down, which ends
        # the process (exit 1, no traceback: the infer stage did so on every run). Collected
        # now, before the stop, they are released while Ray still runs.
        gc.collect()
        self._stopping = threading.Thread(target=shutdown_ray, name="seqmodels-ray-stop")
        self._stopping.start()

    def stopped(self) -> None:
        """Until a stop begun by stop_soon has finished; then a new start may begin."""
        if self._stopping is not None:
            self._stopping.join()
            self._stopping = self._started = None


class _ThreadStartNotice(logging.Filter):
    """ray.init from another thread warns that it set no SIGTERM handler; ray_starting sets
    the same one first, on the main thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


_background = _BackgroundStart()


def _join_cluster(cfg: RayConfig, env_vars: dict[str, str]) -> None:
    """A cluster's workers do not inherit this process's environment: the job's runtime_env
    carries our settings to them, and where S3 is (storage.endpoint_environment), so that a
    Ray Data task reading an s3:// source on any node reads the driver's store. Credentials
    stay out of it (a runtime_env is shown in the dashboard): workers use their nodes' own."""
    import ray

    env_vars = {**endpoint_environment(), **env_vars}
    ray.init(address=cfg.resolved_address, logging_level=cfg.log_level,
             logging_config=ray.LoggingConfig(log_level=cfg.log_level), runtime_env={"env_vars": env_vars})


def _start_local(cfg: RayConfig, dashboard: bool) -> None:
    """A local Ray without a job runtime_env: Ray hands a task or actor only a pre-started
    worker of the same runtime_env, and the raylet's idle workers have none, so with one
    every task and actor would wait for a new worker process. The workers get the
    variables set by init_ray through the raylet's environment instead.

    The dashboard process serves the state API that Ray Train's placement-group cleaner
    polls (bound to loopback only). Inference does without: on 2 cores its start and stop
    made `seqmodels score` of 1M windows 2 s slower (docs/performance.md)."""
    import ray

    for name, value in LOCAL_ENV.items():
        os.environ.setdefault(name, value)
    local_token_auth()
    store = cfg.object_store_mb * 2**20 if cfg.object_store_mb is not None else None
    system = {name: value for name, value in LOCAL_SYSTEM_CONFIG.items() if f"RAY_{name}" not in os.environ}
    ray.init(num_cpus=cfg.num_cpus, object_store_memory=store,
             include_dashboard=dashboard, dashboard_host="127.0.0.1", _system_config=system,
             logging_level=cfg.log_level, logging_config=ray.LoggingConfig(log_level=cfg.log_level))
    _local.without_dashboard = not dashboard


class _LocalRay:
    """How this process started its local Ray."""

    without_dashboard = False


_local = _LocalRay()


def local_token_auth() -> None:
    """Token authentication for a local Ray, with a token of this process's own.

    Ray 2.60 turns token auth on for a new local Ray when RAY_AUTH_MODE is unset, and logs a
    WARNING saying so; it stays quiet when the mode is set. Set here, explicitly, with a
    random token in RAY_AUTH_TOKEN (the first of Ray's documented token sources), which the
    raylet and every worker inherit: Ray's own default would instead write a token into
    ~/.ray/auth_token, a file that outlives the run and that Ray creates with the umask's
    permissions (readable by every user, usually). A mode, token or token file the user set
    (RAY_AUTH_MODE, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH) is theirs and is kept.

    Ray reads the mode into its C++ config once, when `ray` is imported, and caches the
    token at its first use; ray.init reads neither again. Changed after the import, both
    are refreshed here as Ray does when it turns token auth on itself (in its
    authentication_token_setup), or else the driver would call its own GCS without a token.
    """
    try:
        from ray._raylet import AuthenticationTokenLoader
        from ray._raylet import Config as RayCoreConfig
    except ImportError:  # a Ray without token auth, or another layout: its defaults apply
        return
    added = {}
    if "RAY_AUTH_MODE" not in os.environ:
        added["RAY_AUTH_MODE"] = "token"
    if (os.environ.get("RAY_AUTH_MODE", "token").lower() == "token"
            and not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"))):
        added["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # 256 bits, as `ray get-auth-token --generate`
    if not added:
        return
    os.environ.update(added)
    RayCoreConfig.initialize("")  # the config first: a reload must never see token mode without the token
    AuthenticationTokenLoader.instance().reset_cache()


def quiet_ray_deprecations() -> None:
    """Hide the deprecation warnings Ray raises about its own calls (RAY_OWN_DEPRECATIONS),
    matched by message and by the Ray module they are raised from, so a deprecated call of
    ours still warns. Python keeps one copy of a filter added again."""
    for message, module in RAY_OWN_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=DeprecationWarning, module=module)


def preflight(cfg: Config, purpose: Literal["train", "infer"]) -> None:
    """Refuse what the local Ray could never place, then start or join Ray: Ray itself would
    wait for the resources forever. On a cluster an autoscaler may add machines, so Ray
    decides there. Only training needs a local Ray's dashboard (see _start_local)."""
    resources = local_resources(cfg.ray)
    if resources is not None:
        _FITS[purpose](cfg, *resources)
    init_ray(cfg.ray, dashboard=purpose == "train")


def check_train_fits(cfg: Config, cpus: float, gpus: float) -> None:
    """Each train worker holds one CPU (and one GPU with train.use_gpu), and Ray Data needs
    at least one CPU left to feed them."""
    if cfg.train.use_gpu and cfg.train.workers > gpus:
        raise ConfigError(f"train.workers={cfg.train.workers} with train.use_gpu needs "
                          f"{cfg.train.workers} GPU(s); this machine has {gpus:g} visible to torch",
                          where="params.yaml: train.workers / train.use_gpu",
                          fix=f"set train.use_gpu: false, or train.workers <= {max(int(gpus), 1)}"
                          if gpus else "set train.use_gpu: false (no CUDA GPU is visible)")
    if cfg.train.workers >= cpus:
        raise ConfigError(
            f"train.workers={cfg.train.workers} leaves no CPU for Ray Data (Ray has {cpus:g} CPUs)",
            where="params.yaml: train.workers / ray.num_cpus",
            fix=f"set train.workers <= {max(int(cpus) - 1, 1)} or raise ray.num_cpus")


def check_infer_fits(cfg: Config, cpus: float, gpus: float) -> None:
    """Each predictor actor holds one CPU (and one GPU with infer.use_gpu)."""
    pool = cfg.infer.concurrency
    if cfg.infer.use_gpu and pool > gpus:
        raise ConfigError(f"infer.concurrency={pool} predictor(s) with infer.use_gpu need {pool} GPU(s); "
                          f"this machine has {gpus:g} visible to torch",
                          where="params.yaml: infer.use_gpu / infer.concurrency",
                          fix="set infer.use_gpu: false" if not gpus
                          else f"set infer.concurrency <= {int(gpus)}")
    if pool > cpus:
        raise ConfigError(f"infer.concurrency={pool} predictor actors need {pool} CPUs; Ray has {cpus:g}",
                          where="params.yaml: infer.concurrency / ray.num_cpus",
                          fix=f"set infer.concurrency <= {int(cpus)} or raise ray.num_cpus")


_FITS = {"train": check_train_fits, "infer": check_infer_fits}


@dataclass(frozen=True)
class DataSettings:
    """One purpose's Ray Data settings; None leaves a limit unlimited, or the block size as it is."""

    log_level: str
    datasource_v2: bool
    cpu_limit: float | None
    memory_limit_mb: int | None
    max_block_bytes: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)


def training_ingest(cfg: RayConfig,
                    input_bytes: int | None = None) -> contextlib.AbstractContextManager[None]:
    """Settings for the Datasets fed to Ray Train (the trainer copies the DataContext when it
    is built); the CPU cap keeps Ray Data from starving the train workers. `input_bytes`, the
    examples file's size, picks the Parquet reader (see TRAIN_V1_MAX_BYTES): V1 for a file up
    to that size, V2 with inference's reader settings above it."""
    large = input_bytes is not None and input_bytes > TRAIN_V1_MAX_BYTES
    return data_settings(DataSettings(log_level=cfg.log_level, datasource_v2=large,
                                      cpu_limit=cfg.data_cpu_limit,
                                      memory_limit_mb=cfg.data_memory_limit_mb,
                                      env=dict(INFER_READER_ENV) if large else {}))


def batch_inference(cfg: RayConfig,
                    read_task_bytes: int | None = None) -> contextlib.AbstractContextManager[None]:
    """Settings for the inference pipeline. V2 Parquet reader with one footer actor: V1 reads
    a file in one task whose memory grows on a large file. No CPU cap: inference has Ray to
    itself, and a 1-CPU cap serialised reading, the model and writing. The memory cap stays.
    `read_task_bytes` replaces the default read-task budget (a user's own value still wins)."""
    env = dict(INFER_READER_ENV)
    if read_task_bytes is not None:
        env[READ_TASK_BYTES_ENV] = str(read_task_bytes)
    return data_settings(DataSettings(log_level=cfg.log_level, datasource_v2=True, cpu_limit=None,
                                      memory_limit_mb=cfg.data_memory_limit_mb,
                                      max_block_bytes=INFER_BLOCK_BYTES, env=env))


# What data_settings changes, and so restores: DataContext fields, then its execution options'.
_CONTEXT_FIELDS = ("enable_progress_bars", "use_datasource_v2", "target_max_block_size")
_OPTION_FIELDS = ("preserve_order", "resource_limits")


@contextlib.contextmanager
def data_settings(settings: DataSettings) -> Iterator[None]:
    """Apply `settings` to the current DataContext while Datasets are built and run (each
    Dataset seals a copy when created), then put back what was there, so one purpose's
    settings never leak into another's."""
    from ray.data import DataContext

    quiet_ray_deprecations()  # the first get_current() builds the context, which warns
    context = DataContext.get_current()
    options = context.execution_options
    saved = {name: getattr(context, name) for name in _CONTEXT_FIELDS}
    saved_options = {name: getattr(options, name) for name in _OPTION_FIELDS}
    added = [name for name in settings.env if name not in os.environ]
    try:
        _apply(context, settings)
        yield
    finally:
        context.execution_options = options
        for name, value in saved.items():
            setattr(context, name, value)
        for name, value in saved_options.items():
            setattr(options, name, value)
        for name in added:
            os.environ.pop(name, None)


def _apply(context: Any, settings: DataSettings) -> None:
    """Ordered, CPU- and memory-capped execution, as `settings` says."""
    from ray.data import ExecutionResources

    # The driver's logger may predate RAY_DATA_LOG_LEVEL; a console setting, kept after exit.
    logging.getLogger("ray.data").setLevel(settings.log_level)
    context.execution_options.preserve_order = True  # deterministic output order
    context.enable_progress_bars = progress_bars_shown()  # while Datasets are planned: see logged_progress
    context.use_datasource_v2 = settings.datasource_v2
    if settings.max_block_bytes is not None:
        context.target_max_block_size = settings.max_block_bytes
    for name, value in settings.env.items():
        os.environ.setdefault(name, value)
    memory = settings.memory_limit_mb * 2**20 if settings.memory_limit_mb is not None else None
    # for_limits: an omitted resource is unlimited (the plain constructor would make it 0,
    # e.g. no GPU at all for a GPU predictor).
    context.execution_options.resource_limits = ExecutionResources.for_limits(
        cpu=settings.cpu_limit, object_store_memory=memory)


def progress_bars_shown() -> bool:
    """Whether Ray Data draws its progress bars: on a terminal only (they go to stderr).
    Elsewhere (DVC, CI, a log file) long runs print seqmodels.progress lines instead."""
    return sys.stderr.isatty()


def logged_progress(dataset: Dataset) -> Dataset:
    """`dataset`, set to log its progress off a terminal rather than to switch it off.

    Ray Data with progress off logs "Progress bars disabled" (WARNING) once in every
    process that runs a Dataset: this driver, and Ray Train's SplitCoordinator actors,
    where no filter of ours runs. With progress on while stdout is not a terminal, a run
    picks Ray's logging progress manager, whose records are INFO, below ray.log_level's
    WARNING default, and use_ray_tqdm off makes a worker pick the same rather than draw
    bars on this console. Set on the Dataset's own context (its transformations share it),
    after the read is planned: planning (Parquet sampling, file listing) draws bars of its
    own whenever progress is on, and ran with it off (data_settings).
    """
    if not progress_bars_shown():
        dataset.context.enable_progress_bars = True
        dataset.context.use_ray_tqdm = False
    return dataset


def actor_pool_args(cfg: RayConfig) -> dict[str, Any]:
    """Remote args for a Ray Data actor pool (the predictors): on a local Ray, no restarts.

    Ray Data restarts a dead map actor forever and retries its tasks forever
    (max_restarts=-1, max_task_retries=-1) to outlive a lost node, which one machine cannot
    lose. There a dead predictor is a crash or an out-of-memory kill, and a predictor that
    crashes on a batch was restarted and retried without end; with no restarts the stage
    fails at once with the actor's death (ActorDiedError) and publishes nothing. Restarts on
    also make Ray's core worker log an ERROR for every pool, since Ray Data passes each
    actor's constructor arguments through the object store (ray-project/ray#57733). On a
    cluster Ray Data's default stays, and with it that line.
    """
    return {} if cfg.resolved_address else {"max_restarts": 0}


def train_data_config() -> Any:
    """Ray Train's DataConfig with the execution options of the current DataContext (call it
    inside `training_ingest`), which is what Ray Train would use anyway; given explicitly,
    because its default, DataConfig.default_ingest_options, builds them with the deprecated
    exclude_resources argument, and that RayDeprecationWarning comes from Ray Train's
    DatasetManager actor, out of reach of any warnings filter of ours."""
    import copy

    from ray.data import DataContext
    from ray.train import DataConfig

    return DataConfig(execution_options=copy.deepcopy(DataContext.get_current().execution_options))


def ray_data_path(path: str | Path) -> str:
    """A path as Ray Data should get it.

    URIs (s3://, gs://, ...) pass through: every node reaches them. A plain local path is
    only on this (the driver's) node, so on a multi-node cluster it becomes `local://`,
    which pins the read or write tasks to this node; on one node nothing changes.
    """
    text = str(path)
    if "://" in text:
        return text
    absolute = str(Path(text).resolve())
    return f"local://{absolute}" if multi_node() else absolute


def multi_node() -> bool:
    """Whether this driver's Ray has more than one live node (Ray Client excluded: there
    the driver's files are on the client, where no task can run)."""
    import ray

    alive = [node for node in ray.nodes() if node.get("Alive")]
    return len(alive) > 1 and not ray.util.client.ray.is_connected()


def train_logging_config(cfg: RayConfig) -> Any:
    """Ray Train's own logging config, at the same level as the rest of Ray."""
    import ray

    return ray.LoggingConfig(log_level=cfg.log_level)


def local_resources(cfg: RayConfig) -> tuple[float, float] | None:
    """(CPUs, GPUs) a local Ray started from `cfg` has, known before it starts so that
    impossible worker counts fail before Ray does; None when joining a cluster."""
    if cfg.resolved_address:
        return None
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return float(cfg.num_cpus or os.cpu_count() or 1), float(gpus)


def shutdown_ray() -> None:
    """Stop this process's Ray, if it started or joined one."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _local.without_dashboard = False
