"""The shape-memoised R4B validator answers exactly as fhir.resources' model_validate does."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from fhir_cyclo.core.terminology import terminology
from fhir_cyclo.export.writer import map_case
from fhir_cyclo.fhir.bundle import _first_error, validate_resource
from fhir_cyclo.fhir.r4b import ShapeValidator
from tests.unit.strategies import cases

T = terminology()

# Values of every JSON type, valid for some FHIR primitive types and not for others.
PROBES: list[Any] = [
    "",
    " ",
    "x",
    " padded ",
    "two  spaces",
    "2021",
    "2021-02",
    "2021-02-29",
    "2020-02-29",
    "2021-13-01",
    "2021-01-01T10:00:00+09:00",
    "2021-01-01T10:00:00",
    "2021-01-01T24:00:00Z",
    "urn:uuid:6f0f3c8e-2a4b-5d7e-9c1a-3b5e7d9f1a2c",
    "Patient/abc",
    "http://example.org/x",
    "not a uri with spaces",
    "a" * 70,
    "a" * 300,
    "final",
    "bad\u0001control",
    "-1",
    "1.5",
    0,
    -1,
    1,
    2**31,
    1.5,
    -0.0,
    float("nan"),
    True,
    False,
    None,
    {},
    [],
    [None],
    {"text": "x"},
]


def reference(resource: dict[str, Any]) -> str | None:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        get_fhir_model_class(str(resource.get("resourceType"))).model_validate(resource)
    except (ValueError, KeyError) as exc:
        return _first_error(exc)
    return None


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((*prefix, i))
            out.extend(paths(value, (*prefix, i)))
    return out


def replaced(resource: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    node: Any = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def mutants(resource: dict[str, Any], rng: random.Random, count: int) -> list[dict[str, Any]]:
    found = []
    spots = paths(resource)
    for _ in range(count):
        path = rng.choice(spots)
        found.append(replaced(resource, path, rng.choice(PROBES)))
    # An unknown key and a removed key change the shape itself.
    found.append({**resource, "unknownElement": "x"})
    found.append({k: v for k, v in resource.items() if k != rng.choice(list(resource))})
    return found


def sample_resources() -> list[dict[str, Any]]:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from fhir_cyclo.core.case import Case
    from synthetic import case_data

    out = []
    for i in range(3):
        out.extend(map_case(Case.model_validate(case_data(i)), T, validate=False))
    return out


def test_mutated_resources_get_the_model_verdict_and_message() -> None:
    rng = random.Random(2024)
    validator = ShapeValidator()
    resources = sample_resources()
    for resource in resources:  # learn every shape first, so mutants hit memorised plans
        assert validator.first_error(resource) is None
        assert validator.first_error(resource) is None  # a shape is planned when seen twice
    rejected_by_values = 0
    for resource in resources:
        known = validator.plan_count()
        for mutant in mutants(resource, rng, 20):
            # Twice: the first call may learn the mutant's shape, the second is answered by it.
            expected = reference(mutant)
            assert validator.first_error(mutant) == expected, mutant
            assert validator.first_error(mutant) == expected, mutant
            if expected is not None and validator.knows_shape_of(mutant):
                rejected_by_values += 1
        assert validator.plan_count() >= known
    # Many invalid mutants kept a memorised (valid) shape: only the value checks caught them.
    assert rejected_by_values > 100


def test_values_invalid_for_a_memorised_shape_are_caught() -> None:
    validator = ShapeValidator()
    resource = next(r for r in sample_resources() if "effectiveDateTime" in r)
    assert validator.first_error(resource) is None
    assert not validator.knows_shape_of(resource)  # once: validated, not planned
    assert validator.first_error(resource) is None
    assert validator.knows_shape_of(resource)
    for bad in ({"effectiveDateTime": "2021-13-01"}, {"status": ""}, {"id": "bad id!"}):
        mutant = {**resource, **bad}
        assert validator.first_error(mutant) == reference(mutant) is not None


def test_a_shape_is_answered_from_memory_from_its_third_sighting() -> None:
    validator = ShapeValidator()
    resource = next(r for r in sample_resources() if "effectiveDateTime" in r)
    for _ in range(3):
        assert validator.first_error(resource) is None
    assert (validator.checked, validator.hits, validator.plan_count()) == (3, 1, 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_generated_cases_validate_as_before(case: Any) -> None:
    for resource in map_case(case, T, validate=False):
        assert validate_resource(resource) == reference(resource)


@pytest.mark.parametrize("rtype", ["Observation", "NoSuchType", None])
def test_unknown_or_missing_types_fall_back_to_the_model(rtype: str | None) -> None:
    resource = {"resourceType": rtype, "status": "final", "code": {"text": "x"}}
    assert ShapeValidator().first_error(resource) == reference(resource)
