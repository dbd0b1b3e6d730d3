// Error type and OperationOutcome helpers shared by the sandbox modules.

/** Reason phrases used in `response.status` strings ("201 Created") and for unknown statuses. */
export const REASONS = {
  200: 'OK',
  201: 'Created',
  204: 'No Content',
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  410: 'Gone',
  412: 'Precondition Failed',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Entity',
  500: 'Internal Server Error',
};

export function statusLine(status) {
  return `${status} ${REASONS[status] ?? ''}`.trim();
}

/** An error that maps to an HTTP status and an OperationOutcome. `extraIssues` become issue[1..]. */
export class FhirError extends Error {
  constructor(status, diagnostics, { code = 'processing', extraIssues = [] } = {}) {
    super(diagnostics);
    this.status = status;
    this.issueCode = code;
    this.extraIssues = extraIssues;
  }
}

export function operationOutcome(severity, code, diagnostics, extraIssues = []) {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity, code, diagnostics }, ...extraIssues],
  };
}

/** Converts any thrown value into [status, OperationOutcome]. Unknown errors become 500 (never crash). */
export function errorToOutcome(err) {
  if (err instanceof FhirError) {
    return [err.status, operationOutcome('error', err.issueCode, err.message, err.extraIssues)];
  }
  // Medplum's OperationOutcomeError carries an outcome; surface its text as a 400.
  if (err?.outcome?.resourceType === 'OperationOutcome') {
    const text = err.outcome.issue?.map((i) => i.details?.text ?? i.diagnostics).join('; ');
    return [400, operationOutcome('error', 'processing', `SANDBOX-0400: ${text}`)];
  }
  return [500, operationOutcome('error', 'exception', `SANDBOX-0500: internal error: ${err?.stack ?? err}`)];
}
