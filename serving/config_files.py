"""TF Serving's text-format config files, read exactly as `tensorflow_model_server` reads them.

Three flags of the real server take a file in protobuf text format:

    --model_config_file         ModelServerConfig   config/model_server_config.proto
    --batching_parameters_file  BatchingParameters  servables/tensorflow/session_bundle_config.proto
    --monitoring_config_file    MonitoringConfig    config/monitoring_config.proto

(paths inside TF Serving's tensorflow_serving/ folder)

The first message ships in the tensorflow-serving-api wheel; the other two do not, so this module
declares them at runtime from a `FileDescriptorProto` with TF Serving's field names, numbers and
types. All three are parsed by `google.protobuf.text_format`, so a file the real server accepts is
accepted here, and a broken one fails at the line and column of the mistake.

Every problem is a `ConfigFileError` naming the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
import os
import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's PrometheusExporter::kPrometheusPath


class ConfigFileError(ValueError):
    """A config file that cannot be used; the message names the file, the problem and the fix."""

    def __init__(self, path, problem: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {problem}")


def _schedulable_cpus() -> int:
    """CPUs this process may run on: TF Serving's default number of batch threads."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # sched_getaffinity is Linux-only
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """Server-side batching settings (`--batching_parameters_file`).

    The batching proto has no defaults of its own: a field left out of the file takes the value of
    TF Serving's SharedBatchScheduler options, repeated here.
    """

    max_batch_size: int = 1000  # shared_batch_scheduler.h, QueueOptions.input_batch_size_limit
    batch_timeout_micros: int = 0  # shared_batch_scheduler.h, QueueOptions.batch_timeout_micros
    max_enqueued_batches: int = 10  # shared_batch_scheduler.h, QueueOptions.max_enqueued_batches
    num_batch_threads: int = dataclasses.field(default_factory=_schedulable_cpus)  # port::MaxParallelism()
    thread_pool_name: str = "batch_threads"  # shared_batch_scheduler.h, Options.thread_pool_name
    allowed_batch_sizes: tuple[int, ...] = ()  # session_bundle_config.proto: empty allows any size
    # Accepted so that TF Serving's files parse; requests of different shapes are batched apart, not padded.
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is {getattr(self, name)}; it must be at least 1")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros is {self.batch_timeout_micros}; it must be 0 or more")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes[0] < 1 or any(a >= b for a, b in zip(sizes, sizes[1:]))):
            raise ValueError(f"allowed_batch_sizes {sizes} must be positive and strictly increasing")
        if sizes and sizes[-1] != self.max_batch_size:
            raise ValueError(
                f"the last of allowed_batch_sizes {sizes} must equal max_batch_size {self.max_batch_size} "
                f"(TF Serving's rule); end the list with {self.max_batch_size} or change max_batch_size"
            )


@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
    """Prometheus settings (`--monitoring_config_file`)."""

    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH

    def __post_init__(self):
        if not self.prometheus_path.startswith("/"):
            raise ValueError(
                f'prometheus_config path "{self.prometheus_path}" must start with "/", '
                f'e.g. "{DEFAULT_PROMETHEUS_PATH}"'
            )


def _declare_missing_tf_serving_protos() -> descriptor_pool.DescriptorPool:
    """A descriptor pool holding BatchingParameters, PrometheusConfig and MonitoringConfig.

    The pool is private so that these declarations cannot clash with the real generated modules,
    should they ever be imported into the same process.
    """
    F = descriptor_pb2.FieldDescriptorProto
    optional, repeated = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    messages = {  # field numbers count from 1, in TF Serving's order
        "BatchingParameters": [
            ("max_batch_size", F.TYPE_MESSAGE, optional, ".google.protobuf.Int64Value"),
            ("batch_timeout_micros", F.TYPE_MESSAGE, optional, ".google.protobuf.Int64Value"),
            ("max_enqueued_batches", F.TYPE_MESSAGE, optional, ".google.protobuf.Int64Value"),
            ("num_batch_threads", F.TYPE_MESSAGE, optional, ".google.protobuf.Int64Value"),
            ("thread_pool_name", F.TYPE_MESSAGE, optional, ".google.protobuf.StringValue"),
            ("allowed_batch_sizes", F.TYPE_INT64, repeated, None),
            ("pad_variable_length_inputs", F.TYPE_BOOL, optional, None),
        ],
        "PrometheusConfig": [
            ("enable", F.TYPE_BOOL, optional, None),
            ("path", F.TYPE_STRING, optional, None),
        ],
        "MonitoringConfig": [
            ("prometheus_config", F.TYPE_MESSAGE, optional, ".tensorflow.serving.PrometheusConfig"),
        ],
    }
    file = descriptor_pb2.FileDescriptorProto(
        name="genzoo/serving/tf_serving_config_files.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    for message_name, fields in messages.items():
        message = file.message_type.add(name=message_name)
        for number, (name, field_type, label, type_name) in enumerate(fields, start=1):
            field = message.field.add(name=name, number=number, type=field_type, label=label)
            if type_name:  # set only on message fields: even an empty string counts as set
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(file)
    return pool


_POOL = _declare_missing_tf_serving_protos()
_BatchingParametersProto = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
)
_MonitoringConfigProto = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
)

