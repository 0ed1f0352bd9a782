"""TF Serving's text-format config files: real files parse, and broken ones say where and how to fix."""

import os
import pathlib

import pytest

from serving.config_files import (
    DEFAULT_PROMETHEUS_PATH,
    BatchingParameters,
    ConfigFileError,
    MonitoringConfig,
    parse_batching_parameters,
    parse_model_config_file,
    parse_monitoring_config,
)

TF_SERVING_MODEL_CONFIG = """
model_config_list {
  config {
    name: 'vae'
    base_path: '/models/vae'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: 'stable' value: 1 }
    version_labels { key: 'canary' value: 2 }
  }
  config {
    name: "gan"
    base_path: "models/gan"
    model_version_policy { latest { num_versions: 2 } }
  }
}
"""

TF_SERVING_BATCHING_FILE = """
max_batch_size { value: 128 }
batch_timeout_micros { value: 1000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 4 }
allowed_batch_sizes: 32
allowed_batch_sizes: 128
pad_variable_length_inputs: false
"""


@pytest.fixture
def write(tmp_path):
    """`write(text, name)` puts `text` in a file under tmp_path and returns its path."""

    def write_file(text, name="config.txt"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write_file


def test_tf_serving_model_config_with_specific_versions_and_labels_parses(write):
    config = parse_model_config_file(write(TF_SERVING_MODEL_CONFIG))

    vae, gan = config.model_config_list.config
    assert (vae.name, vae.base_path, vae.model_platform) == ("vae", "/models/vae", "tensorflow")
    assert list(vae.model_version_policy.specific.versions) == [1, 2]
    assert dict(vae.version_labels) == {"stable": 1, "canary": 2}
    assert gan.model_version_policy.latest.num_versions == 2


def test_relative_base_path_is_kept_as_written(write):
    config = parse_model_config_file(write(TF_SERVING_MODEL_CONFIG))

    assert config.model_config_list.config[1].base_path == "models/gan"


def test_misspelt_field_names_the_file_line_and_known_fields(write):
    path = write("model_config_list {\n  config {\n    name: 'vae'\n    base_paths: '/models/vae'\n  }\n}\n",
                 name="models.config")

    with pytest.raises(ConfigFileError) as error:
        parse_model_config_file(path)

    message = str(error.value)
    assert message.startswith(f"{path}: line 4, column 5:")
    assert '"base_paths"' in message and "Known fields: name, base_path," in message
    assert error.value.path == path


def test_syntax_error_names_the_line(write):
    path = write("model_config_list {\n  config {\n    name: 'vae'\n    base_path: 7\n  }\n}\n")

    with pytest.raises(ConfigFileError, match=r"config.txt: line 4, column \d+: .*Expected string"):
        parse_model_config_file(path)


@pytest.mark.parametrize("parse", [parse_model_config_file, parse_batching_parameters, parse_monitoring_config])
def test_missing_file_is_named(tmp_path, parse):
    path = str(tmp_path / "absent.config")

    with pytest.raises(ConfigFileError, match=f"^{path}: cannot read the file"):
        parse(path)


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("", "no models"),
        ('custom_model_config { type_url: "x" }', "custom_model_config is not supported"),
        ("model_config_list { config { base_path: '/m' } }", "name is empty"),
        ("model_config_list { config { name: 'm' } }", "base_path is empty"),
        ("model_config_list { config { name: 'm' base_path: '/a' } config { name: 'm' base_path: '/b' } }",
         'config #2 \\(name "m"\\): the name is already used'),
        ("model_config_list { config { name: 'm' base_path: '/m' model_platform: 'onnx' } }",
         'model_platform "onnx" is not served'),
        ("model_config_list { config { name: 'm' base_path: '/m' version_labels { key: 'x' value: 0 } } }",
         'version label "x" points at 0'),
    ],
)
def test_unservable_model_config_is_refused_with_the_reason(write, text, complaint):
    with pytest.raises(ConfigFileError, match=complaint):
        parse_model_config_file(write(text))


