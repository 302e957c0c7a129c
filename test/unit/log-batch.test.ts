// Batch framing: the batch message codec (shared/contracts/logs.ts) on good and hostile input,
// the trigger's framer (functions/trigger/framing.ts) over a fake runner publisher, and
// log-clean's handler giving the same rows and rejects for a batch message as for line messages.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { ConsumeMessage } from 'amqplib';
import { pino } from 'pino';
import {
  LOG_BATCH_ENTRY_BYTES, LOG_BATCH_MAX_LINES, LOG_BATCH_TYPE, decodeLogBatch, encodeLogBatch, logBatchMessage, logLineMessage, logLinesContract,
  type BatchLine, type LogLine,
} from '../../shared/contracts/logs.ts';
import { PoisonMessageError } from '../../shared/errors.ts';
import { LineFramer, type FramingOptions } from '../../functions/trigger/framing.ts';
import type { Position, Progress, RunPublisher } from '../../functions/trigger/runner.ts';
import type { PublishOptions } from '../../shared/amqp/publisher.ts';
import type { BatchItem } from '../../shared/amqp/consumer.ts';
import { createHandler, type CleanLogStore, type RejectRow, type RequestRow } from '../../functions/log-clean/handler.ts';

const RUN = '5c7d1f0e-2b3a-4c8d-9e6f-a1b2c3d4e5f6';
const META = { runId: RUN, source: 'web', file: 'nginx/access.log' };

/** A message as the consumer gets it (amqplib leaves undefined header values out). */
function message(content: Buffer, options: PublishOptions): ConsumeMessage {
  const headers = Object.fromEntries(Object.entries(options.headers ?? {}).filter(([, v]) => v !== undefined));
  return { content, fields: {} as ConsumeMessage['fields'], properties: { headers, type: options.type, contentType: options.contentType, messageId: options.messageId } as ConsumeMessage['properties'] };
}

const FIRST = Buffer.from('1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1');
const LINES: BatchLine[] = [
  { line: FIRST, byteOffset: 0 },
  { line: Buffer.alloc(0), byteOffset: FIRST.length + 1 }, // an empty line
  { line: Buffer.from([0xff, 0xfe, 0x00, 0x0d, 0xc3]), byteOffset: FIRST.length + 2 }, // invalid UTF-8, a NUL, a lone CR
  { line: Buffer.from('x'.repeat(10)), byteOffset: FIRST.length + 9, truncatedFrom: 5_000_000_000 }, // cut; its real length past 2^32
  { line: Buffer.from('last'), byteOffset: FIRST.length + 5_000_000_011 },
];

function encoded(lines = LINES, first = 41) {
  return { body: encodeLogBatch(lines), options: logBatchMessage(META, first, lines.length) };
}

/** The decoder refuses it, naming what is wrong. */
function refused(headers: unknown, body: Buffer, reason: RegExp): void {
  assert.throws(() => decodeLogBatch(headers, body), (err: unknown) => err instanceof PoisonMessageError && reason.test(err.message), String(reason));
}

