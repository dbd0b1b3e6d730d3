package org.example.fhircyclo.hapi;

import ca.uhn.fhir.batch2.api.IJobMaintenanceService;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.jobs.imprt.BulkDataImportProvider;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.interceptor.api.IInterceptorBroadcaster;
import ca.uhn.fhir.jpa.api.IDaoRegistry;
import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.jpa.delete.ThreadSafeResourceDeleterSvc;
import ca.uhn.fhir.jpa.interceptor.CascadingDeleteInterceptor;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.binstore.DatabaseBinaryContentStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HibernatePropertiesProvider;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.config.util.ResourceCountCacheUtil;
import ca.uhn.fhir.jpa.dao.FulltextSearchSvcImpl;
import ca.uhn.fhir.jpa.dao.IFulltextSearchSvc;
import ca.uhn.fhir.jpa.dao.search.HSearchSortHelperImpl;
import ca.uhn.fhir.jpa.dao.search.IHSearchSortHelper;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect;
import ca.uhn.fhir.jpa.model.entity.StorageSettings;
import ca.uhn.fhir.jpa.provider.DaoRegistryResourceSupportedSvc;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.provider.ValueSetOperationProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.search.IStaleSearchDeletingSvc;
import ca.uhn.fhir.jpa.search.StaleSearchDeletingSvcImpl;
import ca.uhn.fhir.jpa.util.ResourceCountCache;
import ca.uhn.fhir.narrative2.NullNarrativeGenerator;
import ca.uhn.fhir.rest.api.IResourceSupportedSvc;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.RequestValidatingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import ca.uhn.fhir.validation.IValidatorModule;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import jakarta.persistence.EntityManagerFactory;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import org.hibernate.dialect.Dialect;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.autoconfigure.orm.jpa.JpaProperties;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * The beans a HAPI JPA server expects its host application to provide, and the RestfulServer.
 *
 * <p>Every setting keeps HAPI's default (the public server's behaviour: cached identical searches,
 * no Bundle.total, sequential numeric server ids, 20 per page) except the ones named in the README:
 * validation of every write, multiple and cascading delete (the tests' reset), $expunge, Bulk Data
 * export, Bulk Data $import.
 */
@Configuration
@Import(ThreadPoolFactoryConfig.class)
public class ServerConfig {

	/** `fhircyclo.profile`: `everyday` (default, validating) or `load` (bulk loading). */
	static final String PROFILE_LOAD = "load";

	static boolean isLoadProfile(String profile) {
		if (PROFILE_LOAD.equals(profile)) {
			return true;
		}
		if (!"everyday".equals(profile)) {
			throw new IllegalArgumentException(
					"fhircyclo.profile must be 'everyday' or 'load', not '" + profile + "'");
		}
		return false;
	}

	/** PostgreSQL when the JDBC URL says so; H2 (the default) otherwise. */
	static boolean isPostgres(String jdbcUrl) {
		return jdbcUrl.startsWith("jdbc:postgresql:");
	}

	static Dialect dialectFor(String jdbcUrl) {
		return isPostgres(jdbcUrl) ? new HapiFhirPostgresDialect() : new HapiFhirH2Dialect();
	}

	/**
	 * `fhircyclo.load-except`: loading-profile settings left at the everyday value, to measure
	 * each one on and off (bench/load.py --ablation). Empty in normal use.
	 */
	static final List<String> LOAD_SETTINGS = List.of(
			"mass-ingestion", "index-storage-optimized", "no-text-tokens", "missing-fields-off",
			"no-validation", "match-url-cache");

	static boolean loadSetting(String profile, String except, String setting) {
		if (!LOAD_SETTINGS.contains(setting)) {
			throw new IllegalArgumentException("unknown loading-profile setting " + setting);
		}
		for (String name : except.split(",")) {
			if (!name.isBlank() && !LOAD_SETTINGS.contains(name.strip())) {
				throw new IllegalArgumentException("fhircyclo.load-except: unknown setting '"
						+ name.strip() + "' (one of " + String.join(", ", LOAD_SETTINGS) + ")");
			}
		}
		return isLoadProfile(profile) && !List.of(except.split(",")).stream()
				.map(String::strip).toList().contains(setting);
	}

	@Bean
	public JpaStorageSettings jpaStorageSettings(
			@Value("${fhircyclo.profile:everyday}") String profile,
			@Value("${fhircyclo.load-except:}") String except) {
		JpaStorageSettings settings = new JpaStorageSettings();
		// Changed from HAPI's default, for the tests: the reset between test groups
		// (server/hapi.py reset_clinical_data) is a multiple delete,
		// `DELETE [type]?_lastUpdated=ge1900-01-01&_cascade=delete`. It does not use $expunge:
		// expunging everything would also drop the StructureDefinitions, which HAPI 8.8 cannot
		// store again over REST. $expunge stays enabled for clearing deleted versions by hand.
		settings.setExpungeEnabled(true);
		settings.setDeleteExpungeEnabled(true);
		settings.setAllowMultipleDelete(true);
		// Changed: nothing pre-expands value sets in the background (start-up time, CPU).
		settings.setPreExpandValueSets(false);
		settings.setEnableTaskPreExpandValueSets(false);
		// Bulk Data export runs as a batch job; files kept 2 h like the starter. Changed:
		// fast tracking, so a small job's next step starts as soon as the last one ends.
		settings.setEnableTaskBulkExportJobExecution(true);
		settings.setJobFastTrackingEnabled(true);
		settings.setBulkExportFileRetentionPeriodHours(2);
		// Bulk Data $import (batch2 job BULK_IMPORT_PULL): on in both profiles; it fetches the
		// NDJSON over http(s) and stores each resource under its own (client-assigned) id.
		settings.setEnableTaskBulkImportJobExecution(true);
		if (isLoadProfile(profile)) {
			// The loading profile (README "Scale"): the settings HAPI documents for ingestion.
			// Each setting can be left out (fhircyclo.load-except) to measure what it gives.
			// Fewer reads before each write (no check of existing tags/indexes on create).
			settings.setMassIngestionMode(loadSetting(profile, except, "mass-ingestion"));
			// Index rows without the redundant SP_NAME/RES_TYPE columns (hash only): fewer bytes.
			settings.setIndexStorageOptimized(loadSetting(profile, except, "index-storage-optimized"));
			// No :text index row per coding display (the client never searches token:text).
			settings.setSuppressStringIndexingInTokens(loadSetting(profile, except, "no-text-tokens"));
			// :missing indexes off (HAPI's default too; stated so the profile is explicit).
			settings.setIndexMissingFields(loadSetting(profile, except, "missing-fields-off")
					? StorageSettings.IndexEnabledEnum.DISABLED
					: StorageSettings.IndexEnabledEnum.ENABLED);
			// A reference whose target arrives later in an $import (another file, another
			// chunk) gets a placeholder that the target's own write then fills in.
			settings.setAutoCreatePlaceholderReferenceTargets(true);
			settings.setPopulateIdentifierInAutoCreatedPlaceholderReferenceTargets(false);
			// Identical searches (conditional creates) answered from the match-URL cache.
			settings.setMatchUrlCacheEnabled(loadSetting(profile, except, "match-url-cache"));
		}
		return settings;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings();
	}

	@Primary
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			JpaProperties jpaProperties,
			DataSource dataSource,
			@Value("${spring.datasource.url}") String jdbcUrl) {
		LocalContainerEntityManagerFactoryBean factory =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		factory.setPersistenceUnitName("HAPI_PU");
		Map<String, String> properties = new HashMap<>(jpaProperties.getProperties());
		properties.put("hibernate.dialect", dialectFor(jdbcUrl).getClass().getName());
		factory.setJpaPropertyMap(properties);
		factory.setDataSource(dataSource);
		return factory;
	}

	@Primary
	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		JpaTransactionManager manager = new JpaTransactionManager();
		manager.setEntityManagerFactory(entityManagerFactory);
		return manager;
	}

	/**
	 * The dialect follows the JDBC URL (`spring.datasource.url`): HAPI's PostgreSQL dialect for
	 * `jdbc:postgresql:`, its H2 dialect otherwise (the default database).
	 */
	@Primary
	@Bean
	public HibernatePropertiesProvider hibernatePropertiesProvider(
			@Value("${spring.datasource.url}") String jdbcUrl) {
		return new HibernatePropertiesProvider() {
			private final Dialect dialect = dialectFor(jdbcUrl);

			@Override
			public Dialect getDialect() {
				return dialect;
			}
		};
	}

	@Bean
	public IFulltextSearchSvc fulltextSearchSvc() {
		return new FulltextSearchSvcImpl();
	}

	@Bean
	public IHSearchSortHelper hSearchSortHelper(ISearchParamRegistry searchParamRegistry) {
		return new HSearchSortHelperImpl(searchParamRegistry);
	}

	@Bean
	public IStaleSearchDeletingSvc staleSearchDeletingSvc() {
		return new StaleSearchDeletingSvcImpl();
	}

	@Bean
	public DatabaseBackedPagingProvider databaseBackedPagingProvider() {
		// HAPI's defaults: 20 per page, at most 200.
		return new DatabaseBackedPagingProvider();
	}

	@Bean
	public IResourceSupportedSvc resourceSupportedSvc(IDaoRegistry daoRegistry) {
		return new DaoRegistryResourceSupportedSvc(daoRegistry);
	}

	@Bean(name = "myResourceCountsCache")
	public ResourceCountCache resourceCountsCache(IFhirSystemDao<?, ?> systemDao) {
		return ResourceCountCacheUtil.newResourceCountCache(systemDao);
	}

	/** Bulk export files (Binary resources) are kept in the database. */
	@Bean
	public DatabaseBinaryContentStorageSvcImpl binaryStorageSvc() {
		return new DatabaseBinaryContentStorageSvcImpl();
	}

	/**
	 * Changed from HAPI's pace (a batch2 maintenance pass once a minute): a pass every
	 * `fhircyclo.job-maintenance-millis`, so a Bulk export of a test cohort takes seconds, not
	 * minutes. The pass itself is HAPI's; only its schedule differs.
	 */
	@Bean(destroyMethod = "shutdownNow")
	public ScheduledExecutorService jobPacer(
			IJobMaintenanceService maintenance,
			@Value("${fhircyclo.job-maintenance-millis:2000}") long millis) {
		ScheduledExecutorService pacer = Executors.newSingleThreadScheduledExecutor(runnable -> {
			Thread thread = new Thread(runnable, "fhir-cyclo-job-pacer");
			thread.setDaemon(true);
			return thread;
		});
		pacer.scheduleWithFixedDelay(
				() -> {
					try {
						maintenance.triggerMaintenancePass();
					} catch (RuntimeException e) {
						LoggerFactory.getLogger(ServerConfig.class).warn("maintenance pass: {}", e.toString());
					}
				},
				millis,
				millis,
				TimeUnit.MILLISECONDS);
		return pacer;
	}

	@Bean
	public ReadyGate readyGate() {
		return new ReadyGate();
	}

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> systemDao,
			ResourceProviderFactory resourceProviders,
			JpaSystemProvider<?, ?> systemProvider,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport,
			IValidatorModule validatorModule,
			DatabaseBackedPagingProvider pagingProvider,
			BulkDataExportProvider bulkDataExportProvider,
			BulkDataImportProvider bulkDataImportProvider,
			ValueSetOperationProvider valueSetOperationProvider,
			ReadyGate readyGate,
			DaoRegistry daoRegistry,
			IInterceptorBroadcaster broadcaster,
			ThreadSafeResourceDeleterSvc deleter,
			@Value("${fhircyclo.validate-writes:true}") boolean validateWrites,
			@Value("${fhircyclo.profile:everyday}") String profile,
			@Value("${fhircyclo.load-except:}") String loadExcept,
			@Value("${fhircyclo.external-extension-domains}") String externalExtensionDomains,
			@Value("${fhircyclo.lenient:false}") boolean lenient) {
		FhirContext ctx = systemDao.getContext();
		ctx.setNarrativeGenerator(new NullNarrativeGenerator());
		RestfulServer server = new RestfulServer(ctx);
		server.registerProviders(resourceProviders.createProviders());
		server.registerProvider(systemProvider);
		server.registerProvider(valueSetOperationProvider);
		// Changed from the starter's default (off): Bulk Data export for the import tests.
		server.registerProvider(bulkDataExportProvider);
		// Bulk Data $import / $import-poll-status (HAPI: a provider bean of Batch2JobsConfig that
		// the host registers; the request needs `Prefer: respond-async`).
		server.registerProvider(bulkDataImportProvider);
		server.setServerConformanceProvider(new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport));
		server.setPagingProvider(pagingProvider);
		server.setDefaultPrettyPrint(false);
		server.registerInterceptor(readyGate);
		// As on the public server: DELETE with _cascade=delete (the tests' reset uses it); without
		// that parameter deletes keep HAPI's referential-integrity checks.
		server.registerInterceptor(new CascadingDeleteInterceptor(ctx, daoRegistry, broadcaster, deleter));
		if (validatorModule instanceof FhirInstanceValidator validator) {
			if (lenient) {
				// The lenient mode (-Dfhircyclo.lenient=true, `fhir-cyclo sandbox`): HAPI's
				// defaults for a production server, so records others wrote load: any extension
				// allowed (reported as information), codes from systems the server cannot check
				// are warnings, unknown profiles are not errors.
				validator.setAnyExtensionsAllowed(true);
				validator.setErrorForUnknownProfiles(false);
				validatorModule = lenientValidator(ctx, validationSupport);
			} else {
				// Changed from HAPI's default (any extension allowed, reported as information): an
				// extension without a definition is an error, except those of the two published IGs
				// whose packages cannot be loaded offline (mCODE histology, AE research ae-grade).
				validator.setAnyExtensionsAllowed(false);
				validator.setCustomExtensionDomains(externalExtensionDomains.split(","));
			}
		}
		// The loading profile validates nothing on the server: every resource was checked at
		// export, and `$validate` on a sample checks the profiles.
		if (validateWrites && !loadSetting(profile, loadExcept, "no-validation")) {
			// Changed from HAPI's default (no validation): the HL7 validator on every write,
			// refusing the request on ERROR with the validator's OperationOutcome.
			RequestValidatingInterceptor validating = new ValidatingWrites();
			validating.setFailOnSeverity(ResultSeverityEnum.ERROR);
			validating.setAddResponseHeaderOnSeverity(null);
			// A passing request's warnings are not copied into the response: $validate already
			// answers with them (HAPI would list each issue twice).
			validating.setAddValidationResultsToResponseOperationOutcome(false);
			validating.setValidatorModules(List.of(validatorModule));
			server.registerInterceptor(validating);
		}
		return server;
	}

	/**
	 * The validator of the lenient mode: the server's own support chain, then a last link that
	 * answers for code systems the chain does not know with a warning (the validator's default
	 * for those would be an error on a required binding).
	 */
	private static IValidatorModule lenientValidator(FhirContext ctx, IValidationSupport support) {
		UnknownCodeSystemWarningValidationSupport unknown = new UnknownCodeSystemWarningValidationSupport(ctx);
		unknown.setNonExistentCodeSystemSeverity(IValidationSupport.IssueSeverity.WARNING);
		FhirInstanceValidator lenient =
				new FhirInstanceValidator(new ValidationSupportChain(support, unknown));
		lenient.setAnyExtensionsAllowed(true);
		lenient.setErrorForUnknownProfiles(false);
		return lenient;
	}
}
