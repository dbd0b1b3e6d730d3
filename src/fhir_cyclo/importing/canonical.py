"""Case files in one canonical YAML form: model field order, PyYAML's quoting, no defaults."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import yaml

from fhir_cyclo.core.case import Case

# First line of every file `import` writes: it marks files that import may replace, and it is
# the same on every run (no date, no version), so re-importing the same data gives the same bytes.
HEADER = "# fhir-cyclo import: a case file read back from FHIR (canonical form)\n"
MARKER = HEADER.strip().encode()
# Integral floats up to here are written as integers (`1000`, not `1000.0`): the model reads
# both as the same float, and the file reads like a hand-written one.
_INT_LIMIT = 2.0**53


def case_label(case: Case) -> str:
    """The short hash naming a case in file names and messages (push labels use the same one);
    the identifier value itself may be an MRN, so it never appears."""
    return hashlib.sha256(case.identifier.token.encode()).hexdigest()[:10]


def file_name(case: Case) -> str:
    return f"case-{case_label(case)}.yaml"


# Dates are always quoted ('2013-03' as well as '2011'), whether or not YAML would read them as
# something else, so every date in a file looks alike and no reader's resolver can change one.
_DATE_LIKE = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T[0-9:.+-]+Z?)?)?)?$")


class _Dumper(yaml.SafeDumper):
    """SafeDumper with dates quoted; everything else as PyYAML quotes it."""


# Characters YAML reads as line breaks (NEL, LS, PS) or that it cannot hold unescaped: PyYAML
# would emit NEL inside a plain scalar and read it back as a line break (found by Hypothesis:
# a note "0\x850" came back "0 0"). Double quotes escape them (\N, \L, \P, \xNN).
_NEEDS_ESCAPE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if _DATE_LIKE.match(value) else None
    if _NEEDS_ESCAPE.search(value):
        style = '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(v) for v in node]
    if isinstance(node, float) and node.is_integer() and abs(node) < _INT_LIMIT:
        return int(node)
    return node


def case_data(case: Case) -> dict[str, Any]:
    """The case as plain data in field order; fields at their default are left out."""
    data = case.model_dump(mode="json", exclude_defaults=True)
    # `patient.sex` and the identifier are required; everything else left out reads back equal.
    plain: dict[str, Any] = _plain(data)
    return plain


def dump_case(case: Case) -> bytes:
    """The canonical bytes of a case file: the same case gives the same bytes on every run."""
    body = yaml.dump(
        case_data(case),
        Dumper=_Dumper,
        sort_keys=False,  # the model's field order: identifier, patient, diagnoses, ...
        allow_unicode=True,
        default_flow_style=False,
        width=100,
        indent=2,
    )
    return (HEADER + body).encode("utf-8")
