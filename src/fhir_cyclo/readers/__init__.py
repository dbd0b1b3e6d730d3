"""Readers of each input format: case files, cohort CSV folders, FHIR files/NDJSON/Bulk/server."""
