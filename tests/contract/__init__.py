"""Contract tests: FhirClient and push_bundles against recorded HAPI responses."""
