package org.example.fhircyclo.hapi;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.exceptions.InternalErrorException;
import ca.uhn.fhir.rest.server.exceptions.InvalidRequestException;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;

/**
 * HAPI's request validator on every write (and on $validate, whose own parser would stop at the
 * first bad value, e.g. an unknown status code, while the validator reads the raw JSON and lists
 * every issue). One change to its behaviour: a body that is not parseable JSON is the client's
 * fault, which the interceptor reports as a 500 (HAPI-0331) that clients retry; it becomes 400.
 */
public class ValidatingWrites extends RequestValidatingInterceptor {

	@Override
	@Hook(Pointcut.SERVER_INCOMING_REQUEST_POST_PROCESSED)
	public boolean incomingRequestPostProcessed(
			RequestDetails request, HttpServletRequest servletRequest, HttpServletResponse servletResponse) {
		try {
			return super.incomingRequestPostProcessed(request, servletRequest, servletResponse);
		} catch (InternalErrorException e) {
			InvalidRequestException refused = new InvalidRequestException(e.getMessage(), e);
			refused.setOperationOutcome(e.getOperationOutcome());
			throw refused;
		}
	}
}
