"""Config overrides of the repository API's load, and version selection."""

from __future__ import annotations

import json

import pytest

from kiln.errors import ConfigError, InvalidArgument
from kiln.repository.config import VersionPolicy
from kiln.serve.core.control import parse_override
from kiln.serve.core.registry import select_versions


def test_an_override_in_kiln_form() -> None:
    config = parse_override("m", json.dumps({"max_batch_size": 8, "labels": {"stable": 2},
                                             "version_policy": {"latest": 2}}))
    assert config.max_batch_size == 8 and config.labels == {"stable": 2}
    assert config.version_policy.latest == 2


def test_an_override_in_triton_form() -> None:
    config = parse_override("m", json.dumps({
        "max_batch_size": 4,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
        "version_policy": {"specific": {"versions": [1, 3]}},
    }))
    assert config.max_batch_size == 4 and config.instances.count == 2
    assert config.inputs is not None and config.inputs[0].name == "x"
    assert config.version_policy.specific == [1, 3]


@pytest.mark.parametrize(("text", "error", "message"), [
    ("{not json", InvalidArgument, "not valid JSON"),
    ("[1]", InvalidArgument, "expected a JSON object"),
    ('{"name": "other"}', ConfigError, "field 'name' is 'other', not 'm'"),
    ('{"max_batch": 1}', ConfigError, "did you mean 'max_batch_size'"),
    ('{"sequence_batching": {}}', InvalidArgument, "does not support"),
    ('{"labels": {"2": 1}}', ConfigError, "a number reads as a version"),
    ('{"input": 5}', InvalidArgument,
     "not a valid Triton ModelConfig"),
])
def test_bad_overrides_name_the_problem(text: str, error: type[Exception],
                                        message: str) -> None:
    with pytest.raises(error, match=message):
        parse_override("m", text)


@pytest.mark.parametrize(("policy", "expected"), [
    (VersionPolicy(), [5]),
    (VersionPolicy(latest=2), [3, 5]),
    (VersionPolicy(all=True), [1, 2, 3, 5]),
    (VersionPolicy(specific=[2, 4]), [2]),
])
def test_version_policies(policy: VersionPolicy, expected: list[int]) -> None:
    assert select_versions(policy, [3, 1, 5, 2]) == expected
