"""Validation features: local checks of inputs and Bundles, and a server's $validate."""
