package org.example.fhircyclo.hapi;

import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.rest.server.exceptions.InternalErrorException;
import ca.uhn.fhir.rest.server.exceptions.UnclassifiedServerFailureException;
import jakarta.servlet.http.HttpServletRequest;

/**
 * Answers 503 until the project's definitions are stored, so that a client polling /fhir/metadata
 * never writes a resource the validator would judge without its StructureDefinitions.
 */
@Interceptor
public class ReadyGate {

	private volatile boolean ready;
	private volatile String failure;

	void open() {
		ready = true;
	}

	void fail(String message) {
		failure = message;
	}

	@Hook(Pointcut.SERVER_INCOMING_REQUEST_PRE_PROCESSED)
	public boolean gate(HttpServletRequest request) {
		if (failure != null) {
			throw new InternalErrorException("fhir-cyclo definitions failed to load: " + failure);
		}
		if (!ready) {
			throw new UnclassifiedServerFailureException(503, "fhir-cyclo test server is starting");
		}
		return true;
	}
}
