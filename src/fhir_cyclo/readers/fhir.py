"""Read FHIR resources for scoring from files, folders, NDJSON or a FHIR server (paged searches)."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import orjson

from fhir_cyclo.core.errors import InputError
from fhir_cyclo.core.scoring_config import ScoringConfig, load_config

SUFFIXES = (".json", ".ndjson")
_BOM = b"\xef\xbb\xbf"
# Medication ids per `_id` search: keeps the query string well under common URL limits.
_ID_CHUNK = 50


class SourceItem(NamedTuple):
    """One resource as read, with the Bundle entry's fullUrl (if any) and where it came from."""

    resource: dict[str, Any]
    full_url: str | None
    origin: str


class SearchClient(Protocol):
    """The one client method scoring needs: a paged search yielding resources (or page Bundles)."""

    def search(self, resource_type: str, params: dict[str, str]) -> Iterator[dict[str, Any]]: ...


OnError = Callable[[InputError], None]
OnNotice = Callable[[str], None]  # a warning that does not make the run fail


class NotFhir(InputError):
    """A document that is JSON but not FHIR (a client's log, a Bundle entry object): skipped
    with one notice, not an error (issue 24: reading is forgiving, reporting exact)."""


def iter_document(doc: Any, origin: str, on_notice: OnNotice | None = None) -> Iterator[SourceItem]:
    """Resources in a parsed JSON document: any Bundle type (nested too), a resource, or a list.

    Bundle entries with no resource that nothing explains (no DELETE request, no response) are
    named through `on_notice` and skipped.
    """
    if isinstance(doc, list):
        for item in doc:
            yield from iter_document(item, origin, on_notice)
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        if isinstance(doc, dict) and "identifier" in doc and "patient" in doc:
            raise InputError(
                "a fhir-cyclo case file, not FHIR: score reads FHIR; run `fhir-cyclo export "
                "FILE --out DIR` first, then score DIR",
                source=origin,
            )
        raise NotFhir("not a FHIR resource (no resourceType)", source=origin)
    if doc["resourceType"] == "OperationOutcome":
        # A saved error response where data was expected: say what the server said.
        issues = doc.get("issue") or [{}]
        text = "; ".join(str(i.get("diagnostics") or i.get("code") or "") for i in issues)
        raise InputError(f"an OperationOutcome, not FHIR data: {text}", source=origin)
    if doc["resourceType"] != "Bundle":
        yield SourceItem(doc, None, origin)
        return
    entries = doc.get("entry")
    if entries is None:  # an empty search page has no entry at all
        return
    if not isinstance(entries, list):
        raise InputError("must be a list", source=origin, path="Bundle.entry")
    for i, entry in enumerate(entries):
        # Entries without a resource (DELETE in a transaction, history tombstones) carry nothing.
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if resource is None:
            if on_notice is not None and not _explained(entry):
                on_notice(f"{origin}: Bundle.entry[{i}]: no resource; skipped (malformed entry)")
            continue
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise InputError("not a FHIR resource", source=origin, path=f"entry[{i}].resource")
        if resource["resourceType"] == "Bundle":
            yield from iter_document(resource, origin, on_notice)
        else:
            yield SourceItem(resource, entry.get("fullUrl"), origin)


def _explained(entry: Any) -> bool:
    """An entry that rightly has no resource: a DELETE (transaction, history) or a response."""
    if not isinstance(entry, dict):
        return False
    request = entry.get("request")
    method = request.get("method") if isinstance(request, dict) else None
    return method == "DELETE" or isinstance(entry.get("response"), dict)


def _json_file(path: Path, on_notice: OnNotice | None = None) -> Iterator[SourceItem]:
    yield from iter_document(read_json_bytes(path), str(path), on_notice)


