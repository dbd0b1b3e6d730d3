"""The `fhir-cyclo score` command body: read, score, then print/plot/write back as asked."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from fhir_cyclo.core.errors import InputError
from fhir_cyclo.readers.fhir import SourceItem, iter_from_server, read_paths
from fhir_cyclo.report import log_lines, publish, to_json, to_table
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.rules import CohortScore, score
from fhir_cyclo.scoring.writeback import to_bundle


def _keep(cohort: CohortScore, patient: str | None, identifier: str | None) -> CohortScore:
    """File mode: --patient/--identifier narrow the scored patients instead of the search."""
    if patient is None and identifier is None:
        return cohort
    wanted_ref = f"Patient/{patient.removeprefix('Patient/')}" if patient else None
    kept = [
        p
        for p in cohort.patients
        if (wanted_ref and p.inputs.reference == wanted_ref) or (identifier and p.key == identifier)
    ]
    if not kept:
        # The identifier is not echoed: it is PHI (the person who typed it knows it).
        what = f"--patient {patient}" if patient else "the --identifier given"
        raise InputError(f"no scored patient matches {what}", source="score")
    return CohortScore(
        patients=kept, notes=cohort.notes, config=cohort.config, accounting=cohort.accounting
    )


def run(args: argparse.Namespace, client: Any | None) -> int:
    """Run `score` with parsed CLI arguments; `client` is a FhirClient in server mode, else None.

    Files win over the server when both are given (the server is then used for --write-back
    only). Warnings go to stderr; --json/--table to stdout (or the --json FILE).
    """
    paths: list[str] = list(getattr(args, "paths", None) or [])
    patient, identifier = getattr(args, "patient", None), getattr(args, "identifier", None)
    items: Iterable[SourceItem]
    bad_files: list[InputError] = []

    def bad(error: InputError) -> None:
        bad_files.append(error)
        print(f"fhir-cyclo: error: {error}", file=sys.stderr)

    def notice(text: str) -> None:
        print(f"fhir-cyclo: warning: {text}", file=sys.stderr)

    in_memory = (  # these need every patient's full inputs at the end
        patient
        or identifier
        or getattr(args, "plot", None)
        or getattr(args, "report", None)
        or getattr(args, "write_back", False)
    )
    if paths and not in_memory:
        # Files of any size: scored in patient groups, out of core (see grouping.py).
        return _run_grouped(args, read_paths(paths, on_error=bad, on_notice=notice), bad_files)
    if paths:
        items = read_paths(paths, on_error=bad, on_notice=notice)
    elif client is not None:
        items = iter_from_server(client, patient=patient, identifier=identifier)
    else:
        raise InputError("give FHIR files or folders, or --server", source="score")
    cohort = score(extract(items, strict=bool(getattr(args, "strict", False))))
    if paths:
        cohort = _keep(cohort, patient, identifier)

    for line in log_lines(cohort):
        print(f"fhir-cyclo: warning: {line}", file=sys.stderr)
    skipped = sum(1 for n in cohort.notes if "skipped" in n.message)
    print(
        f"fhir-cyclo: {cohort.accounting.summary()}; {skipped} resource(s) skipped, "
        f"{len(cohort.notes)} warning(s)",
        file=sys.stderr,
    )
    json_target = getattr(args, "json", None)
    table = bool(getattr(args, "table", False))
    plot_dir = getattr(args, "plot", None)
    report_target = getattr(args, "report", None)
    write_back = bool(getattr(args, "write_back", False))
    if not (json_target or table or plot_dir or report_target or write_back):
        table = True  # a bare `fhir-cyclo score x.json` should show something readable

    document = to_json(cohort) if (json_target or report_target) else None
    if json_target:
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
        if json_target == "-":
            sys.stdout.write(data.decode())
        else:
            from fhir_cyclo.export.writer import write_atomic

            Path(json_target).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(Path(json_target), data)
    if table:
        sys.stdout.write(to_table(cohort))
    if plot_dir or report_target:
        for line in publish(cohort, plot_dir=plot_dir, report=report_target, document=document):
            print(line, file=sys.stderr)
    if write_back:
        assert client is not None, "commands.check_score requires a server for --write-back"
        bundle = to_bundle(cohort)
        if bundle["entry"]:
            result = client.transaction(bundle)
            print(
                f"wrote back {len(bundle['entry'])} response Observation(s): "
                f"{getattr(result, 'created', '?')} created, {getattr(result, 'updated', '?')} "
                "updated",
                file=sys.stderr,
            )
        else:
            print("nothing to write back: no patient could be scored", file=sys.stderr)
    if not cohort.patients:
        print("fhir-cyclo: warning: no patient could be scored", file=sys.stderr)
    return 1 if bad_files else 0  # bad files were reported; the rest was scored


def _run_grouped(
    args: argparse.Namespace, items: Iterable[SourceItem], bad_files: list[Any]
) -> int:
    """`run` for file input without --plot/--report/--write-back/--patient/--identifier: the
    same output, in constant memory per patient group."""
    from fhir_cyclo.scoring.stream import score_groups, scratch, table, write_json

    def warn(note: Any) -> None:
        print(f"fhir-cyclo: warning: {note}", file=sys.stderr)

    with scratch() as raw_tmp:
        result = score_groups(
            items, Path(raw_tmp), strict=bool(getattr(args, "strict", False)), on_note=warn
        )
        print(
            f"{result.accounting.summary()}; {result.skipped} resource(s) skipped, "
            f"{result.notes} warning(s)",
            file=sys.stderr,
        )
        json_target = getattr(args, "json", None)
        if json_target == "-":
            sys.stdout.flush()
            write_json(result, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        elif json_target:
            target = Path(json_target)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            with partial.open("wb") as out:
                write_json(result, out)
            partial.replace(target)  # never a half-written --json file
        if getattr(args, "table", False) or not json_target:
            sys.stdout.write(table(result))
    if not result.patients:
        print("fhir-cyclo: warning: no patient could be scored", file=sys.stderr)
    return 1 if bad_files else 0  # bad files were reported; the rest was scored
