"""The self-contained HTML report (`score --report FILE.html`): a jinja2 template, no network.

Rendered from the same dict as --json, so the numbers on the page are the JSON's; plots are
SVG data URIs drawn once (shared with --plot); CSS is inline and filters are CSS-only (no
script). Patients are named by their short label and token, never an identifier URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from fhir_cyclo.report.criteria import criteria_entries
from fhir_cyclo.report.document import to_json
from fhir_cyclo.report.plots import render_all, write_plots
from fhir_cyclo.report.summary import is_synthetic, paper_figures
from fhir_cyclo.scoring.rules import CohortScore, display_unit, label

_TEMPLATES = Path(__file__).parent / "templates"
# "system|value" identifier tokens in warning texts: keep the value, drop the system URL.
_IDENTIFIER_TOKEN = re.compile(r"(?:https?://|urn:)[^\s|'\"]*\|")
_SIZE = re.compile(r'<svg [^>]*?width="([0-9.]+)" height="([0-9.]+)"')
_SHORT = {"Observation": "Obs", "Procedure": "Proc", "MedicationStatement": "Med"}


def _scrub(text: str, labels: dict[str, str]) -> str:
    for key, value in labels.items():
        text = text.replace(key, value)
    return _IDENTIFIER_TOKEN.sub("", text)


def data_uri(svg: str) -> Markup:
    """An SVG as a percent-encoded data URI for an <img> in a double-quoted attribute.

    Measured on 947 registry-like patients: ~10% over the SVG instead of base64's 33%. Quotes
    inside become single quotes (an apostrophe in a value: &apos;), and `<`, `>`, `"`, `&`, `#`
    and `%` are escaped by quote(), so the URI is safe as it is in the attribute.
    """
    text = svg.replace("'", "&apos;").replace('"', "'")
    uri = "data:image/svg+xml," + quote(text, safe=" /=:;,.-_()'[]!*+?@~")
    return Markup(uri)  # noqa: S704 - quote() left no character that HTML would read


def _size(svg: str) -> tuple[str, str]:
    found = _SIZE.search(svg)
    return (found.group(1), found.group(2)) if found else ("940", "400")


def citation_numbers(cohort: CohortScore, doc: dict[str, Any]) -> dict[str, int]:
    """Source key -> its number in the report's one numbered list of sources."""
    keys = list(doc["criteria"]["sources"])
    if "cohort" not in keys:
        keys.append("cohort")
    return {key: n for n, key in enumerate(keys, 1)}


def _disease_citations(cohort: CohortScore, numbers: dict[str, int]) -> dict[str, tuple[int, ...]]:
    cfg = cohort.config
    diseases = sorted({p.disease for p in cohort.patients})
    return {
        e["disease"]: tuple(
            sorted({numbers[k] for k in [cfg.timepoint_source, *e["sources"]] if k in numbers})
        )
        for e in criteria_entries(cfg, diseases)
    }


class _Refs:
    """Resource references shown as short numbered links ("Obs 3") to the report's appendix."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def link(self, ref: str) -> str:
        n = self.numbers.setdefault(ref, len(self.numbers) + 1)
        return f"{_SHORT.get(ref.partition('/')[0], 'Res')} {n}"

    def anchor(self, ref: str) -> str:
        return f"ref-{self.numbers.setdefault(ref, len(self.numbers) + 1)}"


def _best(assessments: list[dict[str, Any]]) -> str:
    responses = {a["response"] for a in assessments}
    return next((r for r in ("CR", "PR", "NR") if r in responses), "NE")


def render(
    cohort: CohortScore,
    *,
    document: dict[str, Any] | None = None,
    drawn: dict[str, str] | None = None,
) -> str:
    """The report as one HTML string (plots embedded); `document` is to_json(cohort) if given,
    `drawn` the plots by patient key (render_all) if already drawn."""
    import jinja2

    doc = document if document is not None else to_json(cohort)
    numbers = citation_numbers(cohort, doc)
    per_disease = _disease_citations(cohort, numbers)
    if drawn is None:
        drawn = render_all(cohort, per_disease)
    labels = {p["patient"]: f"{p['label']} ({p['token']})" for p in doc["patients"]}
    plots = {key: data_uri(text) for key, text in drawn.items()}
    # Width and height on every <img>: the page (and the print layout, which decides where cards
    # break) reserves the room before a lazily decoded plot arrives.
    sizes = {key: _size(text) for key, text in drawn.items()}
    refs = _Refs()
    cite_key = re.compile(r"\b(" + "|".join(map(re.escape, numbers)) + r")\b")

    def cite(text: str) -> str:
        return (
            cite_key.sub(lambda m: f"[{numbers[m.group(1)]}]", text)
            .replace("[[", "[")
            .replace("]]", "]")
        )

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["scrub"] = lambda text: cite(_scrub(str(text), labels))
    env.filters["unit"] = lambda unit: display_unit(str(unit)) if unit else ""
    env.filters["analyte"] = lambda name: label(str(name))
    env.filters["num"] = lambda value: "" if value is None else f"{value:g}"
    env.filters["cite"] = lambda text: cite(str(text))
    env.filters["ref"] = refs.link
    env.filters["anchor"] = refs.anchor
    env.filters["best"] = _best
    synthetic = [p for p in doc["patients"] if p["synthetic"]]
    tokens = {p["token"]: p for p in doc["patients"]}
    index = {p["token"]: n for n, p in enumerate(doc["patients"], 1)}
    grouped: dict[str, list[dict[str, str]]] = {p["token"]: p["warnings"] for p in doc["patients"]}
    owned = {id(w) for ws in grouped.values() for w in ws}
    seen = {(w["source"], w["path"], w["message"]) for ws in grouped.values() for w in ws}
    unowned = [
        w
        for w in doc["warnings"]
        if id(w) not in owned and (w["source"], w["path"], w["message"]) not in seen
    ]
    return env.get_template("report.html.j2").render(
        doc=doc,
        plots=plots,
        sizes=sizes,
        paper=paper_figures(),
        cohort_source=cohort.config.cite(paper_figures()["source"]),
        synthetic=is_synthetic(cohort),
        synthetic_count=len(synthetic),
        months=list(cohort.config.months),
        numbers=numbers,
        per_disease=per_disease,
        diseases=[row["disease"] for row in doc["summary"]],
        grouped=[(index[t], tokens[t], ws) for t, ws in grouped.items() if ws],
        unowned=unowned,
        refs=refs,
    )


def write(
    cohort: CohortScore,
    path: str | Path,
    *,
    document: dict[str, Any] | None = None,
    drawn: dict[str, str] | None = None,
) -> Path:
    """Write the report to `path` atomically (a temporary file renamed into place)."""
    target = Path(path)
    text = render(cohort, document=document, drawn=drawn)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)
    return target


def publish(
    cohort: CohortScore,
    *,
    plot_dir: str | Path | None,
    report: str | Path | None,
    document: dict[str, Any] | None = None,
) -> Iterator[str]:
    """--plot and --report from one drawing of each patient; yields what was written."""
    doc = document if document is not None else to_json(cohort)
    drawn = render_all(cohort, _disease_citations(cohort, citation_numbers(cohort, doc)))
    if plot_dir:
        written = write_plots(cohort, drawn, plot_dir)
        yield f"wrote {len(written)} plot(s) to {plot_dir}"
    if report:
        write(cohort, report, document=doc, drawn=drawn)
        yield f"wrote the report to {report}"
