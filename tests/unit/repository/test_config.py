"""Model configs: YAML, Triton's config.pbtxt, errors that name file and field, inference."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import ConfigError, InvalidArgument, NotFound
from kiln.repository import ModelRepository
from kiln.repository.autocomplete import DEFAULT_MAX_BATCH_SIZE, served_signature
from kiln.repository.config import ModelConfig
from kiln.repository.layout import check_model_name
from kiln.repository.pbtxt import load_pbtxt_config
from kiln.tensors import DataType, Signature, TensorSpec
from tests.models import add_sub_model, save

PBTXT = """
name: "add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { latest { num_versions: 2 } }
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100
  default_queue_policy { max_queue_size: 32 } }
instance_group [ { count: 2 kind: KIND_CPU } ]
response_cache { enable: true }
parameters { key: "x" value: { string_value: "y" } }
"""


def test_pbtxt_common_fields(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(PBTXT)
    config = load_pbtxt_config(path)
    assert config.max_batch_size == 8
    assert config.version_policy.latest == 2
    assert config.inputs is not None and config.inputs[0].datatype is DataType.FP32
    assert config.inputs[0].dims == [16]
    assert config.dynamic_batching is not None
    assert config.dynamic_batching.preferred_batch_sizes == [4, 8]
    assert config.dynamic_batching.max_queue_delay_us == 100
    assert config.dynamic_batching.max_queue_size == 32
    assert config.instances.count == 2 and config.instances.kind == "cpu"
    assert config.parameters == {"x": "y"}


def test_pbtxt_refuses_ensembles(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text('name: "e"\nplatform: "ensemble"\nensemble_scheduling {\n'
                    '  step [ { model_name: "a" model_version: -1 } ]\n}\n')
    with pytest.raises(ConfigError, match="ensemble scheduling"):
        load_pbtxt_config(path)


def test_pbtxt_syntax_error_names_file(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text("max_batch_size: [[[")
    with pytest.raises(ConfigError, match=str(path)):
        load_pbtxt_config(path)


@pytest.mark.parametrize(("text", "words"), [
    ("max_batch: 4\n", ["max_batch", "did you mean 'max_batch_size'"]),
    ("max_batch_size: -1\n", ["max_batch_size", "greater than or equal to 0"]),
    ("dynamic_batching: {max_queue_delay: 5}\n", ["dynamic_batching.max_queue_delay",
                                                  "max_queue_delay_us"]),
    ("inputs: [{name: x, datatype: FLOAT32, dims: [1]}]\n", ["inputs.0.datatype", "FP32"]),
    ("version_policy: {latest: 1, all: true}\n", ["version_policy", "one of"]),
    ("- just\n- a list\n", ["mapping"]),
])
def test_invalid_yaml_names_file_field_and_fix(repo: Path, text: str, words: list[str]) -> None:
    save(add_sub_model(), repo, "m", config=text)
    with pytest.raises(ConfigError) as info:
        ModelRepository([repo]).find("m")
    assert str(repo / "m" / "config.yaml") in info.value.message
    for word in words:
        assert word in info.value.message


def test_name_must_match_folder(repo: Path) -> None:
    save(add_sub_model(), repo, "m", config="name: other\n")
    with pytest.raises(ConfigError, match="folder is 'm'"):
        ModelRepository([repo]).find("m")


def test_versions_and_listing(repo: Path) -> None:
    for version in (1, 3, 12):
        save(add_sub_model(), repo, "m", version=version)
    (repo / "m" / "007").mkdir()
    (repo / "m" / "notes").mkdir()
    repository = ModelRepository([repo])
    assert repository.list() == ["m"]
    assert repository.find("m").versions == (1, 3, 12)
    with pytest.raises(NotFound):
        repository.find("absent")


@pytest.mark.parametrize("name", ["..", "../etc", "a/b", "/abs", ".hidden", "a" * 200, ""])
def test_traversal_names_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_model_name(name)


MODEL = Signature(
    inputs=(TensorSpec("x", DataType.FP32, (-1, 16)),),
    outputs=(TensorSpec("y", DataType.FP32, (-1, 4)),),
)


def test_inferred_signature_batches_dynamic_first_dim() -> None:
    served = served_signature("m", ModelConfig(), MODEL)
    assert served.max_batch_size == DEFAULT_MAX_BATCH_SIZE
    assert served.inputs == MODEL.inputs


def test_fixed_first_dim_means_no_batching() -> None:
    fixed = Signature(inputs=(TensorSpec("x", DataType.FP32, (2, 16)),),
                      outputs=(TensorSpec("y", DataType.FP32, (2, 4)),))
    assert served_signature("m", ModelConfig(), fixed).max_batch_size == 0
    with pytest.raises(ConfigError, match="max_batch_size: 0"):
        served_signature("m", ModelConfig(max_batch_size=4), fixed)


def test_config_may_be_stricter_never_contradict() -> None:
    config = ModelConfig.model_validate(
        {"max_batch_size": 4, "inputs": [{"name": "x", "datatype": "FP32", "dims": [16]}]})
    assert served_signature("m", config, MODEL).inputs[0].shape == (-1, 16)
    wrong = ModelConfig.model_validate(
        {"inputs": [{"name": "x", "datatype": "INT32", "dims": [16]}]})
    with pytest.raises(ConfigError, match="datatype INT32 but the model has FP32"):
        served_signature("m", wrong, MODEL)
    unknown = ModelConfig.model_validate(
        {"inputs": [{"name": "z", "datatype": "FP32", "dims": [16]}]})
    with pytest.raises(ConfigError, match="config names input 'z'"):
        served_signature("m", unknown, MODEL)
