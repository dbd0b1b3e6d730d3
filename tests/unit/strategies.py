"""Hypothesis strategies that build valid Cases from the terminology tables."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.terminology import terminology

T = terminology()
# Other spellings a case file may use for each canonical unit (UCUM codes and lab aliases).
_SAME_DIMENSION: dict[str | None, tuple[str, ...]] = {
    "10*9/L": ("10*3/uL", "K/uL", "/mm3", "10*3/mm3", "x10^9/L"),
    "/uL": ("10*9/L", "10*4/uL", "/mm3"),
    "g/dL": ("g/L", "g/dl", "mmol/L"),
    "mg/dL": ("mg/L", "g/L"),  # umol/L needs a molar mass: see test_units
    "ng/mL": ("ug/L",),
}
ids = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
texts = (
    st.text(
        st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_categories=("Cs",)),
        min_size=1,
        max_size=30,
    )
    .map(str.strip)
    .filter(bool)
)
dates = st.dates(
    min_value=__import__("datetime").date(1950, 1, 1),
    max_value=__import__("datetime").date(2025, 12, 31),
)
partial = st.one_of(
    dates.map(lambda d: d.isoformat()[:4]),
    dates.map(lambda d: d.isoformat()[:7]),
    dates.map(lambda d: d.isoformat()),
    st.tuples(dates, st.integers(0, 23), st.integers(0, 59)).map(
        lambda t: f"{t[0].isoformat()}T{t[1]:02d}:{t[2]:02d}:00+09:00"
    ),
)
when = st.one_of(
    partial,
    st.integers(1, 110).map(lambda a: {"age": a}),
    st.floats(0.1, 110, allow_nan=False).map(lambda a: {"age": round(a, 1)}),
    texts.map(lambda t: {"text": t}),
)
pos = st.floats(min_value=0.01, max_value=500, allow_nan=False).map(lambda v: round(v, 3))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    used: set[str] = set()

    def fresh() -> str:
        item = draw(ids.filter(lambda i: i not in used))
        used.add(item)
        return item

    dx_ids = []
    diagnoses = []
    for _ in range(draw(st.integers(0, 3))):
        i = fresh()
        status = draw(
            st.sampled_from(
                ["active", "recurrence", "relapse", "inactive", "remission", "resolved"]
            )
        )
        d: dict[str, Any] = {
            "id": i,
            "concept": draw(st.sampled_from(sorted(T.diagnoses))),
            "clinical_status": status,
        }
        if draw(st.booleans()):
            d["text"] = draw(texts)
        if draw(st.booleans()):
            d["onset"] = draw(when)
        if status in ("inactive", "remission", "resolved") and draw(st.booleans()):
            d["abatement"] = draw(when)
        if draw(st.booleans()):
            d["histology"] = {"who_type": draw(st.sampled_from(["A", "AB", "B1", "B2", "B3", "C"]))}
        if draw(st.booleans()):
            d["stage"] = {
                "system": "masaoka",
                "value": draw(st.sampled_from(["I", "II", "III", "IVa"])),
                "text": draw(st.none() | texts.filter(lambda t: ")" not in t and "(" not in t)),
            }
        if draw(st.booleans()):
            d["dat_pattern"] = draw(st.sampled_from(["IgG", "IgG+C", "IgA"]))
        if dx_ids and draw(st.booleans()):
            d["due_to"] = [draw(st.sampled_from(dx_ids))]
        if draw(st.booleans()):
            d["note"] = draw(texts)
        dx_ids.append(i)
        diagnoses.append(d)
    tx_ids = []
    treatments = []
    for _ in range(draw(st.integers(0, 3))):
        i = fresh()
        t: dict[str, Any] = {
            "id": i,
            "drug": draw(st.sampled_from(sorted(T.drugs))),
            "status": draw(st.sampled_from(["active", "completed", "stopped", "intended"])),
        }
        if draw(st.booleans()):
            t["start"] = draw(when)
        if draw(st.booleans()):
            t["dose"] = {
                "value": draw(pos),
                "unit": draw(st.sampled_from(["mg/kg/d", "mg/d"])),
                "doses_per_day": draw(st.none() | st.sampled_from([1, 2, 4])),
            }
        if draw(st.booleans()):
            t["pulses"] = {"courses": draw(st.integers(1, 4)), "days": draw(st.integers(1, 5))}
        if draw(st.booleans()):
            t["route"] = draw(st.sampled_from(["oral", "intravenous"]))
        if draw(st.booleans()):
            t["line"] = draw(st.integers(1, 8))
        if dx_ids and draw(st.booleans()):
            t["reasons"] = draw(
                st.lists(st.sampled_from(dx_ids), min_size=1, max_size=2, unique=True)
            )
        if draw(st.booleans()):
            t["target_trough"] = {"low": 100, "high": draw(st.sampled_from([150, 200]))}
        if draw(st.booleans()):
            t["dosage_text"] = draw(texts)
        tx_ids.append(i)
        treatments.append(t)
    labs = []
    quantitative = sorted(k for k, c in T.analytes.items() if not c.qualitative)
    for _ in range(draw(st.integers(0, 4))):
        analyte = draw(st.sampled_from(quantitative))
        concept = T.analytes[analyte]
        lab: dict[str, Any] = {"id": fresh(), "analyte": analyte, "date": draw(when)}
        if draw(st.booleans()):
            lab["value"] = draw(pos)
            lab["unit"] = draw(
                st.sampled_from([concept.unit, *_SAME_DIMENSION.get(concept.unit, ())])
            )
            if draw(st.booleans()):
                lab["reference_range"] = {"low": 1, "high": draw(pos) + 1}
        else:
            lab["interpretation"] = draw(st.sampled_from(["N", "L", "H", "U"]))
        if draw(st.booleans()):
            lab["note"] = draw(texts)
        labs.append(lab)
    imaging = []
    for _ in range(draw(st.integers(0, 2))):
        img: dict[str, Any] = {
            "id": fresh(),
            "date": draw(when),
            "modality": draw(st.sampled_from(["CT", "MRI"])),
            "finding": draw(texts),
            "response": draw(st.none() | st.sampled_from(sorted(T.imaging_responses))),
        }
        if dx_ids and draw(st.booleans()):
            img["focus"] = draw(st.sampled_from(dx_ids))
        if draw(st.booleans()):
            img["size_mm"] = draw(pos)
        imaging.append(img)
    marrow = []
    for _ in range(draw(st.integers(0, 2))):
        m: dict[str, Any] = {
            "id": fresh(),
            "finding": draw(st.sampled_from(sorted(T.marrow_findings))),
        }
        m[draw(st.sampled_from(["value_percent", "value_text", "grade"]))] = draw(st.just(None))
        key = next(k for k in m if m[k] is None)
        m[key] = {"value_percent": 40.0, "value_text": draw(texts), "grade": 2}[key]
        if draw(st.booleans()):
            m["date"] = draw(partial)
        marrow.append(m)
    procedures = []
    for _ in range(draw(st.integers(0, 2))):
        p: dict[str, Any] = {
            "id": fresh(),
            "procedure": draw(st.sampled_from(sorted(T.procedures))),
            "status": draw(st.sampled_from(["completed", "not-done"])),
            "performed": draw(when),
        }
        if dx_ids and draw(st.booleans()):
            p["reasons"] = [draw(st.sampled_from(dx_ids))]
        if draw(st.booleans()):
            p["outcome"] = draw(texts)
        procedures.append(p)
    aes = []
    for _ in range(draw(st.integers(0, 2))):
        ae: dict[str, Any] = {
            "id": fresh(),
            "event": draw(st.sampled_from(sorted(T.adverse_events))),
            "grade": draw(st.integers(1, 5)),
            "serious": draw(st.booleans()),
        }
        if draw(st.booleans()):
            ae["date"] = draw(when)
        if tx_ids and draw(st.booleans()):
            ae["suspect"] = [draw(st.sampled_from(tx_ids))]
        if draw(st.booleans()):
            ae["outcome"] = draw(st.sampled_from(["resolved", "fatal"]))
        aes.append(ae)
    return Case.model_validate(
        {
            "identifier": {"system": "http://example.org/sid/" + draw(ids), "value": draw(texts)},
            "patient": {
                "sex": draw(st.sampled_from(["female", "male", "other", "unknown"])),
                "birth_date": draw(st.none() | partial.filter(lambda d: "T" not in d)),
                "synthetic": draw(st.booleans()),
                "name": draw(st.none() | texts),
                "telecom": draw(
                    st.lists(
                        st.sampled_from(["+39 02 555 0101", "a@b.example"]), max_size=2, unique=True
                    )
                ),
                "address": draw(st.none() | texts),
            },
            "diagnoses": diagnoses,
            "treatments": treatments,
            "labs": labs,
            "imaging": imaging,
            "marrow": marrow,
            "procedures": procedures,
            "adverse_events": aes,
        }
    )
