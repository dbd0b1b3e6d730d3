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
from fhir_cyclo.report import plot, to_json, to_table
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.model import Note, ScoringInputs
from fhir_cyclo.scoring.rules import CohortScore, score
from fhir_cyclo.scoring.writeback import to_bundle


def _keep(
    cohort: CohortScore,
    patient: str | None,
    identifier: str | None,
    inputs: ScoringInputs | None = None,
) -> CohortScore:
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
        read = [
            p
            for p in (inputs.patients if inputs else ())
            if (wanted_ref and p.reference == wanted_ref) or (identifier and p.key == identifier)
        ]
        if read:
            # Read but not scored: say why, with what scoring found (issue 24).
            from fhir_cyclo.report.explain import explain_patient, to_text

            found = [explain_patient(p) for p in read]
            detail = to_text(found).split("\n", 1)[1].rstrip()
            raise InputError(f"{what}: read, but not scored:\n{detail}", source="score")
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

    notices: list[str] = []

    def notice(text: str) -> None:
        notices.append(text)
        print(f"fhir-cyclo: warning: {text}", file=sys.stderr)

    explain = bool(getattr(args, "explain", False))
    in_memory = (  # these need every patient's full inputs at the end
        patient
        or identifier
        or explain
        or getattr(args, "plot", None)
        or getattr(args, "report", None)
        or getattr(args, "write_back", False)
    )
    if paths and not in_memory:
        # Files of any size: scored in patient groups, out of core (see grouping.py).
        return _run_grouped(
            args, read_paths(paths, on_error=bad, on_notice=notice), bad_files, notices
        )
    if paths:
        items = read_paths(paths, on_error=bad, on_notice=notice)
    elif client is not None:
        items = iter_from_server(client, patient=patient, identifier=identifier)
    else:
        raise InputError("give FHIR files or folders, or --server", source="score")
    inputs = extract(items, strict=bool(getattr(args, "strict", False)))
    cohort = score(inputs)
    if paths:
        cohort = _keep(cohort, patient, identifier, inputs)

    print_notes(cohort.notes, verbose=bool(getattr(args, "verbose", False)))
    skipped = sum(1 for n in cohort.notes if "skipped" in n.message)
    skipped += sum(1 for n in notices if "skipped" in n)
    print(
        f"fhir-cyclo: {cohort.accounting.summary()}; {skipped} resource(s) skipped, "
        f"{len(cohort.notes) + len(notices)} warning(s)",
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
    if explain:
        from fhir_cyclo.report.explain import explain as explain_inputs
        from fhir_cyclo.report.explain import to_text

        explained = explain_inputs(inputs)
        if document is not None:
            document["explain"] = explained
        if json_target != "-":
            sys.stdout.write(to_text(explained, cohort))
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
    if plot_dir:
        written = plot(cohort, plot_dir)
        print(f"wrote {len(written)} plot(s) to {plot_dir}", file=sys.stderr)
    if report_target:
        from fhir_cyclo.report import html

        html.write(cohort, report_target, document=document)
        print(f"wrote the report to {report_target}", file=sys.stderr)
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


# Warnings that repeat per patient or resource ("no usable MedicationStatement; MedicationRequest
# used" for every patient of an EHR export) are one line per kind with a count; -v lists each.
_SHOWN_PER_KIND = 1


def print_notes(notes: list[Note], *, verbose: bool) -> None:
    """Every warning with -v; else one line per (field, message) kind with its count."""
    if verbose:
        for note in notes:
            print(f"fhir-cyclo: warning: {note}", file=sys.stderr)
        return
    kinds: dict[tuple[str, str], list[Note]] = {}
    for note in notes:
        kinds.setdefault((note.path, note.message), []).append(note)
    for group in kinds.values():
        if len(group) <= _SHOWN_PER_KIND:
            for note in group:
                print(f"fhir-cyclo: warning: {note}", file=sys.stderr)
        else:
            first = group[0]
            what = f"{first.path}: {first.message}" if first.path else first.message
            print(
                f"fhir-cyclo: warning: {what} ({len(group)} times, e.g. {first.source}; "
                "-v lists each)",
                file=sys.stderr,
            )


def _run_grouped(
    args: argparse.Namespace,
    items: Iterable[SourceItem],
    bad_files: list[Any],
    notices: list[str] | None = None,
) -> int:
    """`run` for file input without --plot/--report/--write-back/--patient/--identifier: the
    same output, in constant memory per patient group."""
    from fhir_cyclo.scoring.stream import score_groups, scratch, table, write_json

    with scratch() as raw_tmp:
        result = score_groups(items, Path(raw_tmp), strict=bool(getattr(args, "strict", False)))
        print_notes(result.warnings, verbose=bool(getattr(args, "verbose", False)))
        extra = notices or []
        print(
            f"{result.accounting.summary()}; "
            f"{result.skipped + sum(1 for n in extra if 'skipped' in n)} resource(s) skipped, "
            f"{result.notes + len(extra)} warning(s)",
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
