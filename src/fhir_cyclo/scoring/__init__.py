"""Response scoring from FHIR data: extraction, windows and criteria (mappings/scoring.yaml).

Pipeline: `readers.fhir` -> `extract` -> `rules.score` -> `report.*` (JSON, table, plots, HTML)
and `writeback.to_bundle`. Everything the rules decide on lives in mappings/scoring.yaml.

Partial dates (case reports say "2011" or "2012-02"): a date of any precision is the interval
[first day, last day]; a dateTime with a time is its date part as written (no timezone
conversion). The cyclosporine start is the first day of its interval. A measurement is in a window
when its interval overlaps the window, at its representative date: the point of its interval
closest to the reference point (baseline: the start, i.e. the latest point of the overlap;
timepoint: the target). Distances, ordering and ties use that date, which is also the date
reported, and every imputation is warned about. For full dates this is exactly the plain rule.

One disease per patient: codes for several are scored for the first of PRCA > AIHA > ITP
(`diseases.precedence` in the table) with a warning.
"""
