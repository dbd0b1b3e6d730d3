package org.example.fhircyclo.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.jpa.api.dao.IFhirResourceDao;
import ca.uhn.fhir.jpa.term.api.ITermDeferredStorageSvc;
import ca.uhn.fhir.rest.api.server.SystemRequestDetails;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.event.EventListener;
import org.springframework.stereotype.Component;

/**
 * Stores the project's StructureDefinitions and CodeSystems (the repo's profiles/ folder) at start,
 * so the validator checks fhir-cyclo's extensions and local codes instead of calling them unknown.
 * Each file is an update by id: restarting on a file database rewrites, never duplicates.
 */
@Component
public class DefinitionsLoader {

	private static final Logger log = LoggerFactory.getLogger(DefinitionsLoader.class);

	private final DaoRegistry daoRegistry;
	private final FhirContext fhirContext;
	private final ITermDeferredStorageSvc deferredStorage;
	private final ReadyGate gate;
	private final String definitionsDir;

	public DefinitionsLoader(
			DaoRegistry daoRegistry,
			FhirContext fhirContext,
			ITermDeferredStorageSvc deferredStorage,
			ReadyGate gate,
			@Value("${fhircyclo.definitions-dir:}") String definitionsDir) {
		this.daoRegistry = daoRegistry;
		this.fhirContext = fhirContext;
		this.deferredStorage = deferredStorage;
		this.gate = gate;
		this.definitionsDir = definitionsDir;
	}

	@EventListener(ApplicationReadyEvent.class)
	public void load() {
		try {
			int count = 0;
			if (!definitionsDir.isBlank()) {
				for (Path file : jsonFiles(Path.of(definitionsDir))) {
					store(file);
					count++;
				}
				// Code system concepts are indexed by a background job; the first validation must see them.
				deferredStorage.saveAllDeferred();
			}
			log.info("fhir-cyclo: {} definition(s) loaded from '{}'", count, definitionsDir);
			gate.open();
		} catch (RuntimeException | IOException e) {
			log.error("fhir-cyclo: loading definitions failed", e);
			gate.fail(e.getMessage());
		}
	}

	private static List<Path> jsonFiles(Path dir) throws IOException {
		try (Stream<Path> files = Files.list(dir)) {
			return files.filter(p -> p.toString().endsWith(".json")).sorted().toList();
		}
	}

	@SuppressWarnings({"unchecked", "rawtypes"})
	private void store(Path file) throws IOException {
		String text = Files.readString(file, StandardCharsets.UTF_8);
		IBaseResource resource = fhirContext.newJsonParser().parseResource(text);
		if (resource.getIdElement().getIdPart() == null) {
			throw new IllegalArgumentException(file + ": a definition needs an id");
		}
		IFhirResourceDao dao = daoRegistry.getResourceDao(resource);
		dao.update(resource, new SystemRequestDetails());
	}
}
