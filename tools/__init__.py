"""Build-time generators (profiles/, docs/reference.md): not part of the runtime package."""
