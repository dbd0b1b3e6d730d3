"""Group scoring input by patient out of core, so extraction holds one slice of patients at a time.

Between reading (`sources`) and extraction (`extract`). Scoring needs every resource of a
patient together, and files do not deliver them that way: a Bulk Data export puts each type in
its own file, so a patient's Observations come long before or after its Patient. Holding every
resource until the end grew about 26 KB per patient (1.3 GB at 50,000 patients).

Small inputs (under `IN_MEMORY_LIMIT` resources) stay in memory as one group, exactly as before.
Larger ones are spooled, in input order, to one temporary file (a line per resource: its raw
patient key, fullUrl and origin, then its compact JSON) while a small index of the Patients is
kept (anchor, fullUrl, identifiers, the key scoring merges on). A second pass sends each line to
one of N partition files by a hash of the key of the patient it belongs to, resolved the way
extraction resolves it (fullUrl, `Patient/id` in any absolute or versioned form, identifier
reference); N is chosen so a partition holds about `PARTITION_SIZE` resources. Each partition is
then read back and handed to extraction alone, with the Medications (few; referenced from any
patient) added to every one. Everything of one patient, and every Patient merged into it by a
shared identifier, is in one partition, so each partition scores exactly as the whole input
would for its patients; only the order of warnings differs (partition by partition).
Why files and not SQLite/DuckDB: the data is written once and read twice sequentially, with no
query; plain files do that at disk speed with nothing to install, and the index stays in memory.
"""

from __future__ import annotations

import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from fhir_cyclo.readers.fhir import SourceItem
from fhir_cyclo.scoring.reader import IDENTIFIER, gc_paused, raw_subject

# About 20 MB of parsed resources either way; at most _MAX_PARTITIONS files open at once.
IN_MEMORY_LIMIT = 20_000
PARTITION_SIZE = 20_000
_MAX_PARTITIONS = 512


def grouped(
    items: Iterable[SourceItem],
    *,
    in_memory_limit: int = IN_MEMORY_LIMIT,
    partition_size: int = PARTITION_SIZE,
    tmp_dir: str | Path | None = None,
) -> Iterator[list[SourceItem]]:
    """Groups of SourceItems, each closed under patient (see the module docstring)."""
    iterator = iter(items)
    buffer: list[SourceItem] = []
    for item in iterator:
        buffer.append(item)
        if len(buffer) >= in_memory_limit:
            break
    else:
        yield buffer
        return
    with tempfile.TemporaryDirectory(prefix="fhir-cyclo-score-", dir=tmp_dir) as tmp:
        spool = _Spool(Path(tmp))
        try:
            with gc_paused():
                for item in buffer:
                    spool.add(item)
                buffer.clear()
                for item in iterator:
                    spool.add(item)
        finally:
            spool.close()
        yield from spool.partitions(partition_size)


def _type_id(ref: str, resource_type: str) -> str | None:
    """ "Type/id" of a relative, absolute or versioned reference, as extraction reads it."""
    cut = ref.find("/_history/")
    head, _, rid = (ref if cut < 0 else ref[:cut]).rpartition("/")
    if rid and (head == resource_type or head.endswith("/" + resource_type)):
        return f"{resource_type}/{rid}"
    return None


class _Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self.shared: list[SourceItem] = []  # Medications: needed by any patient
        self.file: IO[bytes] = (folder / "spool").open("wb")
        self.patient_urls: dict[str, str] = {}  # Patient fullUrl -> anchor
        self.by_identifier: dict[str, str] = {}  # "system|value" -> first anchor
        self.merge_key: dict[str, str] = {}  # anchor -> scoring key, where they differ

    def add(self, item: SourceItem) -> None:
        resource, full_url, origin = item
        rtype = resource.get("resourceType")
        if rtype == "Medication":
            self.shared.append(item)
            return
        if rtype == "Patient":
            raw = self._patient(resource, full_url, origin)
        else:
            raw = raw_subject(resource)
        self.file.write(orjson.dumps([raw, full_url, origin]) + b"\t")
        self.file.write(orjson.dumps(resource) + b"\n")
        self.count += 1

    def _patient(self, resource: dict[str, Any], full_url: str | None, origin: str) -> str:
        rid = resource.get("id")
        anchor = f"Patient/{rid}" if rid else full_url or f"Patient (no id) in {origin}"
        if full_url:
            self.patient_urls[full_url] = anchor
        key = None
        for ident in resource.get("identifier") or ():
            if isinstance(ident, dict) and ident.get("value"):
                token = f"{ident.get('system') or ''}|{ident['value']}"
                self.by_identifier.setdefault(token, anchor)
                if key is None:  # scoring's patient key: the first identifier, as extract forms it
                    system, value = str(ident.get("system") or ""), str(ident["value"])
                    key = f"{system}|{value}" if system else value
        if key is not None:
            self.merge_key[anchor] = key
        return anchor

    def close(self) -> None:
        self.file.close()

    def _key(self, raw: str) -> str:
        anchor = self.patient_urls.get(raw)
        if anchor is None:
            if raw.startswith(IDENTIFIER):
                anchor = self.by_identifier.get(raw[len(IDENTIFIER) :])
            else:
                anchor = _type_id(raw, "Patient")
        if anchor is None:
            return raw  # unresolvable: extraction says so, wherever it lands
        # Patients sharing an identifier are merged by scoring: the same key, one partition.
        return self.merge_key.get(anchor, anchor)

    def partitions(self, partition_size: int) -> Iterator[list[SourceItem]]:
        n = min(_MAX_PARTITIONS, max(1, -(-self.count // max(1, partition_size))))
        parts = [(self.folder / f"part-{i}").open("wb") for i in range(n)]
        try:
            with (self.folder / "spool").open("rb") as spool:
                for line in spool:
                    header = line[: line.index(b"\t")]
                    raw = orjson.loads(header)[0]
                    parts[zlib.crc32(self._key(raw).encode()) % n].write(line)
        finally:
            for fh in parts:
                fh.close()
        (self.folder / "spool").unlink()
        for i in range(n):
            path = self.folder / f"part-{i}"
            items = list(self.shared)
            with path.open("rb") as part, gc_paused():
                for line in part:
                    cut = line.index(b"\t")
                    _, full_url, origin = orjson.loads(line[:cut])
                    items.append(SourceItem(orjson.loads(line[cut + 1 :]), full_url, origin))
            path.unlink()
            yield items
