"""Score file input of any size in patient groups (`grouping`), writing --json and --table from
what each group leaves behind: a sorted run of JSON entries on disk and a response tally."""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_cyclo.core.scoring_config import Response, ScoringConfig, load_config
from fhir_cyclo.readers.fhir import SourceItem
from fhir_cyclo.report.document import FORMAT, logged, note_patients, tail, to_json
from fhir_cyclo.report.table import to_table
from fhir_cyclo.scoring.extract import InvalidResources, Note, PatientInputs, extract, slim
from fhir_cyclo.scoring.grouping import IN_MEMORY_LIMIT, PARTITION_SIZE, grouped
from fhir_cyclo.scoring.rules import Accounting, Assessment, CohortScore, PatientScore, score


@dataclass
class StreamResult:
    """Counts of a streamed scoring run (the JSON and table are written by `write_*`)."""

    patients: int
    notes: int
    skipped: int
    runs: list[Path]
    tally: list[PatientScore]  # one shared stand-in per distinct (disease, responses)
    config: ScoringConfig
    accounting: Accounting
    warnings: list[Note]  # every note, group by group (the --json "warnings")


def score_groups(
    items: Iterable[SourceItem],
    tmp: Path,
    *,
    strict: bool = False,
    on_note: Callable[[Note], None] | None = None,
    config: ScoringConfig | None = None,
    in_memory_limit: int = IN_MEMORY_LIMIT,
    partition_size: int = PARTITION_SIZE,
) -> StreamResult:
    """Extract and score group by group; `tmp` receives one sorted run of JSON entries per group.

    Nothing per patient stays in memory but a pointer into `tally`: the table only counts
    responses, so patients with the same disease and responses share one stand-in score.
    """
    cfg = config or load_config()
    result = StreamResult(0, 0, 0, [], [], cfg, Accounting(), [])
    invalid: list[str] = []
    shared: dict[tuple[Any, ...], PatientScore] = {}
    if not strict:  # strict validates every resource whole
        items = slim(items)
    groups = grouped(
        items, in_memory_limit=in_memory_limit, partition_size=partition_size, tmp_dir=tmp
    )
    for n, group in enumerate(groups):
        try:
            cohort = score(extract(group, config=cfg, strict=strict), cfg)
        except InvalidResources as exc:
            invalid.extend(exc.lines)  # listed at the end, every group's
            continue
        del group
        result.warnings.extend(cohort.notes)
        for token, note in zip(note_patients(cohort), cohort.notes, strict=True):
            result.notes += 1
            result.skipped += "skipped" in note.message
            if on_note is not None:
                on_note(logged(note, token))
        run = tmp / f"run-{n}"
        with run.open("wb") as fh:
            for entry in to_json(cohort)["patients"]:  # sorted by key already
                fh.write(orjson.dumps([entry["patient"], entry]) + b"\n")
        result.runs.append(run)
        for p in cohort.patients:
            responses = tuple((a.month, a.response) for a in p.assessments)
            signature = (p.disease, responses)
            stand_in = shared.get(signature)
            if stand_in is None:
                stand_in = shared[signature] = _stand_in(p.disease, responses, p.unit)
            result.tally.append(stand_in)
        result.patients += len(cohort.patients)
        # Groups hold disjoint patients: their counts add up to the whole input's.
        result.accounting.add(cohort.accounting)
    if invalid:
        raise InvalidResources(invalid)
    return result


def _stand_in(disease: str, responses: tuple[tuple[int, Response], ...], unit: str) -> PatientScore:
    day = date.min
    return PatientScore(
        inputs=PatientInputs(key="", reference=None, identifier=None, gender=None),
        disease=disease,
        start=day,
        baseline=None,
        assessments=[Assessment(m, day, (day, day), response) for m, response in responses],
        unit=unit,
    )


def _entries(runs: list[Path]) -> Iterator[Any]:
    def read(path: Path) -> Iterator[list[Any]]:
        with path.open("rb") as fh:
            for line in fh:
                yield orjson.loads(line)

    for _, entry in heapq.merge(*(read(r) for r in runs), key=lambda pair: pair[0]):
        yield entry


def write_json(result: StreamResult, out: IO[bytes]) -> None:
    """The --json document as `orjson.dumps(to_json(cohort), OPT_INDENT_2)` plus a newline
    writes it, the patients streamed entry by entry in key order; with several groups the
    "warnings" come group by group (the only difference from the in-memory path)."""
    stand_ins = CohortScore(
        patients=result.tally,
        notes=result.warnings,
        config=result.config,
        accounting=result.accounting,
    )
    frame = {"format": FORMAT, "patients": [], **tail(stand_ins)}
    head, rest = (orjson.dumps(frame, option=orjson.OPT_INDENT_2) + b"\n").split(
        b'"patients": []', 1
    )
    head += b'"patients": '
    out.write(head)
    first = True
    for entry in _entries(result.runs):
        out.write(b"[\n" if first else b",\n")
        first = False
        text = orjson.dumps(entry, option=orjson.OPT_INDENT_2)
        out.write(b"\n".join(b"    " + line for line in text.split(b"\n")))
    out.write(b"[]" if first else b"\n  ]")
    out.write(rest)


def table(result: StreamResult) -> str:
    cohort = CohortScore(
        patients=result.tally, notes=[], config=result.config, accounting=result.accounting
    )
    return to_table(cohort)


def scratch() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for the spool, partitions and runs (removed when closed)."""
    return tempfile.TemporaryDirectory(prefix="fhir-cyclo-score-")