describe('batch message codec', () => {
  test('round trip: every line with its number, offset, bytes and cut length; the same lines as line messages', () => {
    const { body, options } = encoded();
    assert.equal(options.type, LOG_BATCH_TYPE);
    assert.equal(options.messageId, `${RUN}:41+5`);
    const lines = logLinesContract.decode(message(body, options));
    assert.equal(lines.length, LINES.length);
    LINES.forEach((l, i) => {
      const asLine = logLinesContract.decode(message(l.line, logLineMessage({ ...META, lineNo: 41 + i, byteOffset: l.byteOffset, truncatedFrom: l.truncatedFrom })));
      assert.deepEqual(lines[i], asLine[0], `line ${41 + i} decodes as its line message does`);
      assert.ok(lines[i]!.line.equals(l.line));
    });
    assert.equal(lines[3]!.truncatedFrom, 5_000_000_000);
    assert.equal(lines[0]!.truncatedFrom, undefined);
  });

  test('alerts: false and the file travel in the headers; a retried message keeps its x-sluice-* headers', () => {
    const options = logBatchMessage({ ...META, alerts: false }, 1, 1);
    const headers = { ...options.headers, 'x-sluice-attempt': 3, 'x-death': [{}] };
    const [l] = decodeLogBatch(headers, encodeLogBatch([{ line: Buffer.from('a'), byteOffset: 0 }]));
    assert.deepEqual({ ...l, line: l!.line.toString() }, { runId: RUN, source: 'web', file: META.file, alerts: false, lineNo: 1, byteOffset: 0, line: 'a' });
  });

  test('a body cut short anywhere, or with bytes after its lines, is refused (never a wrong line)', () => {
    const { body, options } = encoded();
    for (let n = 0; n < body.length; n++) {
      assert.throws(() => decodeLogBatch(options.headers, body.subarray(0, n)), PoisonMessageError, `cut at ${n} of ${body.length} bytes`);
    }
    refused(options.headers, body.subarray(0, 20), /shorter than its table of 5 lines \(80 bytes\): truncated/);
    refused(options.headers, body.subarray(0, body.length - 1), /line 45 \(4 bytes at body byte \d+\) runs past the end/);
    refused(options.headers, Buffer.concat([body, Buffer.from('!')]), /1 bytes after its 5 lines/);
  });

  test('offsets that go back or overlap the previous line, and cut lengths that are not longer, are refused', () => {
    const back = encodeLogBatch([LINES[0]!, { ...LINES[1]!, byteOffset: 10 }]);
    refused(logBatchMessage(META, 7, 2).headers, back, new RegExp(`line 8 starts at byte 10, not after the previous line \\(which ends at byte ${FIRST.length}\\)`));
    const touching = encodeLogBatch([LINES[0]!, { ...LINES[1]!, byteOffset: FIRST.length }]);
    refused(logBatchMessage(META, 7, 2).headers, touching, /line 8 starts at byte \d+, not after/);
    const same = encodeLogBatch([LINES[0]!, { ...LINES[0]! }]);
    refused(logBatchMessage(META, 1, 2).headers, same, /line 2 starts at byte 0/);
    const cut = encodeLogBatch([{ line: Buffer.from('abc'), byteOffset: 0, truncatedFrom: 3 }]);
    refused(logBatchMessage(META, 1, 1).headers, cut, /line 1 is marked cut from 3 bytes but holds 3/);
  });

  test('hostile headers: huge or absurd counts, a wrong version, missing or wrong fields', () => {
    const { body, options } = encoded();
    const h = options.headers as Record<string, unknown>;
    // A huge count is refused from the headers alone: nothing sized by it is allocated.
    refused({ ...h, lineCount: 2 ** 40 }, body, /invalid log-batch headers: lineCount/);
    refused({ ...h, lineCount: LOG_BATCH_MAX_LINES + 1 }, body, /lineCount/);
    refused({ ...h, lineCount: 0 }, body, /lineCount/);
    refused({ ...h, lineCount: 1.5 }, body, /lineCount/);
    refused({ ...h, lineCount: '5' }, body, /lineCount/);
    // A count larger than the table the body holds: its lines would be read from the bytes of others.
    refused({ ...h, lineCount: 6 }, body, /line 4[0-9] |runs past the end|not after the previous line|marked cut/);
    refused({ ...h, lineCount: LOG_BATCH_MAX_LINES }, body, /shorter than its table of 100000 lines/);
    refused({ ...h, lineCount: 4 }, body, /bytes after its 4 lines/);
    refused({ ...h, v: 2 }, body, /invalid log-batch headers: v/);
    refused({ ...h, firstLineNo: 0 }, body, /firstLineNo/);
    refused({ ...h, firstLineNo: Number.MAX_SAFE_INTEGER }, body, /firstLineNo/);
    refused({ ...h, runId: 'x' }, body, /runId/);
    refused({ ...h, source: 'alert' }, body, /source/);
    refused(undefined, body, /invalid log-batch headers/);
  });

  test('random bodies under valid headers: refused with a PoisonMessageError, or decoded consistently', () => {
    let seed = 42;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 2_000; i++) {
      const count = 1 + Math.floor(rnd() * 4);
      const body = Buffer.from(Array.from({ length: Math.floor(rnd() * 120) }, () => Math.floor(rnd() * (rnd() < 0.7 ? 4 : 256))));
      try {
        const lines = decodeLogBatch(logBatchMessage(META, 1, count).headers, body);
        assert.equal(lines.length, count);
        assert.equal(lines.reduce((n, l) => n + l.line.length, 0) + count * LOG_BATCH_ENTRY_BYTES, body.length);
      } catch (err) {
        assert.ok(err instanceof PoisonMessageError, String(err));
      }
    }
  });

  test('the consumers contract: a line message as one line, an unknown type refused', () => {
    const l = logLineMessage({ runId: RUN, source: 'web', lineNo: 3, byteOffset: 9 });
    assert.deepEqual(logLinesContract.decode(message(Buffer.from('x'), l)).map((x) => x.lineNo), [3]);
    assert.deepEqual(logLinesContract.decode(message(Buffer.from('x'), { ...l, type: undefined })).map((x) => x.lineNo), [3], 'a message from before the type');
    assert.throws(() => logLinesContract.decode(message(Buffer.from('x'), { ...l, type: 'log.lines' })), /unknown message type "log.lines"/);
  });
});

