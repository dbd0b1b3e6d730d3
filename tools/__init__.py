"""Build-time generators (profiles/, docs/reference.md, mappings/unit_factors.yaml): not shipped."""