def _open_ndjson(path: Path) -> IO[bytes] | gzip.GzipFile:
    # Bulk Data servers may hand out gzip files; ".ndjson.gz" is read as the NDJSON inside.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _ndjson_file(
    path: Path, on_error: OnError | None = None, on_notice: OnNotice | None = None
) -> Iterator[SourceItem]:
    try:
        handle = _open_ndjson(path)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=str(path)) from exc
    fhir_seen = False
    with handle:
        try:
            for number, raw in enumerate(handle, 1):
                line = raw[len(_BOM) :] if number == 1 and raw.startswith(_BOM) else raw
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                    items = list(iter_document(doc, f"{path}:{number}", on_notice))
                except orjson.JSONDecodeError as exc:
                    error = InputError(
                        f"not valid JSON: {exc}", source=str(path), path=f"line {number}"
                    )
                    if on_error is None:
                        raise error from exc
                    on_error(error)  # one bad line loses that line only
                    continue
                except NotFhir as exc:
                    if fhir_seen or on_notice is None:
                        if on_error is None:
                            raise
                        on_error(exc)  # a non-resource line among resources is an error
                        continue
                    # The first line is JSON but no resource (a client's log.ndjson): the whole
                    # file is not FHIR data.
                    on_notice(f"{path}: skipped: not FHIR resources (line {number}: {exc.message})")
                    return
                except InputError as exc:
                    if on_error is None:
                        raise
                    on_error(exc)
                    continue
                fhir_seen = True
                yield from items
        except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
            error = InputError(f"cannot read: {exc}", source=str(path))
            if on_error is None:
                raise error from exc
            on_error(error)


def _is_fhir_file(path: Path) -> bool:
    name = path.name.lower()
    return path.suffix.lower() in SUFFIXES or name.endswith(".ndjson.gz")


def read_manifest(path: Path) -> tuple[list[Path], list[Path]]:
    """The (output, error) files a Bulk Data manifest.json names, resolved in its folder.

    A manifest `url` that is a relative name is that file; an absolute URL is matched by the
    last segment of its path (how downloaders usually name the files). A listed file that is
    not in the folder is an InputError naming the manifest entry.
    """
    try:
        doc = orjson.loads(path.read_bytes().removeprefix(_BOM))
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=str(path)) from exc
    except orjson.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", source=str(path)) from exc
    if not is_manifest(doc):
        raise InputError(
            "not a Bulk Data manifest (needs transactionTime and an output list)", source=str(path)
        )
    found: dict[str, list[Path]] = {"output": [], "error": []}
    for key, files in found.items():
        entries = doc.get(key) or []
        if not isinstance(entries, list):
            raise InputError("must be a list", source=str(path), path=key)
        for i, entry in enumerate(entries):
            url = entry.get("url") if isinstance(entry, dict) else None
            if not isinstance(url, str) or not url:
                raise InputError("no url", source=str(path), path=f"{key}[{i}].url")
            try:
                parts = urlsplit(url)
            except ValueError:  # "https://[x": an invalid IPv6 host (found by fuzzing)
                raise InputError(
                    "not a valid URL", source=str(path), path=f"{key}[{i}].url"
                ) from None
            name = url if not parts.scheme else parts.path.rstrip("/").rpartition("/")[2]
            local = path.parent / name
            if not name or not local.is_file() or local.parent.resolve() != path.parent.resolve():
                raise InputError(
                    f"{url} is not in {path.parent} (download it, or fix the manifest)",
                    source=str(path),
                    path=f"{key}[{i}].url",
                )
            files.append(local)
    return found["output"], found["error"]


def manifest_extras(path: Path) -> tuple[set[str], list[Path]]:
    """A manifest's output types (with resources) and its `deleted` files present in its folder.

    The `deleted` array (Bulk Data IG v2) lists NDJSON files of Bundles whose entries name
    resources deleted on the server (`request.url` "Type/id"); fhir-cyclo writes it local.
    """
    doc = orjson.loads(path.read_bytes().removeprefix(_BOM))  # read_manifest checked it
    types = {
        str(e.get("type"))
        for e in doc.get("output") or []
        if isinstance(e, dict) and e.get("count") != 0
    }
    files: list[Path] = []
    deleted = doc.get("deleted")
    for entry in deleted if isinstance(deleted, list) else []:
        url = entry.get("url") if isinstance(entry, dict) else None
        name = str(url).rpartition("/")[2] if isinstance(url, str) else ""
        local = path.parent / name
        if name and local.is_file() and local.parent.resolve() == path.parent.resolve():
            files.append(local)
    return types, files


