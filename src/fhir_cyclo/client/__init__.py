"""HTTP client for FHIR R4 servers (HAPI first): session, retries, transactions, paging."""

from fhir_cyclo.client.auth import TOKEN_ENV, TOKEN_FILE_ENV, BasicAuth, BearerAuth
from fhir_cyclo.client.fhir import AuthOptions, FhirClient
from fhir_cyclo.client.http import (
    RETRY_STATUSES,
    RetryPolicy,
    ServerOptions,
    TlsOptions,
    parse_retry_after,
)
from fhir_cyclo.client.results import (
    EntryResult,
    TransactionResult,
    parse_location,
    parse_status,
    parse_transaction_response,
)

__all__ = [
    "RETRY_STATUSES",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "AuthOptions",
    "BasicAuth",
    "BearerAuth",
    "EntryResult",
    "FhirClient",
    "RetryPolicy",
    "ServerOptions",
    "TlsOptions",
    "TransactionResult",
    "parse_location",
    "parse_retry_after",
    "parse_status",
    "parse_transaction_response",
]
