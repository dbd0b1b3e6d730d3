"""Scoring reports: the JSON document, the terminal table, the plots and the HTML report.

One module per idea: `document` (--json, shaped by score.schema.json), `summary` (Table 2
counts and the paper's figures), `criteria` (the rules in words with their sources), `table`,
`plots` (SVG) and `html` (the self-contained report, a jinja2 template in templates/).
"""

from fhir_cyclo.report.criteria import criteria_text
from fhir_cyclo.report.document import log_lines, short_label, to_json
from fhir_cyclo.report.html import publish
from fhir_cyclo.report.plots import plot, plot_filename
from fhir_cyclo.report.summary import percent, summarise
from fhir_cyclo.report.table import to_table

__all__ = [
    "criteria_text",
    "log_lines",
    "percent",
    "plot",
    "plot_filename",
    "publish",
    "short_label",
    "summarise",
    "to_json",
    "to_table",
]