def test_tf_serving_batching_file_parses(write):
    assert parse_batching_parameters(write(TF_SERVING_BATCHING_FILE)) == BatchingParameters(
        max_batch_size=128,
        batch_timeout_micros=1000,
        max_enqueued_batches=100,
        num_batch_threads=4,
        allowed_batch_sizes=(32, 128),
        pad_variable_length_inputs=False,
    )


def test_batching_fields_left_out_take_tf_serving_defaults(write):
    parameters = parse_batching_parameters(write('thread_pool_name { value: "pool" }\n'))

    assert (parameters.max_batch_size, parameters.batch_timeout_micros, parameters.max_enqueued_batches) == (1000, 0, 10)
    assert parameters.num_batch_threads == len(os.sched_getaffinity(0))
    assert (parameters.thread_pool_name, parameters.allowed_batch_sizes) == ("pool", ())


def test_misspelt_batching_field_lists_the_known_fields(write):
    path = write("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\nmax_batch_sizes { value: 3 }\n",
                 name="batching.config")

    with pytest.raises(ConfigFileError) as error:
        parse_batching_parameters(path)

    assert str(error.value).startswith(f"{path}: line 3, column 1:")
    assert 'no field named "max_batch_sizes"' in str(error.value)
    assert "Known fields: max_batch_size, batch_timeout_micros, max_enqueued_batches" in str(error.value)


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("max_batch_size { value: 0 }", "max_batch_size is 0; it must be at least 1"),
        ("batch_timeout_micros { value: -1 }", "batch_timeout_micros is -1"),
        ("max_enqueued_batches { value: 0 }", "max_enqueued_batches is 0"),
        ("num_batch_threads { value: 0 }", "num_batch_threads is 0"),
        ("max_batch_size { value: 64 } allowed_batch_sizes: 16 allowed_batch_sizes: 32",
         r"must equal max_batch_size 64 \(TF Serving's rule\)"),
        ("max_batch_size { value: 64 } allowed_batch_sizes: 32 allowed_batch_sizes: 32 allowed_batch_sizes: 64",
         "strictly increasing"),
    ],
)
def test_invalid_batching_values_are_refused_with_the_rule(write, text, complaint):
    with pytest.raises(ConfigFileError, match=complaint):
        parse_batching_parameters(write(text))


def test_monitoring_config_parses(write):
    config = parse_monitoring_config(write('prometheus_config { enable: true, path: "/metrics" }'))

    assert config == MonitoringConfig(prometheus_enabled=True, prometheus_path="/metrics")


def test_monitoring_path_defaults_to_tf_servings(write):
    config = parse_monitoring_config(write("prometheus_config { enable: true }"))

    assert config.prometheus_path == DEFAULT_PROMETHEUS_PATH == "/monitoring/prometheus/metrics"


@pytest.mark.parametrize(
    "text, complaint",
    [
        ('prometheus_config { enable: true, path: "metrics" }', 'must start with "/"'),
        ("prometheus_config { enabled: true }", 'line 1, column 21: .*"enabled".* Known fields: enable, path'),
    ],
)
def test_invalid_monitoring_config_is_refused(write, text, complaint):
    with pytest.raises(ConfigFileError, match=complaint):
        parse_monitoring_config(write(text))


def test_shipped_deployment_config_parses_and_compose_mounts_every_model():
    deploy = pathlib.Path(__file__).resolve().parents[2] / "serving" / "deploy"
    config = parse_model_config_file(str(deploy / "models.config"))
    compose = (deploy / "docker-compose.yml").read_text()

    names = [model.name for model in config.model_config_list.config]
    assert {"vae", "iwae", "dcgan"} <= set(names)
    for model in config.model_config_list.config:
        assert f"/serving/{model.name}:{model.base_path}:ro" in compose, model.name