/** A runner publisher that records the messages and confirms them at once. */
function recorder() {
  const sent: { content: Buffer; options: PublishOptions; position: Position; items: number; at: number }[] = [];
  const progress: Progress = { lines: 0, published: 0 };
  const out: RunPublisher = {
    progress,
    signal: new AbortController().signal,
    async publish(_exchange, _routingKey, content, options, position, items = 1) {
      sent.push({ content, options, position, items, at: Date.now() });
      progress.lines += items;
      progress.published += items;
    },
    describeCheckpoint() {},
    async save() {},
  };
  const lines = () => sent.flatMap((s) => logLinesContract.decode(message(s.content, s.options)));
  return { out, sent, lines };
}

const batch = (o: Partial<FramingOptions> = {}): FramingOptions => ({ framing: 'batch', maxLines: 4, maxBytes: 1024, lingerMs: 10_000, ...o });
const line = (lineNo: number, byteOffset: number, text = `line ${lineNo}`) => ({ line: Buffer.from(text), lineNo, byteOffset });

describe('the framer', () => {
  test('packs up to maxLines; the position of a message is its first line; flush sends the rest', async () => {
    const r = recorder();
    const f = new LineFramer(r.out, { runId: RUN, source: 'web' }, batch());
    let offset = 0;
    for (let n = 1; n <= 10; n++) {
      const l = line(n, offset);
      offset += l.line.length + 1;
      await f.add(l, 'a.log');
    }
    assert.deepEqual(f.firstPending, { item: 8, offset: r.lines().reduce((n, l) => n + l.line.length + 1, 0) }, 'lines 9 and 10 held');
    await f.flush();
    f.close();
    assert.equal(f.firstPending, null);
    assert.deepEqual(r.sent.map((s) => [s.position.item, s.items]), [[0, 4], [4, 4], [8, 2]]);
    assert.deepEqual(r.lines().map((l) => l.lineNo), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.equal(r.out.progress.published, 10, 'progress counts lines');
  });

  test('a new message at maxBytes, at another file, at a gap in numbers and where offsets start again; a long line goes alone', async () => {
    const r = recorder();
    const f = new LineFramer(r.out, { runId: RUN, source: 'web' }, batch({ maxLines: 100, maxBytes: 100 }));
    await f.add(line(1, 0), 'a.log');
    await f.add(line(2, 7), 'b.log'); // another file
    await f.add(line(4, 20), 'b.log'); // a gap in numbers (numbers skipped by a resumed follow run)
    await f.add(line(5, 0), 'b.log'); // the same name, a new file (rotated) from 0
    await f.add(line(6, 7, 'y'.repeat(200)), 'b.log'); // longer than maxBytes
    await f.add(line(7, 208), 'b.log');
    await f.add(line(8, 215, 'z'.repeat(70)), 'b.log'); // 7's message would pass 100 bytes
    await f.flush();
    f.close();
    assert.deepEqual(r.sent.map((s) => r.lines().filter((l) => l.lineNo >= s.position.item + 1).slice(0, s.items).map((l) => l.lineNo)), [[1], [2], [4], [5], [6], [7], [8]]);
    assert.deepEqual(r.lines().map((l) => [l.lineNo, l.file, l.byteOffset]), [[1, 'a.log', 0], [2, 'b.log', 7], [4, 'b.log', 20], [5, 'b.log', 0], [6, 'b.log', 7], [7, 'b.log', 208], [8, 'b.log', 215]]);
    for (const s of r.sent) assert.ok(s.content.length <= 100 || s.items === 1, 'over maxBytes only with one line');
  });

  test('a held line goes out after lingerMs without more lines or a flush', async () => {
    const r = recorder();
    const f = new LineFramer(r.out, { runId: RUN, source: 'web', alerts: false }, batch({ lingerMs: 30 }));
    await f.add(line(1, 0), 'a.log');
    assert.equal(r.sent.length, 0);
    const deadline = Date.now() + 5_000;
    while (r.sent.length === 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
    f.close();
    assert.equal(r.sent.length, 1, 'sent by the linger timer');
    assert.deepEqual(r.lines().map((l) => [l.lineNo, l.alerts]), [[1, false]]);
  });

  test('line framing: a line message per line, as before', async () => {
    const r = recorder();
    const f = new LineFramer(r.out, { runId: RUN, source: 'web' }, { ...batch(), framing: 'line' });
    await f.add(line(1, 0), 'a.log');
    await f.add(line(2, 7), 'a.log');
    await f.flush();
    assert.deepEqual(r.sent.map((s) => [s.options.type, s.options.messageId]), [['log.line', `${RUN}:1`], ['log.line', `${RUN}:2`]]);
  });
});

describe('log-clean on a batch message', () => {
  test('the same requests and rejects (with reasons) as the same lines in line messages', async () => {
    const apache = readFileSync(path.resolve(import.meta.dirname, '../../../shared/data/logs/apache_logs')).subarray(0, 200_000);
    const texts = apache.toString('latin1').split('\n').slice(0, 300).map((s) => Buffer.from(s, 'latin1'));
    texts.push(Buffer.from('not a log line'), Buffer.from([0xff, 0x00]));
    const lines: BatchLine[] = [];
    let offset = 0;
    for (const t of texts) lines.push({ line: t, byteOffset: offset }), (offset += t.length + 1);
    lines[5] = { ...lines[5]!, line: lines[5]!.line.subarray(0, 20), truncatedFrom: lines[5]!.line.length };

    const store = () => {
      const s = { requests: [] as RequestRow[], rejects: [] as RejectRow[] };
      const st: CleanLogStore = { insertRequests: async (rows) => void s.requests.push(...rows), insertRejects: async (rows) => void s.rejects.push(...rows) };
      return { s, st };
    };
    const item = (body: LogLine[]): BatchItem<LogLine[]> => ({ body, messageId: undefined, routingKey: 'logs.web.access', redelivered: false, publishedAt: undefined, attempt: 1 });
    const now = () => new Date('2026-01-01T00:00:00Z');
    const ctx = { log: pino({ level: 'silent' }), queue: 'logs.clean' };

    const perLine = store();
    const lineItems = lines.map((l, i) => item(logLinesContract.decode(message(l.line, logLineMessage({ runId: RUN, source: 'web', lineNo: i + 1, byteOffset: l.byteOffset, truncatedFrom: l.truncatedFrom })))));
    await createHandler({ store: perLine.st, now })(lineItems, ctx);

    const batched = store();
    const half = 150;
    const b1 = logLinesContract.decode(message(encodeLogBatch(lines.slice(0, half)), logBatchMessage({ runId: RUN, source: 'web' }, 1, half)));
    const b2 = logLinesContract.decode(message(encodeLogBatch(lines.slice(half)), logBatchMessage({ runId: RUN, source: 'web' }, half + 1, lines.length - half)));
    await createHandler({ store: batched.st, now })([item(b1), item(b2), item(b1)], ctx); // b1 twice: a redelivery

    assert.equal(batched.s.requests.length + batched.s.rejects.length, lines.length, 'every line once');
    assert.deepEqual(batched.s.requests, perLine.s.requests);
    assert.deepEqual(batched.s.rejects, perLine.s.rejects);
    assert.ok(perLine.s.rejects.length >= 3, 'the cut line and the two bad ones are rejects');
    assert.match(batched.s.rejects.find((r) => r.lineNo === 6)!.reason, /longer than the 20-byte limit/);
  });
});
