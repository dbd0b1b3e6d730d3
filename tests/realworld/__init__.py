"""Tests on public FHIR R4 written by others (tests/realworld/data, SOURCES.md)."""