_PARSE_ERROR_POSITION = re.compile(r"^(\d+):(\d+) : ")
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')


def _describe_parse_error(error: text_format.ParseError, message) -> str:
    """`line L, column C: <protobuf's complaint>`, listing the valid names when a field is misspelt."""
    problem = _PARSE_ERROR_POSITION.sub(r"line \1, column \2: ", str(error))
    unknown = _UNKNOWN_FIELD.search(problem)
    if unknown:
        message_type = message.DESCRIPTOR.file.pool.FindMessageTypeByName(unknown[1])
        problem += f" Known fields: {', '.join(field.name for field in message_type.fields)}."
    return problem


def _parse(path, message):
    """Reads the text-format `message` in `path`; any failure is a ConfigFileError."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise ConfigFileError(
            path, f"cannot read the file ({reason}); pass a text-format {message.DESCRIPTOR.name} file"
        ) from None
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ConfigFileError(path, _describe_parse_error(error, message)) from None


def parse_model_config_file(path) -> model_server_config_pb2.ModelServerConfig:
    """Parses and checks a `--model_config_file`.

    A relative `base_path` is kept as written: TF Serving resolves it against the server's working
    directory, not against the config file's folder.
    """
    config = _parse(path, model_server_config_pb2.ModelServerConfig())
    try:
        check_model_server_config(config)
    except ValueError as error:
        raise ConfigFileError(path, str(error)) from None
    return config


def check_model_server_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    """Raises ValueError naming the first problem of a ModelServerConfig (from a file or a reload request)."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ValueError("custom_model_config is not supported; list models as model_config_list { config { ... } }")
    if not config.model_config_list.config:
        raise ValueError('no models; add model_config_list { config { name: "..." base_path: "..." } }')
    names = set()
    for index, model in enumerate(config.model_config_list.config, start=1):
        where = f'model_config_list config #{index} (name "{model.name}")'
        if not model.name:
            raise ValueError(f"{where}: name is empty; set it to the model name clients send")
        if model.name in names:
            raise ValueError(f"{where}: the name is already used; model names must be unique")
        names.add(model.name)
        if not model.base_path:
            raise ValueError(f"{where}: base_path is empty; set it to the folder holding numbered version folders")
        if model.model_platform not in ("", "tensorflow"):
            raise ValueError(f'{where}: model_platform "{model.model_platform}" is not served; use "tensorflow"')
        for label, version in model.version_labels.items():
            if version < 1:
                raise ValueError(f'{where}: version label "{label}" points at {version}; versions are positive')


def parse_batching_parameters(path) -> BatchingParameters:
    """Parses and checks a `--batching_parameters_file`; fields left out take TF Serving's defaults."""
    proto = _parse(path, _BatchingParametersProto())
    wrapped = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
               "thread_pool_name")
    try:
        return BatchingParameters(
            **{name: getattr(proto, name).value for name in wrapped if proto.HasField(name)},
            allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
            pad_variable_length_inputs=proto.pad_variable_length_inputs,
        )
    except ValueError as error:
        raise ConfigFileError(path, str(error)) from None


def parse_monitoring_config(path) -> MonitoringConfig:
    """Parses and checks a `--monitoring_config_file`; an empty path means TF Serving's default."""
    prometheus = _parse(path, _MonitoringConfigProto()).prometheus_config
    try:
        return MonitoringConfig(
            prometheus_enabled=prometheus.enable, prometheus_path=prometheus.path or DEFAULT_PROMETHEUS_PATH
        )
    except ValueError as error:
        raise ConfigFileError(path, str(error)) from None
