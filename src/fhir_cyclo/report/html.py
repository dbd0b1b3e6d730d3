"""The self-contained HTML report (`score --report FILE.html`): a jinja2 template, no network.

Rendered from the same dict as --json, so the numbers on the page are the JSON's; plots are
PNG data URIs; CSS is inline. Patients are named by their short label, never an identifier URL.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from fhir_cyclo.report.document import short_label, to_json
from fhir_cyclo.report.plots import png_bytes
from fhir_cyclo.report.summary import is_synthetic, paper_figures
from fhir_cyclo.scoring.rules import CohortScore, display_unit, label

_TEMPLATES = Path(__file__).parent / "templates"
# "system|value" identifier tokens in warning texts: keep the value, drop the system URL.
_IDENTIFIER_TOKEN = re.compile(r"(?:https?://|urn:)[^\s|'\"]*\|")


def _scrub(text: str, labels: dict[str, str]) -> str:
    for key, value in labels.items():
        text = text.replace(key, value)
    return _IDENTIFIER_TOKEN.sub("", text)


def render(cohort: CohortScore, *, document: dict[str, Any] | None = None) -> str:
    """The report as one HTML string (plots embedded); `document` is to_json(cohort) if given."""
    import jinja2

    doc = document if document is not None else to_json(cohort)
    by_key = {p.key: p for p in cohort.patients}
    labels = {p.key: short_label(p.inputs) for p in cohort.patients}
    plots = {
        entry["patient"]: "data:image/png;base64,"
        + base64.b64encode(png_bytes(by_key[entry["patient"]], cohort.config)).decode()
        for entry in doc["patients"]
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["scrub"] = lambda text: _scrub(str(text), labels)
    env.filters["unit"] = lambda unit: display_unit(str(unit)) if unit else ""
    env.filters["analyte"] = lambda name: label(str(name))
    env.filters["num"] = lambda value: "" if value is None else f"{value:g}"
    synthetic = [p for p in doc["patients"] if p["synthetic"]]
    return env.get_template("report.html.j2").render(
        doc=doc,
        plots=plots,
        paper=paper_figures(),
        cohort_source=cohort.config.cite(paper_figures()["source"]),
        synthetic=is_synthetic(cohort),
        synthetic_count=len(synthetic),
        months=list(cohort.config.months),
    )


def write(cohort: CohortScore, path: str | Path, *, document: dict[str, Any] | None = None) -> Path:
    """Write the report to `path` atomically (a temporary file renamed into place)."""
    target = Path(path)
    text = render(cohort, document=document)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)
    return target
