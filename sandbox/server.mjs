#!/usr/bin/env node
// fhir-cyclo test sandbox: an in-memory FHIR R4 server on 127.0.0.1, built on @medplum/fhir-router's
// MemoryRepository and FhirRouter with a small node:http front.
// Usage: node server.mjs --port N [--verbose] [--exit-with-parent] [--data DIR]
// (port 0 = any free port; --exit-with-parent = exit when stdin reaches EOF, i.e. the launcher died;
// --data DIR = keep an fsynced log of committed writes in DIR/store.ndjson and replay it on start)
import { FhirRouter } from '@medplum/fhir-router';
import { isNotFound, isOk } from '@medplum/core';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { WriteEngine } from './lib/bundle.mjs';
import { WriteLog } from './lib/persist.mjs';
import { RESOURCE_TYPES, buildCapabilityStatement } from './lib/definitions.mjs';
import { FhirError, errorToOutcome, operationOutcome } from './lib/errors.mjs';
import { DEFAULT_COUNT, MAX_COUNT, executeSearch, parseSearch } from './lib/search.mjs';
import { SandboxRepository } from './lib/store.mjs';

const MAX_BODY_BYTES = 50 * 1024 * 1024;
const PAGE_TTL_MS = 60 * 60 * 1000; // HAPI keeps _getpages searches ~1 h
const MAX_PAGE_SNAPSHOTS = 200; // bounded memory: oldest snapshots are dropped first
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const gzip = promisify(zlib.gzip);
const gunzip = promisify(zlib.gunzip);

function parseArgs(argv) {
  const args = { port: 8080, verbose: false, exitWithParent: false, data: undefined };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port') {
      args.port = Number(argv[++i]);
    } else if (argv[i].startsWith('--port=')) {
      args.port = Number(argv[i].slice(7));
    } else if (argv[i] === '--verbose') {
      args.verbose = true;
    } else if (argv[i] === '--exit-with-parent') {
      args.exitWithParent = true;
    } else if (argv[i] === '--data' && i + 1 < argv.length) {
      args.data = argv[++i];
    } else if (argv[i].startsWith('--data=')) {
      args.data = argv[i].slice(7);
    } else {
      process.stderr.write(
        `unknown argument: ${argv[i]}\nusage: node server.mjs --port N [--verbose] [--exit-with-parent] [--data DIR]\n`
      );
      process.exit(2);
    }
  }
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
    process.stderr.write('--port must be an integer 0..65535 (0 = pick a free port)\n');
    process.exit(2);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const routerVersion = JSON.parse(
  readFileSync(new URL('./node_modules/@medplum/fhir-router/package.json', import.meta.url), 'utf8')
).version;

const repo = new SandboxRepository();
const writeLog = args.data ? new WriteLog(args.data) : undefined;
if (writeLog) {
  try {
    const { transactions, tornBytes } = await writeLog.replay(repo);
    process.stderr.write(
      `replayed ${transactions} committed unit(s) from ${writeLog.file}` +
        (tornBytes ? `; dropped a torn last line (${tornBytes} bytes, never acknowledged)` : '') +
        '\n'
    );
  } catch (err) {
    process.stderr.write(`cannot load --data ${args.data}: ${err?.message ?? err}\n`);
    process.exit(1);
  }
}
const engine = new WriteEngine(repo, { onCommit: writeLog ? (ops) => writeLog.commit(ops) : undefined });
const router = new FhirRouter();
const pages = new Map(); // _getpages id -> { type, ids, created, total }
let capabilityJson; // built lazily once the port (base URL) is known

// One queue for every store operation: transactions are atomic and serialized (8 clients posting the same
// conditional bundle at once must end with one Patient), and reads never see half-applied transactions.
let queue = Promise.resolve();
function serialized(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => undefined);
  return run;
}

// ---------------------------------------------------------------------------------------------
// Response helpers

