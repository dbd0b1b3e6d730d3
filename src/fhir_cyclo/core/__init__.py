"""The bottom layer: errors, ids, the case model, terminology, units and the data tables."""
