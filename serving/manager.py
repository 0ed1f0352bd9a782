"""Which versions of which models are loaded, and handing them to requests.

Like TF Serving's file-system source and availability-preserving manager:

* each model's `base_path` is scanned for integer folders `<base_path>/<N>/`;
  the version policy (`latest { num_versions }`, `all`, `specific { versions }`)
  picks the versions to serve among those not known to be broken;
* a new version is loaded fully (LOADING) before it becomes routable
  (AVAILABLE); a version the policy drops is unrouted at once (UNLOADING) but
  released only when its in-flight requests are done (END), and only once some
  other version of the model is AVAILABLE — so a swap never fails a request;
* a version that fails to load is reported in the status (END with the error)
  and retried only when its folder changes; the versions being served stay.

Names and versions in requests are looked up in these tables and never joined
into file paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence

import grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.servable import LoadedVersion
from serving.status import ServingError, invalid_argument, not_found, shown

log = logging.getLogger("serving")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
UNKNOWN_CODE, NOT_FOUND_CODE = 2, 5  # tensorflow.error.Code


@dataclasses.dataclass
class Version:
    """One version folder of a model and where it is in its lifecycle."""

    number: int
    state: str = START
    error: str = ""  # why loading failed; state is END then
    error_code: int = 0  # its tensorflow.error.Code (same numbers as gRPC's): NOT_FOUND or UNKNOWN
    loaded: LoadedVersion | None = None
    in_flight: int = 0
    fingerprint: tuple = ()  # the folder's (mtime, inode) when it was last tried


@dataclasses.dataclass
class Model:
    config: model_server_config_pb2.ModelConfig
    versions: dict[int, Version] = dataclasses.field(default_factory=dict)

    def available(self) -> list[int]:
        return sorted(n for n, v in self.versions.items() if v.state == AVAILABLE)


VERSION_FOLDER = re.compile(r"0|[1-9][0-9]{0,18}")  # base 10 without leading zeros: one folder per number
MAX_VERSION = 2**63 - 1  # versions are int64


def scan(base_path: str, logged: set[str]) -> dict[int, tuple]:
    """Version folders under base_path → their fingerprint; {} if base_path is missing.

    As in TF Serving's file-system source, a version folder's name is a plain base-10
    int64, here without leading zeros so that no two folders name the same version;
    anything else ("tmp", "²", "1.5", "007", a 30-digit number) is ignored, and logged
    once: its path is added to `logged`.
    """
    try:
        entries = list(os.scandir(base_path))
    except OSError:
        return {}
    found = {}
    for entry in entries:
        try:
            if not entry.is_dir():
                continue
            if not VERSION_FOLDER.fullmatch(entry.name) or int(entry.name) > MAX_VERSION:
                if entry.path not in logged:
                    logged.add(entry.path)
                    log.warning("ignoring %r: version folders are named by base-10 integers", entry.path)
                continue
            info = entry.stat()
        except OSError:  # removed or unreadable between scandir and stat: next poll sees it again
            continue
        found[int(entry.name)] = (info.st_mtime_ns, info.st_ino)
    return found


def wanted_versions(policy: model_server_config_pb2.ModelConfig, candidates: Sequence[int]) -> set[int]:
    """The versions `policy` serves among `candidates` (TF Serving's default: the latest one)."""
    version_policy = policy.model_version_policy
    kind = version_policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(candidates)
    if kind == "specific":
        return set(version_policy.specific.versions) & set(candidates)
    count = version_policy.latest.num_versions if kind == "latest" else 1
    return set(sorted(candidates)[-max(count, 1):])


class ModelManager:
    """Loads, routes and retires model versions; `poll()` applies the file system's state.

    `loader(model_name, version, path)` builds a servable (LoadedVersion in production;
    tests may pass another).
    """

    def __init__(self, configs: Sequence[model_server_config_pb2.ModelConfig],
                 loader: Callable[[str, int, str], LoadedVersion] = LoadedVersion,
                 allow_labels_for_unavailable_versions: bool = False):
        self._loader = loader
        self._allow_unavailable_labels = allow_labels_for_unavailable_versions
        self._lock = threading.Condition()
        self._models: dict[str, Model] = {}
        self._poll_lock = threading.Lock()  # one poll at a time
        self._stopped = threading.Event()
        self._poller: threading.Thread | None = None
        self._ignored_folders: set[str] = set()  # logged once by `scan`
        self.reload(configs)

    # Configuration and polling.

    def reload(self, configs: Sequence[model_server_config_pb2.ModelConfig]) -> None:
        """Serves exactly `configs` from now on (HandleReloadConfigRequest); loads before returning.

        Models no longer configured are retired (after their in-flight requests). As in TF
        Serving, a version label must name an AVAILABLE version once loading is done, unless
        labels for unavailable versions are allowed: FAILED_PRECONDITION otherwise.
        """
        names = [config.name for config in configs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise invalid_argument(f"model names must be unique; repeated: {', '.join(duplicates)}")
        with self._lock:
            for name in list(self._models):
                if name not in names:
                    self._retire_model(name)
            for config in configs:
                if config.name in self._models:
                    self._models[config.name].config = config
                else:
                    self._models[config.name] = Model(config)
        self.poll()
        if self._allow_unavailable_labels:
            return
        with self._lock:
            for config in configs:
                available = self._models[config.name].available()
                for label, version in sorted(config.version_labels.items()):
                    if version not in available:
                        raise ServingError(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"Request to assign label to version {version} of model {config.name}, which is not "
                            f"currently available for inference (label {label!r}); load that version first or "
                            f"pass --allow_version_labels_for_unavailable_models",
                        )

    def poll(self) -> None:
        """Scans every base path once: loads wanted new versions, then retires dropped ones."""
        with self._poll_lock:
            with self._lock:
                models = dict(self._models)
            for name, model in models.items():
                self._poll_model(name, model)

    def _poll_model(self, name: str, model: Model) -> None:
        found = scan(model.config.base_path, self._ignored_folders)
        with self._lock:
            for number, fingerprint in found.items():
                version = model.versions.get(number)
                if version and version.error and version.fingerprint != fingerprint:  # the folder changed: retry
                    version.state, version.error, version.error_code = START, "", 0
        while True:  # a version that fails to load drops out, and the policy picks again
            with self._lock:
                healthy = [n for n in found if not (n in model.versions and model.versions[n].error)]
                wanted = wanted_versions(model.config, healthy)
                for number in wanted:  # only versions the policy ever wanted appear in the status
                    model.versions.setdefault(number, Version(number))
                to_load = [n for n in sorted(wanted, reverse=True) if model.versions[n].state in (START, END)]
            # Newest first: it is the one requests will go to.
            if all([self._load(name, model, number, found[number]) for number in to_load]):
                break
        with self._lock:
            if self._models.get(name) is not model:
                return
            keep = wanted & set(model.available())
            if not keep:  # nothing wanted is up: keep serving what is loaded (availability first)
                return
            for number in model.available():
                if number not in keep:
                    self._retire(model, model.versions[number])

    def _load(self, name: str, model: Model, number: int, fingerprint: tuple) -> bool:
        """Loads one version; False (and the error in its status) if it cannot be loaded."""
        version = model.versions[number]
        with self._lock:
            version.state, version.fingerprint = LOADING, fingerprint
        path = os.path.join(model.config.base_path, str(number))
        try:
            loaded = self._loader(name, number, path)
        except Exception as error:  # a broken folder must never take the server down
            message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            log.warning("failed to load %s version %d from %s: %s", name, number, path, message)
            with self._lock:
                version.state, version.error = END, f"failed to load {path}: {message}"
                version.error_code = NOT_FOUND_CODE if isinstance(error, FileNotFoundError) else UNKNOWN_CODE
            return False
        with self._lock:
            version.loaded, version.state = loaded, AVAILABLE
            self._lock.notify_all()
        log.info("loaded %s version %d from %s", name, number, path)
        return True

    def _retire(self, model: Model, version: Version) -> None:
        """Unroutes `version` now; a thread frees it once its in-flight requests are done. Lock held."""
        version.state = UNLOADING

        def release():
            with self._lock:
                self._lock.wait_for(lambda: version.in_flight == 0)
                version.loaded, version.state = None, END
            log.info("unloaded %s version %d", model.config.name, version.number)

        threading.Thread(target=release, name=f"unload-{model.config.name}-{version.number}", daemon=True).start()

    def _retire_model(self, name: str) -> None:
        model = self._models.pop(name)
        for version in model.versions.values():
            if version.state == AVAILABLE:
                self._retire(model, version)

    def start_polling(self, interval_seconds: float) -> None:
        """Polls every `interval_seconds` in a daemon thread (0: never, as in TF Serving)."""
        if interval_seconds <= 0:
            return

        def run():
            while not self._stopped.wait(interval_seconds):
                try:
                    self.poll()
                except Exception:  # keep polling whatever one scan ran into
                    log.exception("poll failed")

        self._poller = threading.Thread(target=run, name="version-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._poller is not None:
            self._poller.join()

    # Requests.

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> tuple[Model, int]:
        """(model, version number) a request names; NOT_FOUND / INVALID_ARGUMENT as TF Serving. Lock held."""
        model = self._models.get(name)
        if label:
            labels = model.config.version_labels if model else {}
            if label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {shown(label)}")
            version = labels[label]
        if version is None:
            available = model.available() if model else []
            if not available:
                raise not_found(f"Servable not found for request: Latest({shown(name)})")
            return model, available[-1]
        if model is None or version not in model.versions or model.versions[version].state != AVAILABLE:
            raise not_found(f"Servable not found for request: Specific({shown(name)}, {version})")
        return model, version

    @contextlib.contextmanager
    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> Iterator[LoadedVersion]:
        """The servable a request names, held (not unloaded) until the block ends."""
        with self._lock:
            model, number = self.resolve(name, version, label)
            held = model.versions[number]
            held.in_flight += 1
            loaded = held.loaded
        try:
            yield loaded
        finally:
            with self._lock:
                held.in_flight -= 1
                if held.in_flight == 0:
                    self._lock.notify_all()

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[Version]:
        """Snapshots of a model's versions (all of them, or the one named), newest first."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise not_found(f"Could not find any versions of model {shown(name)}")
            if label:
                if label not in model.config.version_labels:
                    raise invalid_argument(f"Unrecognized servable version label: {shown(label)}")
                version = model.config.version_labels[label]
            versions = [v for n, v in model.versions.items() if version is None or n == version]
            if not versions:
                raise not_found(f"Could not find any versions of model {shown(name)}" if version is None
                                else f"Could not find version {version} of model {shown(name)}")
            return [dataclasses.replace(v, loaded=None) for v in sorted(versions, key=lambda v: -v.number)]

    def serves(self, name: str) -> bool:
        """Whether `name` is a configured model (whatever the state of its versions)."""
        with self._lock:
            return name in self._models

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelConfig:
    """The config `--model_name` + `--model_base_path` stand for."""
    return model_server_config_pb2.ModelConfig(name=name, base_path=str(pathlib.Path(base_path)),
                                                model_platform="tensorflow")