class Reply {
  constructor(status, body, headers = {}) {
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

function outcomeReply(status, diagnostics, code = 'processing') {
  return new Reply(status, operationOutcome(status < 400 ? 'information' : 'error', code, diagnostics));
}

function httpDate(iso) {
  return new Date(iso).toUTCString();
}

function resourceHeaders(resource, baseUrl) {
  const vid = resource.meta?.versionId;
  const headers = {};
  if (vid) {
    headers.ETag = `W/"${vid}"`;
    headers['Content-Location'] = `${baseUrl}/${resource.resourceType}/${resource.id}/_history/${vid}`;
  }
  if (resource.meta?.lastUpdated) {
    headers['Last-Modified'] = httpDate(resource.meta.lastUpdated);
  }
  return headers;
}

async function send(req, res, reply, pretty) {
  const headers = { 'Content-Type': FHIR_JSON, ...reply.headers };
  let payload = Buffer.alloc(0);
  if (reply.body !== undefined) {
    payload = Buffer.from(
      typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body, null, pretty ? 2 : undefined)
    );
  }
  // HAPI gzips when Accept-Encoding lists the gzip token; tiny bodies are not worth it.
  const accepts = (req.headers['accept-encoding'] ?? '').split(',').map((s) => s.trim().split(';')[0]);
  if (accepts.includes('gzip') && payload.length > 1024) {
    payload = await gzip(payload);
    headers['Content-Encoding'] = 'gzip';
  }
  headers['Content-Length'] = payload.length;
  res.writeHead(reply.status, headers);
  res.end(req.method === 'HEAD' ? undefined : payload);
}

// ---------------------------------------------------------------------------------------------
// Request body

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        tooLarge = true; // keep draining so the client can read our 413
        chunks.length = 0;
      } else if (!tooLarge) {
        chunks.push(chunk);
      }
    });
    req.on('end', () => {
      if (tooLarge) {
        reject(new FhirError(413, `SANDBOX-0413: Request body exceeds ${MAX_BODY_BYTES} bytes`, { code: 'too-costly' }));
      } else {
        resolve(Buffer.concat(chunks));
      }
    });
    req.on('error', reject);
  });
}

async function decodeBody(req) {
  let raw = await readBody(req);
  const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (encoding === 'gzip' || encoding === 'x-gzip') {
    try {
      raw = await gunzip(raw, { maxOutputLength: MAX_BODY_BYTES });
    } catch (err) {
      if (err?.code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
        throw new FhirError(413, `SANDBOX-0413: Decompressed request body exceeds ${MAX_BODY_BYTES} bytes`, { code: 'too-costly' });
      }
      throw new FhirError(400, `SANDBOX-0400: Request body is not valid gzip: ${err.message}`);
    }
  } else if (encoding !== 'identity') {
    throw new FhirError(415, `SANDBOX-0415: Unsupported Content-Encoding "${encoding}" (use gzip or none)`);
  }
  return raw;
}

