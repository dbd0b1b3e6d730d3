// Write engine: transaction and batch Bundles, and single REST writes (run as one-entry transactions).
//
// Why not FhirRouter's processBatch: stock Medplum 4.5.2 has no rollback in the memory repository, refuses
// transactions with conditional entries above 8 entries ("strict isolation"), caps updates at 50 and does
// no validation or referential-integrity checks. Here every write is planned first (ids, conditional
// matches, placeholder map, validation, reference checks) and only then applied, with an undo journal.
import { RESOURCE_TYPES, validate } from './definitions.mjs';
import { FhirError, errorToOutcome, statusLine } from './errors.mjs';
import { executeSearch, matchesAll, parseSearch } from './search.mjs';
import { normalizeReference } from './store.mjs';

const HAPI_STORAGE_SYSTEM = 'https://hapifhir.io/fhir/CodeSystem/hapi-fhir-storage-response-code';
const STORAGE_DISPLAY = {
  SUCCESSFUL_CREATE: 'Create succeeded.',
  SUCCESSFUL_CREATE_NO_CONDITIONAL_MATCH: 'Conditional create succeeded: no existing resource matched the conditional URL.',
  SUCCESSFUL_CREATE_WITH_CONDITIONAL_MATCH:
    'Conditional create succeeded: an existing resource matched the conditional URL so no action was taken.',
  SUCCESSFUL_UPDATE: 'Update succeeded.',
  SUCCESSFUL_UPDATE_AS_CREATE: 'Update as create succeeded.',
  SUCCESSFUL_UPDATE_NO_CHANGE: 'Update succeeded: No changes were detected so no action was taken.',
  SUCCESSFUL_UPDATE_NO_CONDITIONAL_MATCH:
    'Conditional update succeeded: no existing resource matched the conditional URL so a new resource was created.',
  SUCCESSFUL_UPDATE_WITH_CONDITIONAL_MATCH:
    'Conditional update succeeded: an existing resource matched the conditional URL and was updated.',
  SUCCESSFUL_UPDATE_WITH_CONDITIONAL_MATCH_NO_CHANGE:
    'Conditional update succeeded: an existing resource matched the conditional URL and no changes were detected.',
  SUCCESSFUL_DELETE: 'Delete succeeded.',
  SUCCESSFUL_DELETE_NOT_FOUND: 'Delete succeeded: No existing resource was found so no action was taken.',
};

const VERB_RANK = { DELETE: 1, POST: 2, PUT: 3, GET: 5, HEAD: 5 }; // HAPI's transaction order
const PLACEHOLDER_RE = /^urn:(uuid:[0-9a-fA-F-]{36}|oid:[0-2](\.(0|[1-9]\d*))+)$/;
const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;

function isPlaceholder(s) {
  return typeof s === 'string' && (s.startsWith('urn:uuid:') || s.startsWith('urn:oid:'));
}

function storageOutcome(code, diagnostics) {
  return {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity: 'information',
        code: 'informational',
        details: { coding: [{ system: HAPI_STORAGE_SYSTEM, code, display: STORAGE_DISPLAY[code] }] },
        diagnostics,
      },
    ],
  };
}