def deleted_keys(path: Path) -> set[str]:
    """ "Type/id" of every resource a Bulk Data `deleted` file names."""
    keys: set[str] = set()
    with _open_ndjson(path) as handle:
        for raw in handle:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            entries = doc.get("entry") if isinstance(doc, dict) else None
            for entry in entries if isinstance(entries, list) else []:
                request = entry.get("request") if isinstance(entry, dict) else None
                url = request.get("url") if isinstance(request, dict) else None
                if isinstance(url, str) and url.count("/") == 1:
                    keys.add(url)
    return keys


def is_manifest(doc: Any) -> bool:
    """A Bulk Data export manifest: an object with transactionTime and an output list."""
    return (
        isinstance(doc, dict)
        and "resourceType" not in doc
        and "transactionTime" in doc
        and isinstance(doc.get("output"), list)
    )


def export_errors(path: Path) -> list[str]:
    """One line per issue in a Bulk Data error file (NDJSON of OperationOutcomes)."""
    lines: list[str] = []
    with _open_ndjson(path) as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                outcome = orjson.loads(raw)
            except orjson.JSONDecodeError:
                lines.append(f"{path}:{number}: not valid JSON")
                continue
            for issue in (outcome.get("issue") if isinstance(outcome, dict) else None) or [{}]:
                text = issue.get("diagnostics") or (issue.get("details") or {}).get("text")
                lines.append(
                    f"{path}:{number}: {issue.get('severity', '?')} {issue.get('code', '?')}"
                    + (f": {text}" if text else "")
                )
    return lines


def _is_ndjson_copy(file: Path, folder: Path) -> bool:
    """`export --ndjson` writes DIR/*.json Bundles and their copy in DIR/ndjson/: scanning DIR
    reads the Bundles only, so each resource (and warning) counts once. Naming DIR/ndjson itself
    reads the NDJSON."""
    parent = file.parent
    return (
        file.name.lower().endswith((".ndjson", ".ndjson.gz"))
        and parent.name == "ndjson"
        and parent != folder
        and any(parent.parent.glob("*.json"))
    )


