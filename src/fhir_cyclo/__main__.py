"""`python -m fhir_cyclo`: the same entry point as the `fhir-cyclo` script."""

import sys

from fhir_cyclo.cli.app import main

sys.exit(main())
