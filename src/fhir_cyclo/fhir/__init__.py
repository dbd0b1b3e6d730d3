"""FHIR building blocks above the mappers: transaction Bundles per case and R4B model checks."""
