// In-memory store: Medplum's MemoryRepository plus candidate indexes (references, codings/identifiers),
// tombstones for deleted resources, and snapshot/restore used as the transaction undo journal.
import { MemoryRepository } from '@medplum/fhir-router';

/** Strips `/_history/vid` so versioned and versionless references index the same. */
export function normalizeReference(ref) {
  const i = ref.indexOf('/_history/');
  return i >= 0 ? ref.slice(0, i) : ref;
}

/** Collects every literal reference string and every system|code / system|value token in a resource. */
export function extractIndexKeys(resource) {
  const refs = new Set();
  const tokens = new Set();
  const walk = (node) => {
    if (Array.isArray(node)) {
      for (const item of node) {
        walk(item);
      }
      return;
    }
    if (node === null || typeof node !== 'object') {
      return;
    }
    if (typeof node.reference === 'string' && !node.reference.startsWith('#')) {
      refs.add(normalizeReference(node.reference));
    }
    // Coding has system+code, Identifier has system+value: both feed token searches.
    const code = typeof node.code === 'string' ? node.code : typeof node.value === 'string' ? node.value : undefined;
    if (code !== undefined) {
      const c = code.toLowerCase();
      tokens.add(`c:${c}`);
      if (typeof node.system === 'string') {
        tokens.add(`s:${node.system.toLowerCase()}|${c}`);
      }
    }
    for (const key in node) {
      const v = node[key];
      if (v !== null && typeof v === 'object') {
        walk(v);
      }
    }
  };
  walk(resource);
  return { refs: [...refs], tokens: [...tokens] };
}

function addTo(indexByType, type, keys, id) {
  let index = indexByType.get(type);
  if (!index) {
    index = new Map();
    indexByType.set(type, index);
  }
  for (const key of keys) {
    let ids = index.get(key);
    if (!ids) {
      ids = new Set();
      index.set(key, ids);
    }
    ids.add(id);
  }
}

function removeFrom(indexByType, type, keys, id) {
  const index = indexByType.get(type);
  for (const key of keys) {
    const ids = index?.get(key);
    ids?.delete(id);
    if (ids?.size === 0) {
      index.delete(key);
    }
  }
}

export class SandboxRepository extends MemoryRepository {
  constructor() {
    super();
    this.refIndex = new Map(); // resourceType -> Map<"Type/id", Set<id>>
    this.tokenIndex = new Map(); // resourceType -> Map<"s:sys|code" | "c:code", Set<id>>
    this.indexedKeys = new Map(); // "Type/id" -> {refs, tokens} currently indexed, for removal
    this.tombstones = new Set(); // "Type/id" of deleted resources: reads answer 410 like HAPI
    this.seqs = new Map(); // "Type/id" -> creation sequence number (default search order)
    this.nextSeq = 0;
  }

  seqOf(type, id) {
    return this.seqs.get(`${type}/${id}`) ?? Number.MAX_SAFE_INTEGER;
  }

  clear() {
    super.clear();
    this.refIndex.clear();
    this.tokenIndex.clear();
    this.indexedKeys.clear();
    this.tombstones.clear();
    this.seqs.clear();
  }

  /** The stored current version (not a copy: callers must not mutate it). */
  getRaw(type, id) {
    return this.resources.get(type)?.get(id);
  }

  /** Map<id, resource> of current versions of a type (live view, do not mutate). */
  typeMap(type) {
    return this.resources.get(type) ?? new Map();
  }

  counts() {
    const out = {};
    for (const [type, map] of this.resources) {
      if (map.size > 0) {
        out[type] = map.size;
      }
    }
    return out;
  }

  async createResource(resource) {
    const result = await super.createResource(resource);
    this.reindex(result.resourceType, result.id);
    return result;
  }

  // MemoryRepository.readHistory reverses the stored history array in place (so every second call
  // returns the wrong order, and the undo journal's truncation would cut the wrong versions): copy first.
  async readHistory(type, id) {
    await this.readResource(type, id);
    const versions = [...(this.history.get(type)?.get(id) ?? [])].reverse();
    return {
      resourceType: 'Bundle',
      type: 'history',
      total: versions.length,
      ...(versions.length ? { entry: versions.map((v) => ({ resource: structuredClone(v) })) } : undefined),
    };
  }

  async deleteResource(type, id) {
    await super.deleteResource(type, id);
    this.reindex(type, id);
    this.tombstones.add(`${type}/${id}`);
  }

  reindex(type, id) {
    const key = `${type}/${id}`;
    const old = this.indexedKeys.get(key);
    if (old) {
      removeFrom(this.refIndex, type, old.refs, id);
      removeFrom(this.tokenIndex, type, old.tokens, id);
      this.indexedKeys.delete(key);
    }
    const current = this.getRaw(type, id);
    if (current) {
      const keys = extractIndexKeys(current);
      addTo(this.refIndex, type, keys.refs, id);
      addTo(this.tokenIndex, type, keys.tokens, id);
      this.indexedKeys.set(key, keys);
      this.tombstones.delete(key);
      if (!this.seqs.has(key)) {
        this.seqs.set(key, this.nextSeq++);
      }
    }
  }

  /** Ids of `type` resources containing reference `ref` anywhere (superset for reference searches). */
  idsReferencing(type, ref) {
    return this.refIndex.get(type)?.get(ref);
  }

  idsWithToken(type, token) {
    return this.tokenIndex.get(type)?.get(token);
  }

  /** All (type, id) pairs whose current version references `ref` (for delete conflict checks). */
  referrersOf(ref) {
    const out = [];
    for (const [type, index] of this.refIndex) {
      for (const id of index.get(ref) ?? []) {
        out.push({ type, id });
      }
    }
    return out;
  }

  // Undo journal support: Medplum's MemoryRepository has no rollback, so a transaction snapshots each
  // (type, id) it is about to touch and restores the snapshots in reverse order on failure.
  snapshot(type, id) {
    return {
      type,
      id,
      current: this.getRaw(type, id),
      historyLength: this.history.get(type)?.get(id)?.length ?? 0,
      tombstoned: this.tombstones.has(`${type}/${id}`),
    };
  }

  restore(snap) {
    const { type, id } = snap;
    if (snap.current) {
      if (!this.resources.has(type)) {
        this.resources.set(type, new Map());
      }
      this.resources.get(type).set(id, snap.current);
    } else {
      this.resources.get(type)?.delete(id);
    }
    const versions = this.history.get(type)?.get(id);
    if (versions) {
      versions.length = snap.historyLength;
      if (snap.historyLength === 0) {
        this.history.get(type).delete(id);
      }
    }
    this.reindex(type, id);
    if (snap.tombstoned) {
      this.tombstones.add(`${type}/${id}`);
    } else {
      this.tombstones.delete(`${type}/${id}`);
    }
  }
}
