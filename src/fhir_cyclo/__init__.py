"""fhir-cyclo: FHIR R4 adapter for cyclosporine-treated clinical cases."""
