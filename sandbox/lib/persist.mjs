// Optional persistence (--data DIR): an append-only NDJSON log of committed writes, replayed on start.
// One line per committed atomic unit (a transaction, one batch entry, one REST write), written
// and fsynced before the client gets its answer, so every acknowledged write survives a SIGKILL. A line is
// written with its newline in one write, so a kill mid-write leaves a last line without "\n": that
// transaction was never acknowledged and is dropped on replay (and cut off the file before appending).
import fs from 'node:fs';
import path from 'node:path';

export const LOG_NAME = 'store.ndjson';

export class WriteLog {
  constructor(dir) {
    fs.mkdirSync(dir, { recursive: true });
    this.file = path.join(dir, LOG_NAME);
    this.fd = undefined;
  }

  /** Re-applies every complete line to `repo`; returns { transactions, tornBytes }. Opens the log for appending. */
  async replay(repo) {
    let data = Buffer.alloc(0);
    try {
      data = fs.readFileSync(this.file);
    } catch (err) {
      if (err.code !== 'ENOENT') {
        throw err;
      }
    }
    let offset = 0;
    let transactions = 0;
    let lineNo = 0;
    while (offset < data.length) {
      const nl = data.indexOf(0x0a, offset);
      if (nl < 0) {
        break; // torn last line: never fsynced as a whole, never acknowledged
      }
      lineNo += 1;
      let record;
      try {
        record = JSON.parse(data.subarray(offset, nl).toString('utf8'));
      } catch (err) {
        // A complete line that does not parse is not a torn write: refuse to guess what the store held.
        throw new Error(`${this.file}:${lineNo}: corrupt log line (${err.message})`);
      }
      for (const op of record.tx ?? []) {
        await applyOp(repo, op);
      }
      transactions += 1;
      offset = nl + 1;
    }
    const tornBytes = data.length - offset;
    this.fd = fs.openSync(this.file, 'a');
    if (tornBytes > 0) {
      // Appending after the fragment would glue the next transaction onto it and corrupt both.
      fs.ftruncateSync(this.fd, offset);
      fs.fsyncSync(this.fd);
    }
    return { transactions, tornBytes };
  }

  /** $reset: the store is empty, so the log restarts empty too (no reset op to replay, no dead lines). */
  clear() {
    if (this.fd !== undefined) {
      fs.ftruncateSync(this.fd, 0);
      fs.fsyncSync(this.fd);
    }
  }

  /** Appends one committed unit and fsyncs; throws (so the caller rolls back) if the disk refuses. */
  commit(ops) {
    if (this.fd === undefined) {
      throw new Error('WriteLog.commit before replay');
    }
    const line = Buffer.from(`${JSON.stringify({ tx: ops })}\n`);
    let written = 0;
    while (written < line.length) {
      written += fs.writeSync(this.fd, line, written, line.length - written);
    }
    fs.fsyncSync(this.fd);
  }
}

async function applyOp(repo, op) {
  if (op.op === 'put') {
    // The logged resource carries its id, versionId and lastUpdated; createResource keeps all three.
    await repo.createResource(op.resource);
  } else if (op.op === 'del') {
    await repo.deleteResource(op.type, op.id);
  } else {
    throw new Error(`unknown log op ${JSON.stringify(op.op)}`);
  }
}
