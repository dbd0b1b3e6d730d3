// FHIR search over the SandboxRepository: strict parameter parsing (unknown -> 400, like HAPI), candidate
// narrowing through the reference/token indexes, per-type pre-parsed FHIRPath expressions, sort keys
// computed once per match.
//
// Why not MemoryRepository.search / matchesSearchRequest: they re-parse the (huge, all-types) search
// parameter FHIRPath union for every resource and deep-clone every match before paging, which takes
// tens of seconds at 50k resources. The matching rules below follow @medplum/core's matcher.
import {
  convertToSearchableDates,
  convertToSearchableReferences,
  convertToSearchableStrings,
  convertToSearchableTokens,
  convertToSearchableUris,
  evalFhirPathTyped,
  getDataType,
  getExpressionForResourceType,
  getParsedExpressionForResourceType,
  globalSchema,
  splitSearchOnComma,
  toPeriod,
  toTypedValue,
} from '@medplum/core';
import { RESOURCE_TYPES, getSearchParam, isSearchableType } from './definitions.mjs';
import { FhirError } from './errors.mjs';
import { normalizeReference } from './store.mjs';

export const DEFAULT_COUNT = 20;
export const MAX_COUNT = 500;

const DATE_PREFIXES = new Set(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap']);
const MODIFIERS = {
  reference: new Set(['', 'missing']),
  token: new Set(['', 'not', 'missing']),
  string: new Set(['', 'exact', 'contains', 'missing']),
  date: new Set(['', 'missing']),
  uri: new Set(['', 'missing']),
};
// Result parameters we deliberately do not implement: fail loudly instead of silently ignoring them.
const UNSUPPORTED = new Set([
  '_include', '_revinclude', '_has', '_elements', '_contained', '_containedType', '_text', '_content',
  '_list', '_query', '_filter', '_type',
]);
const IGNORED = new Set(['_pretty', '_format', '_bundletype']);

function bad(diagnostics) {
  return new FhirError(400, diagnostics);
}

function parseNonNegativeInt(name, value) {
  if (!/^\d+$/.test(value)) {
    throw bad(`SANDBOX-2003: Invalid ${name} value "${value}": must be a non-negative integer`);
  }
  return parseInt(value, 10);
}

/**
 * Parses [key, value] query pairs into a search plan. Throws FhirError(400) for unknown or unsupported
 * parameters, modifiers and malformed values.
 */
export function parseSearch(resourceType, pairs, baseUrl) {
  const plan = { resourceType, filters: [], sortRules: [], count: DEFAULT_COUNT, offset: 0, total: undefined };
  for (const [rawKey, value] of pairs) {
    const [code, modifier = ''] = rawKey.split(':', 2);
    if (code === '_count') {
      plan.count = Math.min(parseNonNegativeInt('_count', value), MAX_COUNT); // HAPI clamps silently
    } else if (code === '_offset') {
      plan.offset = parseNonNegativeInt('_offset', value);
    } else if (code === '_total') {
      if (!['none', 'estimate', 'accurate'].includes(value)) {
        throw bad(`SANDBOX-2003: Invalid _total value "${value}": expected none, estimate or accurate`);
      }
      plan.total = value;
    } else if (code === '_summary') {
      if (value === 'count') {
        plan.count = 0;
        plan.total = 'accurate';
      } else if (value !== 'false') {
        throw bad(`SANDBOX-2002: _summary=${value} is not supported by the sandbox (only count and false)`);
      }
    } else if (code === '_sort') {
      for (const field of value.split(',').filter(Boolean)) {
        const descending = field.startsWith('-');
        const sortCode = descending ? field.slice(1) : field;
        const param = getSearchParam(resourceType, sortCode);
        if (!param || !isSearchableType(param.type)) {
          throw bad(`SANDBOX-2004: Unknown _sort parameter value "${sortCode}" for resource type "${resourceType}"`);
        }
        plan.sortRules.push({ param, descending });
      }
    } else if (IGNORED.has(code)) {
      if (code === '_format' && !/json/.test(value)) {
        throw bad(`SANDBOX-2002: _format=${value} is not supported by the sandbox (JSON only)`);
      }
    } else if (UNSUPPORTED.has(code) || code.includes('.')) {
      throw bad(`SANDBOX-2002: Search parameter "${rawKey}" is not supported by the sandbox`);
    } else {
      const filter = parseFilter(resourceType, code, modifier, value, baseUrl);
      if (filter) {
        plan.filters.push(filter);
      }
    }
  }
  return plan;
}

function parseFilter(resourceType, code, modifier, value, baseUrl) {
  const param = getSearchParam(resourceType, code);
  if (!param) {
    throw bad(
      `SANDBOX-2001: Unknown search parameter "${code}" for resource type "${resourceType}". Valid parameters: ` +
        Object.keys(getSearchParamsOf(resourceType)).sort().join(', ')
    );
  }
  if (!isSearchableType(param.type)) {
    throw bad(`SANDBOX-2002: Search parameter "${code}" of type ${param.type} is not supported by the sandbox`);
  }
  const isTypeModifier = param.type === 'reference' && RESOURCE_TYPES.has(modifier);
  if (!MODIFIERS[param.type].has(modifier) && !isTypeModifier) {
    throw bad(`SANDBOX-2002: Modifier ":${modifier}" on ${param.type} parameter "${code}" is not supported by the sandbox`);
  }
  if (modifier === 'missing') {
    if (value !== 'true' && value !== 'false') {
      throw bad(`SANDBOX-2003: :missing needs true or false, got "${value}"`);
    }
    return { param, modifier, missing: value === 'true' };
  }
  if (value === '') {
    return undefined; // HAPI ignores empty parameters
  }
  const values = splitSearchOnComma(value).map((v) => {
    if (param.type === 'date') {
      return parseDateValue(code, v);
    }
    if (param.type === 'reference') {
      return normalizeReferenceValue(param, isTypeModifier ? modifier : undefined, v, baseUrl);
    }
    return v;
  });
  return { param, modifier: isTypeModifier ? '' : modifier, values };
}

function getSearchParamsOf(resourceType) {
  const out = {};
  for (const code of Object.keys(globalSchema.types[resourceType]?.searchParams ?? {})) {
    const p = getSearchParam(resourceType, code);
    if (p && isSearchableType(p.type)) {
      out[code] = p;
    }
  }
  return out;
}

function parseDateValue(code, raw) {
  let prefix = 'eq';
  let value = raw;
  if (DATE_PREFIXES.has(raw.slice(0, 2))) {
    prefix = raw.slice(0, 2);
    value = raw.slice(2);
  }
  const period = toPeriod(value);
  if (!period) {
    throw bad(`SANDBOX-2003: Invalid date/time value "${raw}" for search parameter "${code}"`);
  }
  return { prefix, start: period.start, end: period.end };
}

/** "123" -> "Patient/123" when the target type is known; absolute URLs on this server -> relative. */
function normalizeReferenceValue(param, typeModifier, raw, baseUrl) {
  let v = raw;
  if (baseUrl && v.startsWith(baseUrl + '/')) {
    v = v.slice(baseUrl.length + 1);
  }
  if (!v.includes('/')) {
    if (typeModifier) {
      v = `${typeModifier}/${v}`;
    } else if (param.target?.length === 1) {
      v = `${param.target[0]}/${v}`;
    }
  }
  return normalizeReference(v);
}

// ---------------------------------------------------------------------------------------------
// Evaluation

const atomCache = new Map();

/** Values of a search parameter for one resource, using a per-resource-type pre-parsed expression. */
function paramValues(resource, param) {
  const key = `${resource.resourceType}|${param.code}`;
  let atom = atomCache.get(key);
  if (!atom) {
    atom = getParsedExpressionForResourceType(resource.resourceType, param.expression);
    atomCache.set(key, atom);
  }
  return evalFhirPathTyped(atom, [toTypedValue(resource)]);
}

const tokenIndexableCache = new Map();

/** True when the parameter is a plain path to Coding/CodeableConcept/Identifier, i.e. covered by the token index. */
function tokenIndexable(resourceType, param) {
  const key = `${resourceType}|${param.code}`;
  if (!tokenIndexableCache.has(key)) {
    const expr = getExpressionForResourceType(resourceType, param.expression);
    const elements = getDataType(resourceType).elements;
    const ok =
      Boolean(expr) &&
      expr.split(' | ').every((part) => {
        const m = /^(\w+)\.(\w+)$/.exec(part.trim());
        const types = m && m[1] === resourceType ? elements[m[2]]?.type?.map((t) => t.code) : undefined;
        return types?.length > 0 && types.every((t) => ['CodeableConcept', 'Coding', 'Identifier'].includes(t));
      });
    tokenIndexableCache.set(key, ok);
  }
  return tokenIndexableCache.get(key);
}

function tokenIndexKey(value) {
  const v = value.toLowerCase();
  const bar = v.indexOf('|');
  if (bar < 0) {
    return `c:${v}`;
  }
  const system = v.slice(0, bar);
  const code = v.slice(bar + 1);
  if (!code) {
    return undefined; // "system|" matches any code: no index key
  }
  return system ? `s:${system}|${code}` : `c:${code}`;
}

function union(sets) {
  const out = new Set();
  for (const s of sets) {
    for (const id of s ?? []) {
      out.add(id);
    }
  }
  return out;
}

/** Smallest candidate id set from indexable filters, or null when a full scan is needed. */
function candidateIds(repo, resourceType, filters) {
  let best = null;
  for (const f of filters) {
    if (!f.values || f.modifier !== '') {
      continue;
    }
    let set = null;
    if (f.param.code === '_id') {
      set = new Set(f.values.filter((id) => repo.getRaw(resourceType, id)));
    } else if (f.param.type === 'reference' && f.values.every((v) => v.includes('/'))) {
      set = union(f.values.map((v) => repo.idsReferencing(resourceType, v)));
    } else if (f.param.type === 'token' && tokenIndexable(resourceType, f.param)) {
      const keys = f.values.map(tokenIndexKey);
      if (keys.every(Boolean)) {
        set = union(keys.map((k) => repo.idsWithToken(resourceType, k)));
      }
    }
    if (set && (best === null || set.size < best.size)) {
      best = set;
    }
  }
  return best;
}

function matchToken(tokens, filterValue) {
  const fv = filterValue.toLowerCase();
  const bar = fv.indexOf('|');
  if (bar < 0) {
    return tokens.some((t) => t.value?.toLowerCase() === fv);
  }
  const system = fv.slice(0, bar);
  const code = fv.slice(bar + 1);
  if (!system) {
    return tokens.some((t) => !t.system && t.value?.toLowerCase() === code);
  }
  return tokens.some((t) => t.system?.toLowerCase() === system && (!code || t.value?.toLowerCase() === code));
}

// Same interval semantics as @medplum/core's matchesDateValue (ISO strings compare lexically in UTC).
function matchDate(period, f) {
  const rs = period.start ?? '0000';
  const re = period.end ?? '9999';
  switch (f.prefix) {
    case 'eq':
    case 'ap':
      return rs < f.end && re > f.start;
    case 'ne':
      return !(rs < f.end && re > f.start);
    case 'lt':
      return rs < f.start;
    case 'gt':
      return re > f.end;
    case 'le':
      return rs <= f.end;
    case 'ge':
      return re >= f.start;
    case 'sa':
      return rs > f.end;
    case 'eb':
      return re < f.start;
    default:
      return false;
  }
}

function matchesFilter(resource, f) {
  const typed = paramValues(resource, f.param);
  if (f.modifier === 'missing') {
    return (typed.length === 0) === f.missing;
  }
  switch (f.param.type) {
    case 'reference': {
      const refs = convertToSearchableReferences(typed).map(normalizeReference);
      return f.values.some((v) => (v.includes('/') ? refs.includes(v) : refs.some((r) => r.endsWith('/' + v))));
    }
    case 'token': {
      const tokens = convertToSearchableTokens(typed);
      const hit = f.values.some((v) => matchToken(tokens, v));
      return f.modifier === 'not' ? !hit : hit;
    }
    case 'date': {
      const periods = convertToSearchableDates(typed);
      return f.values.some((v) => periods.some((p) => matchDate(p, v)));
    }
    case 'string': {
      // HAPI: default is case-insensitive "starts with"; :exact is exact; :contains is substring.
      const strings = convertToSearchableStrings(typed);
      return f.values.some((v) => {
        const lv = v.toLowerCase();
        return strings.some((s) =>
          f.modifier === 'exact' ? s === v : f.modifier === 'contains' ? s.toLowerCase().includes(lv) : s.toLowerCase().startsWith(lv)
        );
      });
    }
    case 'uri': {
      const uris = convertToSearchableUris(typed);
      return f.values.some((v) => uris.includes(v));
    }
    default:
      return false;
  }
}

export function matchesAll(resource, filters) {
  for (const f of filters) {
    if (!matchesFilter(resource, f)) {
      return false;
    }
  }
  return true;
}

function sortKey(resource, rule) {
  const typed = paramValues(resource, rule.param);
  switch (rule.param.type) {
    case 'date': {
      const periods = convertToSearchableDates(typed);
      if (!periods.length) {
        return undefined;
      }
      // Ascending sorts by the earliest start, descending by the latest end (like a range index).
      return rule.descending
        ? periods.map((p) => p.end ?? p.start).sort().pop()
        : periods.map((p) => p.start ?? p.end).sort()[0];
    }
    case 'token':
      return convertToSearchableTokens(typed).map((t) => t.value ?? '').sort()[0];
    case 'reference':
      return convertToSearchableReferences(typed).sort()[0];
    case 'uri':
      return convertToSearchableUris(typed).sort()[0];
    default:
      return convertToSearchableStrings(typed).map((s) => s.toLowerCase()).sort()[0];
  }
}

/** Runs a search plan and returns matching stored resources (not copies), sorted. */
export function executeSearch(repo, plan) {
  const { resourceType, filters, sortRules } = plan;
  const ids = candidateIds(repo, resourceType, filters);
  const matches = [];
  if (ids) {
    for (const id of ids) {
      const r = repo.getRaw(resourceType, id);
      if (r && matchesAll(r, filters)) {
        matches.push(r);
      }
    }
    // Index sets are unordered w.r.t. creation: restore creation order for a stable default order.
    if (sortRules.length === 0) {
      matches.sort((a, b) => repo.seqOf(resourceType, a.id) - repo.seqOf(resourceType, b.id));
    }
  } else {
    for (const r of repo.typeMap(resourceType).values()) {
      if (matchesAll(r, filters)) {
        matches.push(r);
      }
    }
  }
  if (sortRules.length === 0) {
    return matches;
  }
  // Compute each sort key once (decorate-sort-undecorate); missing values sort last in both directions.
  const decorated = matches.map((r, i) => ({ r, i, keys: sortRules.map((rule) => sortKey(r, rule)) }));
  decorated.sort((a, b) => {
    for (let k = 0; k < sortRules.length; k++) {
      const ka = a.keys[k];
      const kb = b.keys[k];
      if (ka === kb) {
        continue;
      }
      if (ka === undefined) {
        return 1;
      }
      if (kb === undefined) {
        return -1;
      }
      const c = ka < kb ? -1 : 1;
      return sortRules[k].descending ? -c : c;
    }
    return a.i - b.i;
  });
  return decorated.map((d) => d.r);
}