def _folder(
    folder: Path,
    on_error: OnError | None,
    on_notice: OnNotice | None,
    deleted: set[str] | None = None,
    list_skipped: bool = True,
) -> Iterator[Path]:
    """The FHIR files of a folder tree in sorted order; manifests decide in their folder.
    `deleted` gets the "Type/id" of resources the manifests list as deleted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    listed: set[Path] = set()
    reported: set[Path] = set()  # error files: reported, never read as data
    manifest_dirs: set[Path] = set()
    for manifest in (p for p in files if p.name == "manifest.json"):
        try:
            outputs, errors = read_manifest(manifest)
        except InputError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        manifest_dirs.add(manifest.parent)
        listed.update(outputs)
        types, deleted_files = manifest_extras(manifest)
        for rtype, why in (("Patient", "scoring needs them"), ("Observation", "no lab values")):
            if rtype not in types and on_notice is not None:
                on_notice(f"{manifest}: the Bulk Data export has no {rtype} resources ({why})")
        for deleted_file in deleted_files:
            reported.add(deleted_file)
            if deleted is not None:
                deleted.update(deleted_keys(deleted_file))
        for error_file in errors:
            reported.add(error_file)
            if on_notice is not None:
                issues = export_errors(error_file)
                on_notice(f"{error_file}: export error file, {len(issues)} issue(s)")
                for line in issues:
                    on_notice(line)
    skipped: list[Path] = []
    copies: set[Path] = set()
    for file in files:
        if file.name.startswith("."):
            continue  # hidden files (download state, editor swap files) are nobody's data
        if file.parent in manifest_dirs:
            if file in listed:
                if file.name != "manifest.json" and _is_fhir_file(file):
                    yield file
            elif file.name != "manifest.json" and file not in reported:
                skipped.append(file)
            continue
        if _is_ndjson_copy(file, folder):
            copies.add(file.parent)
        elif _is_fhir_file(file):
            yield file
        else:
            skipped.append(file)
    for copy in sorted(copies):
        if on_notice is not None:
            on_notice(f"{copy}: skipped: the NDJSON copy of the Bundles in {copy.parent}")
    if skipped and on_notice is not None and list_skipped:
        names = ", ".join(str(p.relative_to(folder)) for p in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        on_notice(f"{folder}: skipped {len(skipped)} non-FHIR file(s): {names}{more}")


def read_paths(
    paths: Iterable[str | Path],
    on_error: OnError | None = None,
    on_notice: OnNotice | None = None,
) -> Iterator[SourceItem]:
    """Resources from files and folders (recursively: *.json, *.ndjson, *.ndjson.gz, sorted).

    A named file is read whatever its suffix (NDJSON when it ends in .ndjson, else JSON). A
    folder holding a Bulk Data `manifest.json` is read as the manifest says: its `output` files
    are read, its `error` files reported through `on_notice`, anything else in that folder is
    skipped. Other non-FHIR files are listed once through `on_notice`, never an error.
    Raises InputError naming the file (and line for NDJSON) for missing files and bad JSON; with
    `on_error`, reports it there instead and goes on with the next file (or NDJSON line), so the
    valid data in the same run is still scored.
    """
    deleted: set[str] = set()  # resources a Bulk Data export lists as deleted: not read
    for file in fhir_files(paths, on_error, on_notice, deleted=deleted):
        if is_ndjson(file):
            yield from _not_deleted(_ndjson_file(file, on_error, on_notice), deleted, on_notice)
            continue
        try:
            # A JSON file is one document: take all of it or none of it.
            items = list(_json_file(file, on_notice))
        except NotFhir as exc:
            if on_notice is None:
                raise
            on_notice(f"{exc}; skipped")
            continue
        except InputError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        yield from items


def is_ndjson(path: Path) -> bool:
    """Read as NDJSON (one resource a line): `.ndjson` and Bulk Data's `.ndjson.gz`."""
    return path.name.lower().endswith((".ndjson", ".ndjson.gz"))


def fhir_files(
    paths: Iterable[str | Path],
    on_error: OnError | None = None,
    on_notice: OnNotice | None = None,
    *,
    list_skipped: bool = True,
    deleted: set[str] | None = None,
) -> Iterator[Path]:
    """The files `read_paths` reads, in its order (the one discovery rule of score and validate).

    A named file is taken whatever its suffix; a folder (or a named manifest.json) is scanned
    as `read_paths` says. `list_skipped=False` leaves the one "skipped non-FHIR file(s)" notice
    to a caller that reads some of those files itself (validate reads case files too).
    `deleted` gets the "Type/id" of resources Bulk Data manifests list as deleted.
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from _folder(path, on_error, on_notice, deleted, list_skipped)
        elif path.name == "manifest.json" and path.is_file():
            yield from _folder(path.parent, on_error, on_notice, deleted, list_skipped)
        elif path.exists():
            yield path
        else:
            raise InputError("no such file or folder", source=str(path))


def read_json_bytes(path: Path) -> Any:
    """A JSON file parsed (a leading BOM dropped); InputError naming the file otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=str(path)) from exc
    if data.startswith(_BOM):  # Windows editors write one; orjson rejects it
        data = data[len(_BOM) :]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", source=str(path)) from exc