function parseJsonBody(raw) {
  const text = raw.toString('utf8').replace(/^\uFEFF/, '');
  if (!text.trim()) {
    throw new FhirError(400, 'SANDBOX-0400: Request body is empty; a FHIR JSON resource was expected');
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FhirError(400, `SANDBOX-0400: Failed to parse request body as JSON resource. Error was: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Search and paging

function searchsetBundle(id, type, baseUrl, pageResources, links, total) {
  const bundle = {
    resourceType: 'Bundle',
    id,
    meta: { lastUpdated: new Date().toISOString() },
    type: 'searchset',
  };
  if (total !== undefined) {
    bundle.total = total;
  }
  bundle.link = links;
  if (pageResources.length) {
    bundle.entry = pageResources.map((r) => ({
      fullUrl: `${baseUrl}/${type}/${r.id}`,
      resource: structuredClone(r), // copy only the returned page
      search: { mode: 'match' },
    }));
  }
  return bundle;
}

function pageLink(baseUrl, id, offset, count) {
  return `${baseUrl}?_getpages=${id}&_getpagesoffset=${offset}&_count=${count}&_bundletype=searchset`;
}

function rememberPages(id, snapshot) {
  const now = Date.now();
  for (const [key, p] of pages) {
    if (now - p.created > PAGE_TTL_MS || pages.size >= MAX_PAGE_SNAPSHOTS) {
      pages.delete(key);
    } else {
      break; // Map iterates oldest first
    }
  }
  pages.set(id, snapshot);
}

function search(type, pairs, baseUrl, queryString) {
  const plan = parseSearch(type, pairs, baseUrl);
  const matches = executeSearch(repo, plan);
  const id = randomUUID();
  const { offset, count } = plan;
  const page = matches.slice(offset, offset + count);
  const links = [{ relation: 'self', url: `${baseUrl}/${type}${queryString ? `?${queryString}` : ''}` }];
  if (count > 0 && offset + count < matches.length) {
    // Snapshot the ordered ids so later pages are stable while other clients write (like HAPI's _getpages).
    rememberPages(id, { type, ids: matches.map((r) => r.id), created: Date.now(), total: plan.total === 'accurate' });
    links.push({ relation: 'next', url: pageLink(baseUrl, id, offset + count, count) });
  }
  const total = plan.total === 'accurate' ? matches.length : undefined;
  return new Reply(200, searchsetBundle(id, type, baseUrl, page, links, total));
}

function getPage(params, baseUrl) {
  const id = params.get('_getpages');
  const snapshot = pages.get(id);
  if (!snapshot || Date.now() - snapshot.created > PAGE_TTL_MS) {
    pages.delete(id);
    return outcomeReply(410, `SANDBOX-2005: Search ID "${id}" does not exist and may have expired`);
  }
  const offset = Math.max(0, parseInt(params.get('_getpagesoffset') ?? '0', 10) || 0);
  const count = Math.min(MAX_COUNT, Math.max(1, parseInt(params.get('_count') ?? `${DEFAULT_COUNT}`, 10) || DEFAULT_COUNT));
  const ids = snapshot.ids.slice(offset, offset + count);
  const resources = ids.map((rid) => repo.getRaw(snapshot.type, rid)).filter(Boolean); // deleted since: skipped
  const links = [{ relation: 'self', url: pageLink(baseUrl, id, offset, count) }];
  if (offset + count < snapshot.ids.length) {
    links.push({ relation: 'next', url: pageLink(baseUrl, id, offset + count, count) });
  }
  if (offset > 0) {
    links.push({ relation: 'previous', url: pageLink(baseUrl, id, Math.max(0, offset - count), count) });
  }
  const total = snapshot.total ? snapshot.ids.length : undefined;
  return new Reply(200, searchsetBundle(id, snapshot.type, baseUrl, resources, links, total));
}

// ---------------------------------------------------------------------------------------------
// Reads (through Medplum's FhirRouter) and GET dispatch (also used for GET entries inside bundles)

function checkType(type) {
  if (!RESOURCE_TYPES.has(type)) {
    throw new FhirError(404, `SANDBOX-0404: Unknown resource type '${type}'`, { code: 'not-supported' });
  }
}

async function read(segments, baseUrl) {
  const [type, id] = segments;
  checkType(type);
  if (repo.tombstones.has(`${type}/${id}`) && segments.length === 2) {
    return outcomeReply(410, `SANDBOX-0410: Resource ${type}/${id} was deleted`, 'deleted');
  }
  const url = segments.join('/');
  const [outcome, resource] = await router.handleRequest(
    { method: 'GET', url, pathname: '', params: {}, query: {}, body: undefined },
    repo
  );
  if (isOk(outcome) && resource) {
    return new Reply(200, resource, resource.resourceType === 'Bundle' ? {} : resourceHeaders(resource, baseUrl));
  }
  if (isNotFound(outcome)) {
    return outcomeReply(404, `SANDBOX-0404: Resource ${url} is not known`, 'not-found');
  }
  const text = outcome.issue?.map((i) => i.details?.text ?? i.diagnostics).join('; ');
  return outcomeReply(400, `SANDBOX-0400: ${text}`);
}

/** GET of a relative URL ("Patient/1", "Observation?subject=...", "?_getpages=...") -> Reply. */
async function handleGet(relative, baseUrl) {
  const q = relative.indexOf('?');
  const path = (q >= 0 ? relative.slice(0, q) : relative).replace(/^\/+|\/+$/g, '');
  const queryString = q >= 0 ? relative.slice(q + 1) : '';
  const params = new URLSearchParams(queryString);
  const segments = path ? path.split('/').map(decodeURIComponent) : [];
  if (segments.length === 0) {
    if (params.has('_getpages')) {
      return getPage(params, baseUrl);
    }
    throw new FhirError(400, 'SANDBOX-2002: System-level search (GET [base]?...) is not supported by the sandbox');
  }
  if (segments.length === 1 && segments[0] === 'metadata') {
    return new Reply(200, capability(baseUrl));
  }
  if (segments.length === 1) {
    checkType(segments[0]);
    return search(segments[0], [...params], baseUrl, queryString);
  }
  const validShape =
    segments.length === 2 ||
    (segments.length === 3 && segments[2] === '_history') ||
    (segments.length === 4 && segments[2] === '_history');
  if (!validShape) {
    throw new FhirError(404, `SANDBOX-0404: Unknown URL ${path}`, { code: 'not-found' });
  }
  return read(segments, baseUrl);
}

function capability(baseUrl) {
  capabilityJson ??= JSON.stringify(buildCapabilityStatement(baseUrl, routerVersion));
  return capabilityJson;
}

// ---------------------------------------------------------------------------------------------
// Writes

function preferReturn(req) {
  const m = /return=([\w-]+)/i.exec(req.headers.prefer ?? '');
  return m ? m[1].toLowerCase() : undefined;
}

function writeReply(result, req, baseUrl) {
  const r = result.resource;
  const headers = {
    ...resourceHeaders(r, baseUrl),
    Location: `${baseUrl}/${result.location}`,
  };
  const prefer = preferReturn(req);
  if (prefer === 'minimal') {
    return new Reply(result.status, undefined, headers);
  }
  if (prefer === 'operationoutcome') {
    return new Reply(result.status, result.outcome, headers);
  }
  return new Reply(result.status, r, headers); // HAPI returns the resource by default on REST writes
}

async function handleWrite(req, method, segments, queryString, body, baseUrl) {
  const [type, id] = segments;
  checkType(type);
  const ctx = {
    baseUrl,
    label: () => `${type}${id ? `/${id}` : ''}`,
    handleGet: (url) => handleGet(url, baseUrl).then((r) => [r.status, r.body]),
  };
  if (method === 'POST') {
    if (segments.length === 2 && id === '_search') {
      const form = new URLSearchParams(body.toString('utf8'));
      const merged = [...new URLSearchParams(queryString), ...form];
      return search(type, merged, baseUrl, new URLSearchParams(merged).toString());
    }
    if (segments.length !== 1) {
      throw new FhirError(400, `SANDBOX-1004: POST to ${segments.join('/')} is not supported (use PUT to update by id)`);
    }
    const resource = parseJsonBody(body);
    const request = { method: 'POST', url: type };
    if (req.headers['if-none-exist']) {
      request.ifNoneExist = req.headers['if-none-exist'];
    }
    const [result] = await engine.runAtomic([{ resource, request }], ctx);
    return writeReply(result, req, baseUrl);
  }
  if (method === 'PUT') {
    if (segments.length > 2) {
      throw new FhirError(400, `SANDBOX-1004: PUT to ${segments.join('/')} is not supported`);
    }
    const resource = parseJsonBody(body);
    if (id && resource && typeof resource === 'object' && resource.id !== id) {
      throw new FhirError(
        400,
        `SANDBOX-1004: Can not update resource, resource body must contain an ID element which matches the request URL for update (PUT) operation - Resource body ID of "${resource.id}" does not match URL ID of "${id}"`
      );
    }
    if (!id && !queryString) {
      throw new FhirError(400, 'SANDBOX-1004: PUT needs Type/id or Type?search (conditional update)');
    }
    const request = { method: 'PUT', url: id ? `${type}/${id}` : `${type}?${queryString}` };
    if (req.headers['if-match']) {
      request.ifMatch = req.headers['if-match'];
    }
    const [result] = await engine.runAtomic([{ resource, request }], ctx);
    return writeReply(result, req, baseUrl);
  }
  if (method === 'DELETE') {
    if (segments.length > 2 || (!id && !queryString)) {
      throw new FhirError(400, 'SANDBOX-1004: DELETE needs Type/id or Type?search');
    }
    if (id && !repo.getRaw(type, id)) {
      return outcomeReply(404, `SANDBOX-0404: Resource ${type}/${id} is not known (nothing deleted)`, 'not-found');
    }
    const request = { method: 'DELETE', url: id ? `${type}/${id}` : `${type}?${queryString}` };
    const [result] = await engine.runAtomic([{ request }], ctx);
    return new Reply(200, result.outcome);
  }
  throw new FhirError(405, `SANDBOX-0405: Method ${method} is not supported on ${segments.join('/')}`);
}

// ---------------------------------------------------------------------------------------------
// Dispatch

function baseUrlFor(req, port) {
  const host = req.headers.host;
  // Links must point back to the same host:port the client used (127.0.0.1 vs localhost).
  return `http://${host && /^[\w.\-:[\]]+$/.test(host) ? host : `127.0.0.1:${port}`}/fhir`;
}

async function dispatch(req, port) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const baseUrl = baseUrlFor(req, port);
  const method = req.method.toUpperCase();
  const path = url.pathname.replace(/\/+$/, '');
  if (path !== '/fhir' && !path.startsWith('/fhir/')) {
    return outcomeReply(404, `SANDBOX-0404: Unknown path ${url.pathname}; the FHIR base URL is ${baseUrl}`, 'not-found');
  }
  const rest = path.slice('/fhir'.length).replace(/^\/+/, '');
  const segments = rest ? rest.split('/').map(decodeURIComponent) : [];
  const queryString = url.search.slice(1);
  const needsBody = method === 'POST' || method === 'PUT' || method === 'PATCH';
  const body = needsBody ? await decodeBody(req) : undefined;
  if (!needsBody) {
    req.resume(); // ignore any DELETE/GET body
  }

  if (segments.length === 1 && segments[0] === 'metadata' && (method === 'GET' || method === 'HEAD')) {
    return new Reply(200, capability(baseUrl));
  }
  if (segments.length === 1 && segments[0] === '$reset' && method === 'POST') {
    return serialized(() => {
      writeLog?.clear();
      repo.clear();
      pages.clear();
      return outcomeReply(200, 'SANDBOX: store reset, all resources deleted', 'informational');
    });
  }
  if (segments.length === 2 && segments[0] === '_admin' && segments[1] === 'count' && method === 'GET') {
    return serialized(() => new Reply(200, repo.counts(), { 'Content-Type': 'application/json; charset=utf-8' }));
  }
  if (segments.length === 0 && method === 'POST') {
    const bundle = parseJsonBody(body);
    const ctx = {
      baseUrl,
      returnRepresentation: preferReturn(req) === 'representation',
      handleGet: (u) => handleGet(u, baseUrl).catch((err) => new Reply(...errorToOutcome(err))).then((r) => [r.status, r.body]),
    };
    return serialized(async () => new Reply(200, await engine.processBundle(bundle, ctx)));
  }
  if (method === 'GET' || method === 'HEAD') {
    return serialized(() => handleGet(`${rest}${url.search}`, baseUrl));
  }
  if (segments.length === 0) {
    throw new FhirError(405, `SANDBOX-0405: Method ${method} is not supported on the base URL`);
  }
  if (method === 'PATCH') {
    throw new FhirError(405, 'SANDBOX-0405: PATCH is not supported by the sandbox');
  }
  return serialized(() => handleWrite(req, method, segments, queryString, body ?? Buffer.alloc(0), baseUrl));
}

const server = http.createServer((req, res) => {
  const started = Date.now();
  const pretty = /(^|[?&])_pretty=true(&|$)/.test(req.url);
  dispatch(req, server.address().port)
    .catch((err) => {
      const [status, outcome] = errorToOutcome(err);
      if (status >= 500) {
        process.stderr.write(`${req.method} ${req.url} -> ${status}: ${err?.stack ?? err}\n`);
      }
      return new Reply(status, outcome, status === 413 ? { Connection: 'close' } : {});
    })
    .then((reply) => send(req, res, reply, pretty))
    .catch((err) => {
      process.stderr.write(`failed to send response: ${err?.stack ?? err}\n`);
      res.destroy();
    })
    .finally(() => {
      if (args.verbose) {
        process.stderr.write(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - started}ms\n`);
      }
    });
});
// Longer than typical client pool idle times, so a reused keep-alive socket is not closed under a request.
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.on('clientError', (_err, socket) => socket.destroy());
server.on('error', (err) => {
  // e.g. EADDRINUSE: fail fast so the launcher reports it instead of waiting for LISTENING.
  process.stderr.write(`cannot listen on 127.0.0.1:${args.port}: ${err.message}\n`);
  process.exit(1);
});
process.on('uncaughtException', (err) => process.stderr.write(`uncaught: ${err?.stack ?? err}\n`));
process.on('unhandledRejection', (err) => process.stderr.write(`unhandled: ${err?.stack ?? err}\n`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}

if (args.exitWithParent) {
  // The launcher keeps our stdin pipe open; when it dies (even by SIGKILL) the pipe closes and we exit
  // instead of lingering. (process.ppid is fixed at startup in Node 20, and a zombie parent still exists.)
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

server.listen(args.port, '127.0.0.1', () => {
  process.stdout.write(`LISTENING http://127.0.0.1:${server.address().port}/fhir\n`);
});
