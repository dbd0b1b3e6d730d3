"""`fhir-cyclo score`: read FHIR (files, a server, Bulk Data), score, then print/plot/write back."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_cyclo.cli import bulk_export, options, output, preflight
from fhir_cyclo.cli.options import SERVER_ENV, HelpFormatter, ServerOptions, add_verbosity
from fhir_cyclo.core.errors import InputError, UsageError

if TYPE_CHECKING:
    from fhir_cyclo.client.fhir import FhirClient
    from fhir_cyclo.readers.fhir import SourceItem
    from fhir_cyclo.scoring.extract import Note
    from fhir_cyclo.scoring.model import ScoringInputs
    from fhir_cyclo.scoring.rules import CohortScore

NAME = "score"
# What an existing --json / --report file must hold to be replaced: only what score wrote.
JSON_MARKER = b'"fhir-cyclo-score/'
REPORT_MARKER = b'<meta name="generator" content="fhir-cyclo score report">'


@dataclass(frozen=True)
class ScoreOutputs:
    """Where the results go; `json` "-" is stdout. Nothing asked: the table on stdout."""

    json: str | None = None
    table: bool = False
    plot: Path | None = None
    report: Path | None = None
    write_back: bool = False


@dataclass(frozen=True)
class ScoreOptions:
    paths: tuple[str, ...] = ()
    server: ServerOptions = field(default_factory=ServerOptions)  # url None: files only
    patient: str | None = None
    identifier: str | None = None
    outputs: ScoreOutputs = field(default_factory=ScoreOutputs)
    strict: bool = False
    explain: bool = False
    bulk: bulk_export.BulkOptions | None = None  # server mode via $export into bulk_dir
    bulk_dir: Path = bulk_export.DEFAULT_BULK_DIR


def register(sub: argparse._SubParsersAction[Any], help_line: str) -> None:
    p = sub.add_parser(
        NAME,
        help=help_line,
        description="Score response to cyclosporine (mappings/scoring.yaml) from FHIR Bundle / "
        "NDJSON files or folders, or from a server (--server). Data (--json -, --table) goes to "
        "stdout; warnings and the summary to stderr. Case files are not FHIR: export them first.",
        formatter_class=HelpFormatter,
    )
    add_verbosity(p, top=False)
    p.add_argument("paths", nargs="*", metavar="PATH", help="Bundle JSON / NDJSON files or folders")
    options.add_server_options(p)
    p.add_argument(
        "--patient", metavar="Patient/ID", help="one Patient (server: searched; files: kept)"
    )
    p.add_argument(
        "--identifier", metavar="SYSTEM|VALUE", help="one Patient by identifier (as --patient)"
    )
    p.add_argument("--json", metavar="FILE", help="JSON result to FILE, or `--json -` for stdout")
    p.add_argument(
        "--table", action="store_true", help="Table 2 style summary (the default output)"
    )
    p.add_argument("--plot", metavar="DIR", help="one PNG per patient in DIR (created if missing)")
    p.add_argument(
        "--report", metavar="FILE", help="one self-contained HTML report (summary, plots, reasons)"
    )
    p.add_argument(
        "--write-back",
        action="store_true",
        help="store one response Observation per patient and timepoint on the server",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="also validate each resource with fhir.resources R4B; any invalid: all listed, "
        "nothing scored, exit 1",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="per patient: diagnosis and code, cyclosporine start and its resource, results, "
        "results skipped and why, near-miss codes (text on stdout; with --json, its `explain`)",
    )
    p.add_argument("--bulk", action="store_true", help="server mode: read via Bulk Data $export")
    p.add_argument(
        "--bulk-dir",
        default=str(bulk_export.DEFAULT_BULK_DIR),
        help="--bulk: export folder (kept; an interrupted export resumes)",
    )
    p.add_argument("--no-progress", action="store_true", help="--bulk: no progress display")
    bulk_export.add_bulk_options(p)


def parse(ns: argparse.Namespace) -> ScoreOptions:
    """Every usage error of `score`, before any work."""
    preflight.inputs_exist(ns.paths)
    preflight.not_case_input(ns.paths)
    if ns.bulk and ns.paths:
        raise UsageError("--bulk reads from a server: give --server and no files")
    bulk = None
    if ns.bulk:
        bulk = bulk_export.bulk_options(ns)
        preflight.output_folder(ns.bulk_dir, "--bulk-dir")
    if ns.patient and ns.identifier:
        raise UsageError("give --patient or --identifier, not both")
    if ns.paths and ns.server and not ns.write_back:
        raise UsageError(
            "give FHIR files/folders or --server, not both (with files, --server is only used "
            "by --write-back)"
        )
    server = options.server_options(
        ns, required=bool(ns.write_back), why="--write-back needs a server"
    )
    if not ns.paths and not server.url:
        raise UsageError(
            "nothing to score: give Bundle/NDJSON files or folders, or --server URL (or set "
            f"${SERVER_ENV})"
        )
    preflight.one_stdout([("--json -", ns.json == "-"), ("--table", ns.table)])
    inputs = [*ns.paths, *([ns.bulk_dir] if ns.bulk else [])]  # --bulk-dir is read back
    named = [(o, v) for o, v in (("--json", ns.json), ("--report", ns.report)) if v]
    if ns.json and ns.json != "-":
        preflight.output_file(ns.json, "--json", inputs, marker=JSON_MARKER)
    if ns.plot:
        preflight.output_folder(ns.plot, "--plot", inputs)
        named.append(("--plot", ns.plot))
    if ns.report:
        preflight.output_file(ns.report, "--report", inputs, marker=REPORT_MARKER)
    for i, (option, value) in enumerate(named):
        for other, other_value in named[i + 1 :]:
            if value != "-" and Path(value).resolve() == Path(other_value).resolve():
                raise UsageError(f"{option} and {other} name the same path {value}")
    return ScoreOptions(
        paths=tuple(ns.paths),
        server=server,
        patient=ns.patient,
        identifier=ns.identifier,
        outputs=ScoreOutputs(
            json=ns.json,
            table=bool(ns.table),
            plot=Path(ns.plot) if ns.plot else None,
            report=Path(ns.report) if ns.report else None,
            write_back=bool(ns.write_back),
        ),
        strict=bool(ns.strict),
        explain=bool(ns.explain),
        bulk=bulk,
        bulk_dir=Path(ns.bulk_dir),
    )


def run(opts: ScoreOptions, client: FhirClient | Any | None = None) -> int:
    """Run `score`; `client` (a FhirClient or a stand-in) is made from opts.server if needed.

    Files win over the server when both are given (the server is then used for --write-back
    only). Warnings go to stderr; --json/--table to stdout (or the --json FILE).
    """
    needs_server = not opts.paths or opts.outputs.write_back or opts.bulk is not None
    if client is None and needs_server:
        client = options.make_client(opts.server)
        client.capabilities()  # fail fast (exit 3, "cannot reach FHIR server ...") before work
    paths = list(opts.paths)
    if opts.bulk is not None:
        assert client is not None
        bulk_export.export(opts.bulk, client, opts.bulk_dir)
        paths = [str(opts.bulk_dir)]  # then scored like any Bulk Data folder
    return _score(opts, paths, client)


def _score(opts: ScoreOptions, paths: list[str], client: Any | None) -> int:
    from fhir_cyclo.readers.fhir import iter_from_server, read_paths
    from fhir_cyclo.scoring.extract import extract
    from fhir_cyclo.scoring.rules import score

    out = opts.outputs
    items: Iterable[SourceItem]
    bad_files: list[InputError] = []

    def bad(error: InputError) -> None:
        bad_files.append(error)
        output.error(str(error))

    notices: list[str] = []

    def notice(text: str) -> None:
        notices.append(text)
        output.warn(text)

    in_memory = (  # these need every patient's full inputs at the end
        opts.patient or opts.identifier or opts.explain or out.plot or out.report or out.write_back
    )
    if paths and not in_memory:
        # Files of any size: scored in patient groups, out of core (see report/stream.py).
        return _run_grouped(
            opts, read_paths(paths, on_error=bad, on_notice=notice), bad_files, notices
        )
    if paths:
        items = read_paths(paths, on_error=bad, on_notice=notice)
    elif client is not None:
        items = iter_from_server(client, patient=opts.patient, identifier=opts.identifier)
    else:
        raise InputError("give FHIR files or folders, or --server", source="score")
    inputs = extract(items, strict=opts.strict)
    cohort = score(inputs)
    if paths:
        cohort = _keep(cohort, opts.patient, opts.identifier, inputs)

    from fhir_cyclo.report.document import logged, note_patients

    print_notes([logged(n, t) for t, n in zip(note_patients(cohort), cohort.notes, strict=True)])
    skipped = sum(1 for n in cohort.notes if "skipped" in n.message)
    skipped += sum(1 for n in notices if "skipped" in n)
    output.say(
        f"{cohort.accounting.summary()}; {skipped} resource(s) skipped, "
        f"{len(cohort.notes) + len(notices)} warning(s)"
    )
    explained = None
    if opts.explain:
        from fhir_cyclo.report.explain import explain, to_text

        explained = explain(inputs)
        if out.json != "-":
            output.data(to_text(explained, cohort))
    _write(cohort, out, client, explained)
    if not cohort.patients:
        output.warn("no patient could be scored")
    return output.EXIT_FAILED_ITEMS if bad_files else output.EXIT_OK  # the rest was scored


def _write(
    cohort: CohortScore, out: ScoreOutputs, client: Any | None, explained: Any = None
) -> None:
    import orjson

    from fhir_cyclo.report import to_json, to_table
    from fhir_cyclo.scoring.writeback import to_bundle

    table = out.table or not (
        out.json or out.plot or out.report or out.write_back or explained is not None
    )
    document = to_json(cohort) if (out.json or out.report) else None
    if document is not None and explained is not None:
        document["explain"] = explained
    if out.json:
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
        if out.json == "-":
            output.data(data.decode())
        else:
            from fhir_cyclo.export.writer import write_atomic

            Path(out.json).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(Path(out.json), data)
            output.wrote("the JSON result", out.json)
    if table:
        output.data(to_table(cohort))
    if out.plot or out.report:
        from fhir_cyclo.report.html import publish

        # One drawing per patient, shared by --plot and --report.
        for line in publish(cohort, plot_dir=out.plot, report=out.report, document=document):
            output.say(line)
    if out.write_back:
        assert client is not None, "parse requires a server for --write-back"
        bundle = to_bundle(cohort)
        if bundle["entry"]:
            result = client.transaction(bundle)
            output.say(
                f"wrote back {len(bundle['entry'])} response Observation(s): "
                f"{getattr(result, 'created', '?')} created, {getattr(result, 'updated', '?')} "
                "updated"
            )
        else:
            output.say("nothing to write back: no patient could be scored")


def _keep(
    cohort: CohortScore,
    patient: str | None,
    identifier: str | None,
    inputs: ScoringInputs | None = None,
) -> CohortScore:
    """File mode: --patient/--identifier narrow the scored patients instead of the search."""
    from fhir_cyclo.scoring.rules import CohortScore

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


# Warnings that repeat per patient or resource ("no usable MedicationStatement; MedicationRequest
# used" for every patient of an EHR export) are one line per kind with a count; -v lists each.
_SHOWN_PER_KIND = 1
_TOKEN = re.compile(r"\bp-[0-9a-f]{8}\b")


def print_notes(notes: list[Note]) -> None:
    """Every warning with -v; else one line per (field, message) kind with its count."""
    if output.is_verbose():
        for note in notes:
            output.warn(str(note))
        return
    kinds: dict[tuple[str, str], list[Note]] = {}
    for note in notes:
        kinds.setdefault((note.path, note.message), []).append(note)
    for group in kinds.values():
        if len(group) <= _SHOWN_PER_KIND:
            for note in group:
                output.warn(str(note))
        else:
            first = group[0]
            what = f"{first.path}: {first.message}" if first.path else first.message
            # Name the patients by token (never an identifier), so the line leads to the cards.
            tokens = sorted({t for n in group for t in _TOKEN.findall(str(n))})
            if tokens:
                shown = ", ".join(tokens[:3]) + (", ..." if len(tokens) > 3 else "")
                where = f"in {len(tokens)} patient(s): {shown}"
            else:
                where = f"e.g. {first.source}"
            output.warn(f"{what} ({len(group)} times {where}; -v lists each)")


def _run_grouped(
    opts: ScoreOptions,
    items: Iterable[SourceItem],
    bad_files: list[Any],
    notices: list[str] | None = None,
) -> int:
    """`_score` for file input without --plot/--report/--write-back/--patient/--identifier: the
    same output, in constant memory per patient group."""
    from fhir_cyclo.report.stream import score_groups, scratch, table, write_json

    json_target = opts.outputs.json
    extra = notices if notices is not None else []  # filled while the items are read
    with scratch() as raw_tmp:
        shown: list[Note] = []  # each led by its patient's token
        result = score_groups(items, Path(raw_tmp), strict=opts.strict, on_note=shown.append)
        print_notes(shown)
        output.say(
            f"{result.accounting.summary()}; "
            f"{result.skipped + sum(1 for n in extra if 'skipped' in n)} resource(s) skipped, "
            f"{result.notes + len(extra)} warning(s)"
        )
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
            output.wrote("the JSON result", target)
        if opts.outputs.table or not json_target:
            output.data(table(result))
    if not result.patients:
        output.warn("no patient could be scored")
    return output.EXIT_FAILED_ITEMS if bad_files else output.EXIT_OK  # the rest was scored
