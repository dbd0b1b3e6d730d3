"""Export: case files and cohorts -> transaction Bundles and NDJSON, optionally de-identified."""