def ndjson_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of each non-blank line of an NDJSON file (.gz too), BOM dropped.

    Raises InputError naming the file when it cannot be opened or a .gz is corrupt.
    """
    try:
        handle = _open_ndjson(path)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=str(path)) from exc
    with handle:
        try:
            for number, raw in enumerate(handle, 1):
                line = raw[len(_BOM) :] if number == 1 and raw.startswith(_BOM) else raw
                if line.strip():
                    yield number, line
        except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
            raise InputError(f"cannot read: {exc}", source=str(path)) from exc


def _not_deleted(
    items: Iterator[SourceItem], deleted: set[str], on_notice: OnNotice | None
) -> Iterator[SourceItem]:
    skipped = 0
    for item in items:
        resource = item.resource
        if deleted and f"{resource.get('resourceType')}/{resource.get('id')}" in deleted:
            skipped += 1
            continue
        yield item
    if skipped and on_notice is not None:
        on_notice(f"{skipped} resource(s) listed as deleted by the Bulk Data export: not read")


def _search(
    client: SearchClient, resource_type: str, params: dict[str, str]
) -> Iterator[SourceItem]:
    origin = f"server {resource_type}?" + "&".join(f"{k}={v}" for k, v in params.items())
    for item in client.search(resource_type, params):
        # Tolerate a client that yields whole searchset pages instead of their resources.
        if item.get("resourceType") == "Bundle":
            for found in iter_document(item, origin):
                if found.resource.get("resourceType") != "OperationOutcome":
                    yield found
        else:
            yield SourceItem(item, None, origin)


def _medication_ids(resource: dict[str, Any]) -> Iterator[str]:
    ref = (resource.get("medicationReference") or {}).get("reference")
    if isinstance(ref, str) and not ref.startswith("#"):
        head, _, tail = ref.split("/_history/")[0].rpartition("/")
        if head.endswith("Medication") and tail:
            yield tail


def _for_patients(
    client: SearchClient, subject: dict[str, str], lab_codes: str
) -> Iterator[SourceItem]:
    medication_ids: set[str] = set()
    yield from _search(client, "Condition", subject)
    for resource_type in ("MedicationStatement", "MedicationAdministration", "MedicationRequest"):
        for item in _search(client, resource_type, subject):
            medication_ids.update(_medication_ids(item.resource))
            yield item
    # Filtering labs by code on the server keeps a cohort-wide search from pulling every result.
    yield from _search(client, "Observation", {**subject, "code": lab_codes})
    yield from _search(client, "Procedure", subject)
    ids = sorted(medication_ids)
    for i in range(0, len(ids), _ID_CHUNK):
        yield from _search(client, "Medication", {"_id": ",".join(ids[i : i + _ID_CHUNK])})


def iter_from_server(
    client: SearchClient,
    *,
    patient: str | None = None,
    identifier: str | None = None,
    config: ScoringConfig | None = None,
) -> Iterator[SourceItem]:
    """Resources for scoring from a FHIR server through `client.search` (paged by the client).

    `patient` is a Patient id (or "Patient/<id>"), `identifier` a token ("system|value"); with
    neither, every Patient and every relevant resource is read. Searched: Patient, Condition,
    MedicationStatement, MedicationAdministration, MedicationRequest, Observation (only the
    scored LOINC codes), Procedure, then the Medications the medication resources reference.
    Raises InputError when the patient or identifier matches no Patient.
    """
    cfg = config or load_config()
    lab_codes = ",".join(
        f"{cfg.loinc}|{code}" for analyte in cfg.analytes.values() for code in analyte.loinc
    )
    if patient is None and identifier is None:
        yield from _search(client, "Patient", {})
        yield from _for_patients(client, {}, lab_codes)
        return
    if patient is not None:
        params = {"_id": patient.removeprefix("Patient/")}
        wanted = f"patient {patient!r}"
    else:
        params = {"identifier": str(identifier)}
        wanted = "the identifier given"  # not echoed: identifiers are PHI
    ids: list[str] = []
    for item in _search(client, "Patient", params):
        if item.resource.get("resourceType") == "Patient" and item.resource.get("id"):
            ids.append(str(item.resource["id"]))
            yield item
    if not ids:
        raise InputError(f"no Patient found for {wanted}", source="server")
    for pid in ids:
        yield from _for_patients(client, {"subject": f"Patient/{pid}"}, lab_codes)
