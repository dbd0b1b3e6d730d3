"""Import: FHIR (files, Bulk folders, a server) -> case files."""
