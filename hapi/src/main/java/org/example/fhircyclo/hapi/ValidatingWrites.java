package org.example.fhircyclo.hapi;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.api.RestOperationTypeEnum;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;

/**
 * HAPI's request validator on every write, except $validate: that operation runs the same
 * validator itself and must answer with every issue rather than be refused before it runs.
 */
public class ValidatingWrites extends RequestValidatingInterceptor {

	@Override
	@Hook(Pointcut.SERVER_INCOMING_REQUEST_POST_PROCESSED)
	public boolean incomingRequestPostProcessed(
			RequestDetails request, HttpServletRequest servletRequest, HttpServletResponse servletResponse) {
		if (request.getRestOperationType() == RestOperationTypeEnum.VALIDATE) {
			return true;
		}
		return super.incomingRequestPostProcessed(request, servletRequest, servletResponse);
	}
}
