"""Generators of the real-world test corpus (tests/realworld/data): derived files, conversions."""