/** Key-order-independent JSON, used to detect "no change" updates (HAPI does not bump the version then). */
function canonical(value) {
  if (Array.isArray(value)) {
    return `[${value.map(canonical).join(',')}]`;
  }
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .filter((k) => value[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

function contentWithoutServerMeta(resource) {
  const { meta, ...rest } = resource;
  if (meta) {
    const { versionId: _v, lastUpdated: _l, ...metaRest } = meta;
    if (Object.keys(metaRest).length) {
      rest.meta = metaRest;
    }
  }
  return canonical(rest);
}

/** Splits "Type/id", "Type?query", "Type" (optionally absolute on this server) into parts. */
function parseRequestUrl(url, baseUrl) {
  let u = url.trim();
  if (baseUrl && u.startsWith(baseUrl + '/')) {
    u = u.slice(baseUrl.length + 1);
  }
  u = u.replace(/^\/+/, '');
  const q = u.indexOf('?');
  const path = q >= 0 ? u.slice(0, q) : u;
  const query = q >= 0 ? u.slice(q + 1) : undefined;
  const segments = path.split('/').filter(Boolean);
  return { type: segments[0], id: segments[1], extra: segments.slice(2), query };
}

function parseIfMatch(value) {
  if (!value) {
    return undefined;
  }
  const m = /^(?:W\/)?"?([^"]+)"?$/.exec(value.trim());
  return m ? m[1] : value;
}

/** Validates one Bundle.entry (or a synthetic REST entry) and normalises it into a plan item. */
function parseEntry(entry, index, where, baseUrl) {
  if (!entry || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new FhirError(400, `SANDBOX-1002: ${where} is not an object`);
  }
  const request = entry.request ?? {};
  const method = typeof request.method === 'string' ? request.method.toUpperCase() : undefined;
  if (method === 'PATCH') {
    throw new FhirError(400, `SANDBOX-1016: ${where}: PATCH entries are not supported by the sandbox`);
  }
  if (!VERB_RANK[method]) {
    throw new FhirError(
      400,
      `SANDBOX-1002: Transaction bundle entry has missing or invalid HTTP Verb specified in ${where}.request.method` +
        ` (got ${JSON.stringify(request.method)})`
    );
  }
  const resource = entry.resource;
  if ((method === 'POST' || method === 'PUT') && (!resource || typeof resource !== 'object' || Array.isArray(resource))) {
    throw new FhirError(400, `SANDBOX-1003: Missing required resource in ${where}.resource for operation ${method}`);
  }
  let url = request.url;
  if (!url && method === 'POST') {
    url = resource.resourceType; // HAPI accepts a POST without request.url
  }
  if (typeof url !== 'string' || !url) {
    throw new FhirError(400, `SANDBOX-1004: ${where}: Unable to perform ${method}, no URL provided in request.url`);
  }
  const parsed = parseRequestUrl(url, baseUrl);
  const item = {
    index,
    where,
    method,
    url,
    type: parsed.type,
    id: parsed.id,
    query: parsed.query,
    resource,
    fullUrl: entry.fullUrl,
    ifNoneExist: request.ifNoneExist,
    ifMatch: parseIfMatch(request.ifMatch),
  };
  if (method === 'GET' || method === 'HEAD') {
    return item;
  }
  if (!RESOURCE_TYPES.has(parsed.type) || parsed.extra.length > 0) {
    throw new FhirError(400, `SANDBOX-1004: ${where}: Invalid request.url "${url}" for ${method}`);
  }
  if (resource && resource.resourceType !== parsed.type) {
    throw new FhirError(
      400,
      `SANDBOX-1004: ${where}: resource type ${resource.resourceType} does not match request.url "${url}"`
    );
  }
  if (method === 'POST' && (parsed.id || parsed.query)) {
    throw new FhirError(400, `SANDBOX-1004: ${where}: POST request.url must be a resource type, got "${url}" (use PUT or ifNoneExist)`);
  }
  if ((method === 'PUT' || method === 'DELETE') && !parsed.id && !parsed.query) {
    throw new FhirError(400, `SANDBOX-1004: ${where}: ${method} request.url needs Type/id or Type?search, got "${url}"`);
  }
  if (item.fullUrl !== undefined && isPlaceholder(item.fullUrl) && !PLACEHOLDER_RE.test(item.fullUrl)) {
    throw new FhirError(
      400,
      `SANDBOX-1005: ${where}: Invalid placeholder ID found: ${item.fullUrl} - Must be of the form 'urn:uuid:[uuid]' or 'urn:oid:[oid]'`
    );
  }
  return item;
}

/** Replaces placeholders in a conditional URL's values (plain or "Type/urn:uuid:..." or URL-escaped). */
function substituteInQuery(query, placeholders) {
  const params = new URLSearchParams(query);
  const pairs = [];
  for (const [k, v] of params) {
    let value = v;
    for (const [ph, target] of placeholders) {
      if (value.includes(ph)) {
        value = value.split(`${target.split('/')[0]}/${ph}`).join(target).split(ph).join(target);
      }
    }
    pairs.push([k, value]);
  }
  return pairs;
}

function conditionalKey(type, pairs) {
  return `${type}?${pairs.map(([k, v]) => `${k}=${v}`).join('&')}`;
}

/** What a committed unit changed, for the persistence log: stored versions and deletions, in apply order. */
function committedOps(order) {
  const ops = [];
  for (const it of order) {
    if (it.action === 'delete' && it.outcomeCode === 'SUCCESSFUL_DELETE') {
      ops.push({ op: 'del', type: it.type, id: it.targetId });
    } else if ((it.action === 'create' || it.action === 'update') && !it.noChange) {
      ops.push({ op: 'put', resource: it.stored });
    }
  }
  return ops;
}

export class WriteEngine {
  /** `onCommit(ops)`, when given, runs synchronously once a unit is applied; if it throws, the unit is undone. */
  constructor(repo, { onCommit } = {}) {
    this.repo = repo;
    this.onCommit = onCommit;
  }

  /**
   * Runs entries atomically. Returns one result per entry (in entry order):
   * { status, outcomeCode, resource?, location?, etag?, lastModified?, outcome? }.
   * Throws FhirError; on error nothing has been changed.
   */
  async runAtomic(rawEntries, ctx) {
    const repo = this.repo;
    const items = rawEntries.map((e, i) => parseEntry(e, i, ctx.label(i), ctx.baseUrl));

    // Duplicate placeholders / duplicate resource ids (HAPI-0534 / HAPI-0535).
    const seenFullUrls = new Map();
    for (const it of items) {
      if (it.fullUrl && it.method !== 'GET' && it.method !== 'HEAD') {
        if (seenFullUrls.has(it.fullUrl)) {
          throw new FhirError(
            400,
            `SANDBOX-1005: ${it.where}: fullUrl ${it.fullUrl} is used by ${seenFullUrls.get(it.fullUrl)} too`
          );
        }
        seenFullUrls.set(it.fullUrl, it.where);
      }
    }

    // Resolve order: placeholder-free entries before entries whose conditional URL mentions a placeholder,
    // then HAPI's verb order (DELETE, POST, PUT, GET), unconditional before conditional, then entry order.
    const condUrl = (it) => (it.method === 'POST' ? it.ifNoneExist : it.query);
    const hasPh = (it) => (condUrl(it) ?? '').includes('urn:');
    const order = [...items].sort(
      (a, b) =>
        hasPh(a) - hasPh(b) ||
        VERB_RANK[a.method] - VERB_RANK[b.method] ||
        Boolean(condUrl(a)) - Boolean(condUrl(b)) ||
        a.index - b.index
    );

    const placeholders = new Map(); // "urn:uuid:..." -> "Type/id"
    const targets = new Map(); // "Type/id" -> item that creates/updates it in this transaction
    const deletes = new Map(); // "Type/id" -> item deleting it
    const conditionalSeen = new Map(); // normalised conditional URL -> item (HAPI consolidates duplicates)

    const liveMatches = (plan) =>
      executeSearch(repo, plan).filter((r) => !deletes.has(`${r.resourceType}/${r.id}`));

    const planConditional = (it, raw) => {
      const q = raw.includes('?') ? raw.slice(raw.indexOf('?') + 1) : raw; // HAPI accepts "identifier=..." bare
      const pairs = substituteInQuery(q, placeholders);
      if (pairs.length === 0) {
        throw new FhirError(400, `SANDBOX-1009: ${it.where}: Invalid match URL "${raw}" - URL has no search parameters`);
      }
      let plan;
      try {
        plan = parseSearch(it.type, pairs, ctx.baseUrl);
      } catch (err) {
        throw new FhirError(400, `SANDBOX-1009: ${it.where}: Failed to parse match URL "${raw}" - ${err.message}`);
      }
      return { plan, key: conditionalKey(it.type, pairs) };
    };

    for (const it of order) {
      if (it.method === 'GET' || it.method === 'HEAD') {
        continue;
      }
      if (it.method === 'DELETE') {
        if (it.id) {
          it.action = 'delete';
          it.targetId = it.id;
        } else {
          const { plan } = planConditional(it, it.query);
          const matches = liveMatches(plan);
          if (matches.length > 1) {
            throw new FhirError(
              412,
              `SANDBOX-1011: ${it.where}: Failed to DELETE resource with match URL "${it.url}" because this search matched ${matches.length} resources`
            );
          }
          it.action = 'delete';
          it.targetId = matches[0]?.id;
        }
        if (it.targetId) {
          deletes.set(`${it.type}/${it.targetId}`, it);
        }
        continue;
      }

      const raw = it.method === 'POST' ? it.ifNoneExist : it.query;
      if (raw) {
        const { plan, key } = planConditional(it, raw);
        it.conditionalPlan = plan;
        const earlier = conditionalSeen.get(key);
        if (earlier) {
          if (it.method === 'POST' && earlier.method === 'POST') {
            // HAPI consolidates duplicate conditional creates: the later one resolves to the same resource.
            it.action = 'nop';
            it.targetId = earlier.targetId;
          } else {
            throw new FhirError(
              400,
              `SANDBOX-1012: ${it.where}: Unable to process Transaction - Request would cause multiple resources to match URL: "${key}". Does transaction request contain duplicates?`
            );
          }
        } else {
          conditionalSeen.set(key, it);
          const matches = liveMatches(plan);
          if (matches.length > 1) {
            throw new FhirError(
              412,
              `SANDBOX-1011: ${it.where}: Failed to ${it.method === 'POST' ? 'CREATE' : 'UPDATE'} resource with match URL "${key}" because this search matched ${matches.length} resources`
            );
          }
          if (matches.length === 1) {
            it.targetId = matches[0].id;
            it.action = it.method === 'POST' ? 'nop' : 'update';
            it.outcomeCode =
              it.method === 'POST' ? 'SUCCESSFUL_CREATE_WITH_CONDITIONAL_MATCH' : 'SUCCESSFUL_UPDATE_WITH_CONDITIONAL_MATCH';
          } else {
            it.targetId = repo.generateId();
            it.action = 'create';
            it.outcomeCode =
              it.method === 'POST' ? 'SUCCESSFUL_CREATE_NO_CONDITIONAL_MATCH' : 'SUCCESSFUL_UPDATE_NO_CONDITIONAL_MATCH';
          }
        }
      } else if (it.method === 'POST') {
        it.targetId = repo.generateId(); // POST ignores the body id (HAPI, R4)
        it.action = 'create';
        it.outcomeCode = 'SUCCESSFUL_CREATE';
      } else {
        if (!ID_RE.test(it.id)) {
          throw new FhirError(400, `SANDBOX-1013: ${it.where}: Can not process entity with ID[${it.id}], this is not a valid FHIR ID`);
        }
        const exists = Boolean(repo.getRaw(it.type, it.id)) && !deletes.has(`${it.type}/${it.id}`);
        if (!exists && /^\d+$/.test(it.id)) {
          throw new FhirError(
            400,
            `SANDBOX-1013: ${it.where}: Can not create resource with ID[${it.id}], no resource with this ID exists and clients may only assign IDs which contain at least one non-numeric character (HAPI rule)`
          );
        }
        it.targetId = it.id;
        it.action = exists ? 'update' : 'create';
        it.outcomeCode = exists ? 'SUCCESSFUL_UPDATE' : 'SUCCESSFUL_UPDATE_AS_CREATE';
      }

      const key = `${it.type}/${it.targetId}`;
      if (it.action !== 'nop') {
        if (targets.has(key)) {
          throw new FhirError(
            400,
            `SANDBOX-1006: ${it.where}: Transaction bundle contains multiple resources with ID: ${key} (also ${targets.get(key).where})`
          );
        }
        targets.set(key, it);
      }
      if (it.fullUrl && isPlaceholder(it.fullUrl)) {
        placeholders.set(it.fullUrl, key);
      }
    }

    // Version checks (If-Match) on updates.
    for (const it of items) {
      if (it.ifMatch && (it.action === 'update' || it.action === 'create' || it.action === 'delete')) {
        const current = repo.getRaw(it.type, it.targetId);
        if (current?.meta?.versionId !== it.ifMatch) {
          throw new FhirError(
            409,
            `SANDBOX-1015: ${it.where}: Trying to ${it.method} ${it.type}/${it.targetId}/_history/${it.ifMatch} but this is not the current version (${current?.meta?.versionId ?? 'none'})`
          );
        }
      }
    }

    // Prepare resources: ids, references, validation, referential integrity, conditional self-match.
    for (const it of items) {
      if (it.action !== 'create' && it.action !== 'update') {
        continue;
      }
      const resource = it.resource;
      resource.id = it.targetId;
      if (resource.meta) {
        delete resource.meta.versionId; // server-managed
        delete resource.meta.lastUpdated;
      }
      const refs = this.rewriteReferences(resource, placeholders, it, ctx.baseUrl);
      if (it.action === 'update') {
        const current = repo.getRaw(it.type, it.targetId);
        it.noChange = Boolean(current) && contentWithoutServerMeta(current) === contentWithoutServerMeta(resource);
      }
      // An unchanged update stores nothing and its content was validated when stored: skip re-validation
      // (re-posting the same bundle is the common idempotent case and validation is the main cost).
      const problems = it.noChange ? [] : validate(resource);
      if (problems.length) {
        const label = it.where.startsWith('Bundle.') ? `${it.where} (${it.type})` : it.where;
        throw new FhirError(400, `SANDBOX-1001: ${label}: ${problems[0]}`, {
          code: 'invalid',
          extraIssues: problems.slice(1).map((p) => ({ severity: 'error', code: 'invalid', diagnostics: p })),
        });
      }
      for (const { ref, path } of refs) {
        const [rType, rId] = ref.split('/');
        const existsNow = Boolean(repo.getRaw(rType, rId)) && !deletes.has(ref);
        if (!existsNow && !targets.has(ref)) {
          throw new FhirError(
            400,
            `SANDBOX-1008: ${it.where}: Resource ${ref} not found, specified in path: ${path} (referential integrity, like HAPI-1094)`
          );
        }
      }
      it.refs = new Set(refs.map((r) => r.ref));
      if (it.conditionalPlan && !matchesAll(resource, it.conditionalPlan.filters)) {
        throw new FhirError(
          412,
          `SANDBOX-1010: ${it.where}: Invalid conditional URL "${it.method === 'POST' ? it.ifNoneExist : it.url}". The given resource is not matched by this URL.`
        );
      }
    }

    // Delete conflicts: something that stays references the deleted resource (HAPI-0515 -> 409).
    for (const [key, it] of deletes) {
      for (const { type, id } of repo.referrersOf(key)) {
        const referrer = `${type}/${id}`;
        if (deletes.has(referrer)) {
          continue;
        }
        const rewritten = targets.get(referrer);
        if (rewritten && !rewritten.refs.has(key)) {
          continue;
        }
        throw new FhirError(
          409,
          `SANDBOX-1019: ${it.where}: Unable to delete ${key} because at least one resource has a reference to this resource. First reference found was resource ${referrer}`
        );
      }
    }

    // Apply in resolve order with an undo journal (the memory repository has no rollback).
    const journal = [];
    try {
      for (const it of order) {
        if (it.action === 'delete') {
          if (it.targetId && repo.getRaw(it.type, it.targetId)) {
            journal.push(repo.snapshot(it.type, it.targetId));
            await repo.deleteResource(it.type, it.targetId);
            it.outcomeCode = 'SUCCESSFUL_DELETE';
          } else {
            it.outcomeCode = 'SUCCESSFUL_DELETE_NOT_FOUND';
          }
        } else if (it.action === 'create') {
          journal.push(repo.snapshot(it.type, it.targetId));
          it.stored = await repo.createResource(it.resource);
        } else if (it.action === 'update') {
          if (it.noChange) {
            it.stored = structuredClone(repo.getRaw(it.type, it.targetId));
            it.outcomeCode = it.conditionalPlan
              ? 'SUCCESSFUL_UPDATE_WITH_CONDITIONAL_MATCH_NO_CHANGE'
              : 'SUCCESSFUL_UPDATE_NO_CHANGE';
          } else {
            journal.push(repo.snapshot(it.type, it.targetId));
            it.stored = await repo.updateResource(it.resource);
          }
        }
      }
      if (this.onCommit) {
        // Inside the try: a unit that cannot be made durable is rolled back, never acknowledged.
        const ops = committedOps(order);
        if (ops.length) {
          this.onCommit(ops);
        }
      }
    } catch (err) {
      for (const snap of journal.reverse()) {
        repo.restore(snap);
      }
      throw err;
    }
    for (const it of items) {
      if (it.action === 'nop') {
        it.stored = structuredClone(repo.getRaw(it.type, it.targetId));
        it.outcomeCode = 'SUCCESSFUL_CREATE_WITH_CONDITIONAL_MATCH';
      }
    }

    // GET entries run after the writes, against the final state (HAPI); their failures do not roll back.
    for (const it of items) {
      if (it.method === 'GET' || it.method === 'HEAD') {
        const [status, body] = await ctx.handleGet(it.url);
        it.getResult = { status, body };
      }
    }

    return items.map((it) => this.resultOf(it));
  }

  resultOf(it) {
    if (it.getResult) {
      const { status, body } = it.getResult;
      return status < 300 ? { status, resource: body } : { status, outcome: body };
    }
    if (it.action === 'delete') {
      const diag =
        it.outcomeCode === 'SUCCESSFUL_DELETE'
          ? `Successfully deleted 1 resource(s) (${it.type}/${it.targetId}).`
          : `Not deleted, resource ${it.type}/${it.id ?? '?'} does not exist.`;
      return { status: 204, outcomeCode: it.outcomeCode, outcome: storageOutcome(it.outcomeCode, diag) };
    }
    const r = it.stored;
    const vid = r.meta.versionId;
    const location = `${r.resourceType}/${r.id}/_history/${vid}`;
    const created = it.action === 'create';
    const verb = created ? 'created' : it.action === 'nop' ? 'matched' : 'updated';
    return {
      status: created ? 201 : 200,
      outcomeCode: it.outcomeCode,
      resource: r,
      location,
      etag: `W/"${vid}"`,
      lastModified: r.meta.lastUpdated,
      outcome: storageOutcome(it.outcomeCode, `Successfully ${verb} resource "${location}".`),
    };
  }

  /**
   * Rewrites placeholder references to "Type/id" and returns local references [{ref, path}] to check.
   * Throws for unresolvable placeholders (like HAPI-0541), inline conditional references (HAPI-2282 on
   * the public server) and malformed references.
   */
  rewriteReferences(resource, placeholders, it, baseUrl) {
    const found = [];
    const visit = (node, path) => {
      if (Array.isArray(node)) {
        for (const item of node) {
          visit(item, path);
        }
        return;
      }
      if (!node || typeof node !== 'object') {
        return;
      }
      if (typeof node.reference === 'string' && path !== resource.resourceType) {
        node.reference = this.resolveReference(node.reference, placeholders, it, path, baseUrl, found);
      }
      for (const key of Object.keys(node)) {
        const child = node[key];
        if (child && typeof child === 'object') {
          visit(child, `${path}.${key}`);
        }
      }
    };
    visit(resource, resource.resourceType);
    return found;
  }

  resolveReference(ref, placeholders, it, path, baseUrl, found) {
    if (ref.startsWith('#')) {
      return ref; // contained resource
    }
    let value = ref;
    if (isPlaceholder(value) || /^[A-Z][A-Za-z]+\/urn:(uuid|oid):/.test(value)) {
      const ph = isPlaceholder(value) ? value : value.slice(value.indexOf('/') + 1);
      const target = placeholders.get(ph);
      if (!target) {
        throw new FhirError(
          400,
          `SANDBOX-1007: ${it.where}: Unable to satisfy placeholder ID ${ph} found in element named '${path.split('.').pop()}' within resource of type: ${it.type} (path ${path}; no entry has this fullUrl)`
        );
      }
      value = target;
    }
    if (baseUrl && value.startsWith(baseUrl + '/')) {
      value = value.slice(baseUrl.length + 1); // absolute URL on this server = local reference
    }
    if (/^https?:\/\//.test(value)) {
      return value; // external reference: stored as is (validation may reject it for typed targets)
    }
    const m = /^([A-Z][A-Za-z]+)(\?.*)?$/.exec(value);
    if (m && m[2]) {
      throw new FhirError(
        400,
        `SANDBOX-1014: ${it.where}: Inline match URLs are not supported on this server. Cannot process reference: "${value}" at ${path}`
      );
    }
    const local = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/[A-Za-z0-9\-.]{1,64})?$/.exec(value);
    if (!local || !RESOURCE_TYPES.has(local[1])) {
      throw new FhirError(
        400,
        `SANDBOX-1018: ${it.where}: Invalid reference "${ref}" at ${path} (expected Type/id, urn:uuid: placeholder, #contained or absolute URL)`
      );
    }
    found.push({ ref: normalizeReference(value), path });
    return value;
  }

  /** Transaction or batch Bundle -> response Bundle. */
  async processBundle(bundle, ctx) {
    if (!bundle || bundle.resourceType !== 'Bundle') {
      throw new FhirError(400, `SANDBOX-1000: POST to the base URL needs a Bundle, got ${bundle?.resourceType ?? typeof bundle}`);
    }
    const entries = bundle.entry ?? [];
    if (!Array.isArray(entries)) {
      throw new FhirError(400, 'SANDBOX-1000: Bundle.entry must be an array');
    }
    const label = (i) => `Bundle.entry[${i}]`;
    let results;
    if (bundle.type === 'transaction') {
      results = await this.runAtomic(entries, { ...ctx, label });
    } else if (bundle.type === 'batch') {
      // Each batch entry is its own one-entry transaction (HAPI): urn:uuid links between entries fail.
      results = [];
      for (let i = 0; i < entries.length; i++) {
        try {
          const [r] = await this.runAtomic([entries[i]], { ...ctx, label: () => label(i) });
          results.push(r);
        } catch (err) {
          const [status, outcome] = errorToOutcome(err);
          results.push({ status, outcome });
        }
      }
    } else {
      throw new FhirError(
        400,
        `SANDBOX-1000: Unable to process transaction where incoming Bundle.type = ${bundle.type ?? '(missing)'} (expected transaction or batch)`
      );
    }
    return {
      resourceType: 'Bundle',
      id: crypto.randomUUID(),
      type: bundle.type === 'transaction' ? 'transaction-response' : 'batch-response',
      link: [{ relation: 'self', url: ctx.baseUrl }],
      entry: results.map((r) => {
        const response = { status: statusLine(r.status) };
        if (r.location) {
          response.location = r.location;
          response.etag = r.etag;
          response.lastModified = r.lastModified;
        }
        if (r.outcome) {
          response.outcome = r.outcome;
        }
        const out = { response };
        if (r.resource && (ctx.returnRepresentation || r.outcomeCode === undefined)) {
          out.resource = r.resource; // HAPI: only with Prefer: return=representation (GET entries always)
        }
        return out;
      }),
    };
  }
}
