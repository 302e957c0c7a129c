// The follower (functions/trigger/follow.ts) on real temporary files, with the real runner
// over a fake broker and a fake run store: appends, partial lines, rename + create,
// copytruncate, inode reuse, globs, long lines, and triggers that die mid-follow and are
// resumed from the last recorded checkpoint (also across rotations while none ran). Every
// scenario ends by comparing "the lake" (rows keyed by line number, the first write
// wins, as raw_logs' INSERT ... ON DUPLICATE KEY UPDATE does) with the lines written.
// TEST_FRAMING=batch (test/unit/follow-batch.test.ts): the same scenarios in batch framing,
// with small batches (7 lines, 4 KiB, 20 ms linger) unpacked by the consumers' decoder.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, renameSync, statSync, symlinkSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { pino } from 'pino';
import type { Publisher } from '../../shared/amqp/publisher.ts';
import { followRun, SAVE_EVERY_LINES } from '../../functions/trigger/follow.ts';
import { createRunner, type Runner } from '../../functions/trigger/runner.ts';
import { LOG_BATCH_TYPE, decodeLogBatch } from '../../shared/contracts/logs.ts';
import type { FramingOptions } from '../../functions/trigger/framing.ts';
import type { Checkpoint, FollowCheckpoint } from '../../functions/trigger/runs.ts';
import { fakeRef, fakeRuns } from './fakes/run-store.ts';

const log = pino({ level: 'silent' });
const FRAMING: FramingOptions = process.env.TEST_FRAMING === 'batch'
  ? { framing: 'batch', maxLines: 7, maxBytes: 4096, lingerMs: 20 }
  : { framing: 'line', maxLines: 1, maxBytes: 1, lingerMs: 0 };
const root = mkdtempSync(path.join(tmpdir(), 'sluice-follow-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const newDir = () => {
  const d = path.join(root, `t${++dirs}`);
  mkdirSync(d);
  return d;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface Sent {
  lineNo: number;
  file: string;
  byteOffset: number;
  line: string;
  truncatedFrom?: number;
  confirmed: boolean;
}

/** A broker that confirms at once, or holds confirms; once dead, it refuses everything (a lost connection). */
function fakeBroker() {
  const sent: Sent[] = [];
  let holding = false;
  let dead = false;
  const held: { confirm: () => void; lose: (err: Error) => void }[] = [];
  const publisher: Publisher = {
    async publish(_exchange, _routingKey, content, options) {
      if (dead) throw new Error('connection lost');
      const h = options.headers as Record<string, unknown>;
      const lines = options.type === LOG_BATCH_TYPE ? decodeLogBatch(h, content) : [{ ...h, line: content } as unknown as ReturnType<typeof decodeLogBatch>[number]];
      const msgs = lines.map((l) => {
        const msg: Sent = { lineNo: l.lineNo, file: l.file as string, byteOffset: l.byteOffset, line: l.line.toString('latin1'), confirmed: false };
        if (l.truncatedFrom !== undefined) msg.truncatedFrom = l.truncatedFrom;
        return msg;
      });
      sent.push(...msgs);
      if (holding) await new Promise<void>((confirm, lose) => held.push({ confirm, lose }));
      for (const msg of msgs) msg.confirmed = true;
    },
    async flush() {},
    async close() {},
  };
  return {
    publisher,
    sent,
    hold: () => void (holding = true),
    release() {
      holding = false;
      for (const h of held.splice(0)) h.confirm();
    },
    kill() {
      dead = true;
      for (const h of held.splice(0)) h.lose(new Error('connection lost'));
    },
  };
}

/** A trigger: the real runner over a fake broker and run store, executing one follow run. */
function startTrigger(o: { dir: string; pattern: string; glob?: boolean; follow?: boolean; from?: Checkpoint; maxLineBytes?: number; runId?: string }) {
  const broker = fakeBroker();
  const runs = fakeRuns();
  // The run row as the store keeps it: the latest checkpoint written (by a progress save or the run's end).
  const row: { checkpoint: Checkpoint | null; history: Checkpoint[]; dead: boolean } = { checkpoint: o.from ?? null, history: [], dead: false };
  const keep = (cp: Checkpoint) => {
    if (row.dead) return;
    row.checkpoint = JSON.parse(JSON.stringify(cp)) as Checkpoint;
    row.history.push(row.checkpoint);
  };
  runs.progress = async (_id, _lines, _published, cp) => (keep(cp), true);
  const finish = runs.finish.bind(runs);
  runs.finish = async (id, end, lease) => {
    if (end.checkpoint) keep(end.checkpoint);
    return !row.dead && (await finish(id, end, lease));
  };
  const runner: Runner = createRunner({ publisher: broker.publisher, runs, log, progressEveryMs: 30 });
  const runId = o.runId ?? '00000000-0000-4000-8000-00000000f011';
  const work = followRun({
    runId, source: 'web', logDir: o.dir, pattern: o.pattern, glob: o.glob ?? false, follow: o.follow ?? true,
    from: o.from?.follow, maxLineBytes: o.maxLineBytes, pollMs: 25, retireAfterMs: 300, log, framing: FRAMING,
  });
  runner.start(fakeRef(runId), work, o.from);
  return {
    broker,
    runs,
    row,
    runId,
    /** POST /v1/runs/:id/stop. */
    stop: async () => {
      await runner.stopRun(runId);
      return runs.finished.get(runId)!;
    },
    /** kill -9: nothing more reaches the broker or the run row; the row keeps its last checkpoint. */
    kill: async () => {
      row.dead = true;
      broker.kill();
      await runner.stop();
    },
  };
}

/** Log files whose every line is unique, remembering where each line was written. */
class Writer {
  readonly expected: { line: string; file: string; byteOffset: number }[] = [];
  private n = 0;
  readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
  }
  /** Appends `count` lines to `rel`; `as`: the name the run knows the file by (its name before a rotation). */
  append(rel: string, count: number, as = rel, tail = '\n'): void {
    const p = path.join(this.dir, rel);
    let offset = (() => {
      try {
        return statSync(p).size;
      } catch {
        return 0;
      }
    })();
    let text = '';
    for (let i = 0; i < count; i++) {
      const line = `10.0.0.${this.n % 250} - - [01/Jan/2024:00:00:00 +0000] "GET /${as}/${++this.n} HTTP/1.1" 200 ${this.n}`;
      this.expected.push({ line, file: as, byteOffset: offset });
      offset += line.length + 1;
      text += line + tail;
    }
    appendFileSync(p, text);
  }
}

/** The lake: rows keyed by line number, the first write wins. `stored`: which sent messages reached it. */
function lake(sent: Sent[][], stored: 'all' | 'confirmed' = 'all') {
  const rows = new Map<number, Sent>();
  for (const s of sent.flat()) if ((stored === 'all' || s.confirmed) && !rows.has(s.lineNo)) rows.set(s.lineNo, s);
  return [...rows.values()].sort((a, b) => a.lineNo - b.lineNo);
}

/** Every line written is in the lake exactly once, with its file and offset, numbered 1..N. */
function assertExactlyOnce(rows: Sent[], w: Writer, msg = '') {
  const key = (r: { line: string; file: string; byteOffset: number }) => `${r.file}@${r.byteOffset} ${r.line}`;
  assert.deepEqual(rows.map((r) => r.lineNo), rows.map((_, i) => i + 1), `${msg}line numbers 1..N`);
  assert.deepEqual(rows.map(key).sort(), w.expected.map(key).sort(), `${msg}the lines written, each once, with file and offset`);
}

const published = (t: { broker: { sent: Sent[] } }, n: number) => until(`${n} lines published`, () => new Set(t.broker.sent.map((s) => s.lineNo)).size >= n);

test('appends in bursts are published in order, with file, offset and line numbers; nothing after the stop', async () => {
  const dir = newDir();
  const w = new Writer(dir);
  w.append('access.log', 5);
  const t = startTrigger({ dir, pattern: 'access.log' });
  await published(t, 5);
  for (let burst = 0; burst < 5; burst++) {
    w.append('access.log', 20 + burst);
    await sleep(30);
  }
  await published(t, w.expected.length);
  const end = await t.stop();
  assert.equal(end.state, 'stopped');
  assert.deepEqual(t.broker.sent.map((s) => s.lineNo), w.expected.map((_, i) => i + 1), 'in order, each once');
  assertExactlyOnce(lake([t.broker.sent]), w);
  const cp = t.row.checkpoint!.follow!;
  assert.equal(cp.nextLineNo, w.expected.length + 1);
  assert.deepEqual(cp.segments, []);
  assert.equal(cp.files[0]!.offset, statSync(path.join(dir, 'access.log')).size);
  w.append('access.log', 3);
  await sleep(100);
  assert.equal(t.broker.sent.length, w.expected.length - 3, 'a stopped run reads nothing more');
});

test('a partial last line waits for its newline; at the stop it stays unpublished, the checkpoint at its start', async () => {
  const dir = newDir();
  const file = path.join(dir, 'access.log');
  writeFileSync(file, 'first\nsec');
  const t = startTrigger({ dir, pattern: 'access.log' });
  await published(t, 1);
  await sleep(150);
  assert.deepEqual(t.broker.sent.map((s) => s.line), ['first'], 'no newline yet: not published');
  appendFileSync(file, 'ond\r\nthi');
  await published(t, 2);
  assert.deepEqual(t.broker.sent.map((s) => [s.line, s.byteOffset]), [['first', 0], ['second', 6]]);
  await sleep(150);
  await t.stop();
  assert.equal(t.broker.sent.length, 2, '"thi" is not a line yet');
  const cp = t.row.checkpoint!.follow!;
  assert.equal(cp.files[0]!.offset, 14, 'the checkpoint is at the start of the unterminated line');
  assert.equal(cp.nextLineNo, 3);
  // Resumed (here: the stopped checkpoint reused), the line is read whole once it is complete.
  appendFileSync(file, 'rd\n');
  const t2 = startTrigger({ dir, pattern: 'access.log', from: t.row.checkpoint! });
  await published(t2, 1);
  await t2.stop();
  assert.deepEqual(t2.broker.sent.map((s) => [s.lineNo, s.line, s.byteOffset]), [[3, 'third', 14]]);
});

test('rename + create: the renamed file is drained before the new one is read, late writes to it are kept', async () => {
  const dir = newDir();
  const w = new Writer(dir);
  w.append('access.log', 50);
  const t = startTrigger({ dir, pattern: 'access.log' });
  await published(t, 10);
  // logrotate: the file is renamed and a new one created; the writer has not reopened yet.
  w.append('access.log', 30);
  renameSync(path.join(dir, 'access.log'), path.join(dir, 'access.log.1'));
  w.append('access.log.1', 10, 'access.log');
  w.append('access.log', 40);
  await published(t, 130);
  const oldLines = new Set(w.expected.slice(0, 90).map((e) => e.line));
  const firstNew = Math.min(...t.broker.sent.filter((s) => !oldLines.has(s.line)).map((s) => s.lineNo));
  const lastOld = Math.max(...t.broker.sent.filter((s) => oldLines.has(s.line)).map((s) => s.lineNo));
  assert.ok(lastOld < firstNew, 'every line written to the old file before the new one was read comes first');
  // A write to the rotated file after the new one is being read is still picked up.
  w.append('access.log.1', 5, 'access.log');
  await published(t, 135);
  await t.stop();
  assertExactlyOnce(lake([t.broker.sent]), w);
});

test('a rotated file is closed after retireAfterMs idle; its unterminated last line is then published', async () => {
  const dir = newDir();
  writeFileSync(path.join(dir, 'access.log'), 'a\nb');
  const t = startTrigger({ dir, pattern: 'access.log' });
  await published(t, 1);
  renameSync(path.join(dir, 'access.log'), path.join(dir, 'access.log.1'));
  writeFileSync(path.join(dir, 'access.log'), 'c\n');
  await published(t, 3);
  await t.stop();
  assert.deepEqual(t.broker.sent.map((s) => [s.lineNo, s.file, s.byteOffset, s.line]), [[1, 'access.log', 0, 'a'], [2, 'access.log', 0, 'c'], [3, 'access.log', 2, 'b']]);
  assert.deepEqual(t.row.checkpoint!.follow!.files.map((f) => f.name), ['access.log'], 'the closed file is out of the checkpoint');
});

test('copytruncate: the lines not yet read are taken from the copy, then the file is read again from 0', async () => {
  for (const big of [true, false]) {
    const dir = newDir();
    const w = new Writer(dir);
    const file = path.join(dir, 'access.log');
    w.append('access.log', big ? 200 : 3); // over and under the 1 KiB of the fingerprint
    const t = startTrigger({ dir, pattern: 'access.log' });
    await published(t, big ? 200 : 3);
    t.broker.hold(); // slow the run down so that lines are still unread when the copy is made
    w.append('access.log', 20);
    copyFileSync(file, path.join(dir, 'access.log.1'));
    truncateSync(file, 0);
    w.append('access.log', 25);
    t.broker.release();
    await published(t, w.expected.length);
    await sleep(100);
    await t.stop();
    assertExactlyOnce(lake([t.broker.sent]), w, big ? 'big: ' : 'small: ');
  }
});

test('copytruncate where the new content outgrew the old offset before the run looked: found by the fingerprint', async () => {
  const dir = newDir();
  const file = path.join(dir, 'access.log');
  writeFileSync(file, 'old one\nold two\n');
  const t = startTrigger({ dir, pattern: 'access.log' });
  await published(t, 2);
  const { ino } = statSync(file);
  writeFileSync(file, 'a new file with other first bytes, longer than the old one\n'); // truncates in place: same inode
  assert.equal(statSync(file).ino, ino);
  await published(t, 3);
  await t.stop();
  assert.deepEqual(t.broker.sent.map((s) => [s.lineNo, s.byteOffset, s.line]), [[1, 0, 'old one'], [2, 8, 'old two'], [3, 0, 'a new file with other first bytes, longer than the old one']]);
});

test('a glob follows every match, picks up new files, and ignores symlinks out of LOG_DIR and copies being made', async () => {
  const dir = newDir();
  mkdirSync(path.join(dir, 'nginx'));
  writeFileSync(path.join(root, 'outside.log'), 'secret\n');
  symlinkSync(path.join(root, 'outside.log'), path.join(dir, 'nginx', 'escape.log'));
  const w = new Writer(dir);
  w.append('nginx/a.log', 30);
  w.append('nginx/b.log', 30);
  writeFileSync(path.join(dir, 'nginx', 'c.txt'), 'not matched\n');
  const t = startTrigger({ dir, pattern: 'nginx/*.log', glob: true });
  await published(t, 60);
  w.append('nginx/new.log', 10);
  for (let i = 0; i < 5; i++) w.append('nginx/a.log', 3), w.append('nginx/b.log', 2), w.append('nginx/new.log', 1);
  // A copy of a followed file (logrotate copying it into a matched name) is not a new file.
  copyFileSync(path.join(dir, 'nginx', 'a.log'), path.join(dir, 'nginx', 'a-copy.log'));
  await published(t, w.expected.length);
  await sleep(150);
  await t.stop();
  assert.ok(!t.broker.sent.some((s) => s.line === 'secret' || s.line === 'not matched'));
  assertExactlyOnce(lake([t.broker.sent]), w);
});

test('lines longer than maxLineBytes are cut and flagged, and the stream goes on', async () => {
  const dir = newDir();
  const file = path.join(dir, 'access.log');
  writeFileSync(file, 'short\n');
  const t = startTrigger({ dir, pattern: 'access.log', maxLineBytes: 1024 });
  await published(t, 1);
  appendFileSync(file, 'x'.repeat(5000));
  await sleep(100);
  appendFileSync(file, 'y'.repeat(5000) + '\nafter\n');
  await published(t, 3);
  await t.stop();
  assert.deepEqual(t.broker.sent.map((s) => [s.lineNo, s.byteOffset, s.line.length, s.truncatedFrom]), [[1, 0, 5, undefined], [2, 6, 1024, 10_000], [3, 10_007, 5, undefined]]);
});

test('files without follow: every match read once, unterminated last lines included, then the run is done', async () => {
  const dir = newDir();
  writeFileSync(path.join(dir, 'a.log'), 'a1\na2');
  writeFileSync(path.join(dir, 'b.log'), 'b1\n');
  const t = startTrigger({ dir, pattern: '*.log', glob: true, follow: false });
  await until('the run to end', () => t.runs.finished.has(t.runId));
  assert.equal(t.runs.finished.get(t.runId)!.state, 'done');
  assert.deepEqual(t.broker.sent.map((s) => [s.lineNo, s.file, s.line]).sort(), [[1, 'a.log', 'a1'], [2, 'b.log', 'b1'], [3, 'a.log', 'a2']].sort());
});

test('a line is checkpointed only once the broker confirmed it', async () => {
  const dir = newDir();
  const w = new Writer(dir);
  w.append('access.log', 10);
  const t = startTrigger({ dir, pattern: 'access.log' });
  await published(t, 10);
  await sleep(100);
  assert.equal(t.row.checkpoint!.follow!.nextLineNo, 11);
  t.broker.hold();
  w.append('access.log', 10);
  await until('10 more lines sent', () => t.broker.sent.length === 20);
  await sleep(100); // several progress saves
  const cp = t.row.checkpoint!.follow!;
  assert.equal(cp.nextLineNo, 11, 'the unconfirmed lines are not behind the checkpoint');
  assert.equal(cp.files[0]!.offset, w.expected[10]!.byteOffset);
  assert.deepEqual(cp.segments, [[cp.files[0]!.id, 10]], 'they are in flight, in order');
  t.broker.release();
  await sleep(100);
  assert.equal(t.row.checkpoint!.follow!.nextLineNo, 21);
  await t.stop();
});

/**
 * A trigger dies mid-follow (the broker holding some confirms, so lines are in flight from
 * several files) and another resumes from the run row: the lake is exact, whichever of the
 * dead trigger's unconfirmed messages had reached it.
 */
test('killed mid-follow of a glob with lines in flight from several files, then resumed: exactly once, same numbers', async () => {
  for (const stored of ['all', 'confirmed'] as const) {
    const dir = newDir();
    const w = new Writer(dir);
    for (const f of ['a.log', 'b.log', 'c.log']) w.append(f, 40);
    const first = startTrigger({ dir, pattern: '*.log', glob: true });
    await published(first, 120);
    first.broker.hold();
    for (let i = 0; i < 6; i++) for (const f of ['a.log', 'b.log', 'c.log']) w.append(f, 7), await sleep(10);
    await until('lines in flight from every file', () => new Set(first.broker.sent.filter((s) => !s.confirmed).map((s) => s.file)).size === 3);
    await sleep(80);
    await first.kill();
    assert.ok(first.row.checkpoint!.follow!.segments.length >= 2, JSON.stringify(first.row.checkpoint!.follow!.segments));
    // Appends while no trigger runs.
    for (const f of ['a.log', 'b.log', 'c.log']) w.append(f, 5);
    const second = startTrigger({ dir, pattern: '*.log', glob: true, from: first.row.checkpoint! });
    await until('every line in the lake', () => lake([first.broker.sent, second.broker.sent], stored).length >= w.expected.length);
    await sleep(100);
    await second.stop();
    assertExactlyOnce(lake([first.broker.sent, second.broker.sent], stored), w, `${stored}: `);
    // The same line always carries the same number, before and after the kill.
    const numbers = new Map<string, number>();
    for (const s of [...first.broker.sent, ...second.broker.sent]) {
      const key = `${s.file}@${s.byteOffset}`;
      assert.equal(numbers.get(key) ?? s.lineNo, s.lineNo, `${key} numbered twice differently`);
      numbers.set(key, s.lineNo);
    }
  }
});

test('rotations while no trigger runs (rename + create, then copytruncate): the resumed run drains the rotated file from its checkpoint', async () => {
  for (const rotate of ['rename', 'copytruncate'] as const) {
    const dir = newDir();
    const w = new Writer(dir);
    const file = path.join(dir, 'access.log');
    w.append('access.log', 100);
    const first = startTrigger({ dir, pattern: 'access.log' });
    await published(first, 100);
    first.broker.hold();
    w.append('access.log', 30);
    await until('lines in flight', () => first.broker.sent.length >= 110);
    await sleep(80);
    await first.kill();
    w.append('access.log', 20); // never read by the first trigger
    if (rotate === 'rename') {
      renameSync(file, `${file}.1`);
      w.append('access.log', 15);
    } else {
      copyFileSync(file, `${file}.1`);
      truncateSync(file, 0);
      w.append('access.log', 15);
    }
    const second = startTrigger({ dir, pattern: 'access.log', from: first.row.checkpoint! });
    await until('every line in the lake', () => lake([first.broker.sent, second.broker.sent]).length >= w.expected.length);
    await sleep(100);
    await second.stop();
    assertExactlyOnce(lake([first.broker.sent, second.broker.sent]), w, `${rotate}: `);
    assertExactlyOnce(lake([first.broker.sent, second.broker.sent], 'confirmed'), w, `${rotate} (confirmed only): `);
  }
});

test('inode reuse: a recorded file whose inode now holds other bytes is not the old file', async () => {
  // Made deterministic: the checkpoint names the current file's device and inode with the
  // fingerprint of other content, as after the old file was deleted and its inode reused.
  const dir = newDir();
  const w = new Writer(dir);
  w.append('access.log', 12);
  const st = statSync(path.join(dir, 'access.log'), { bigint: true });
  const other = Buffer.from('these were the first bytes of the file that had this inode before\n');
  const from: FollowCheckpoint = {
    v: 1, nextLineNo: 41, segments: [], active: 1, nextFileId: 2,
    files: [{ id: 1, name: 'access.log', dev: String(st.dev), ino: String(st.ino), fpLen: other.length, fp: createHash('sha256').update(other).digest('hex'), offset: 900 }],
  };
  const t = startTrigger({ dir, pattern: 'access.log', from: { item: 40, offset: 0, follow: from } });
  await until('lines', () => t.broker.sent.length >= 12);
  await sleep(100);
  await t.stop();
  const rows = lake([t.broker.sent]);
  // The old file's last lines are gone (the numbers it may have used are skipped); the new file is read whole, from 0.
  assert.deepEqual(rows.map((r) => [r.line, r.byteOffset]), w.expected.map((e) => [e.line, e.byteOffset]));
  assert.ok(rows[0]!.lineNo >= 41 + SAVE_EVERY_LINES, `numbers the lost active file may have used are skipped (${rows[0]!.lineNo})`);

  // And for real, where the file system reuses the inode (ext4 often does): deleted, recreated, resumed.
  const dir2 = newDir();
  const w2 = new Writer(dir2);
  const file = path.join(dir2, 'access.log');
  w2.append('access.log', 8);
  const a = startTrigger({ dir: dir2, pattern: 'access.log' });
  await published(a, 8);
  await a.stop();
  const before = statSync(file).ino;
  unlinkSync(file);
  const w3 = new Writer(dir2);
  w3.append('access.log', 5);
  const reused = statSync(file).ino === before;
  const b = startTrigger({ dir: dir2, pattern: 'access.log', from: a.row.checkpoint! });
  await until('the new file', () => b.broker.sent.length >= 5);
  await sleep(100);
  await b.stop();
  assert.deepEqual(b.broker.sent.map((s) => [s.line, s.byteOffset]), w3.expected.map((e) => [e.line, e.byteOffset]), `read from 0 (inode reused: ${reused})`);
  assert.ok(b.broker.sent[0]!.lineNo > 8);
});

test('killed right after a rotated file was closed and its unterminated last line published: that line keeps its number', async () => {
  const dir = newDir();
  const file = path.join(dir, 'access.log');
  writeFileSync(file, 'a\nb');
  const first = startTrigger({ dir, pattern: 'access.log' });
  await published(first, 1);
  renameSync(file, `${file}.1`);
  writeFileSync(file, 'c\n');
  await until('b published when access.log.1 is closed', () => first.broker.sent.some((s) => s.line === 'b'));
  // The checkpoint recorded just before "b" was published: the run switched back to the rotated file to publish it.
  const rotated = String(statSync(`${file}.1`).ino);
  const before = first.row.history.find((c) => c.follow!.nextLineNo === 3 && c.follow!.files.find((f) => f.id === c.follow!.active)?.ino === rotated);
  assert.ok(before, JSON.stringify(first.row.history.map((c) => c.follow)));
  await first.kill();
  appendFileSync(file, 'd\n');
  const second = startTrigger({ dir, pattern: 'access.log', from: before });
  await until('d published', () => second.broker.sent.some((s) => s.line === 'd'));
  await sleep(500);
  await second.stop();
  const rows = lake([first.broker.sent, second.broker.sent]);
  assert.deepEqual(rows.map((r) => [r.lineNo, r.file, r.byteOffset, r.line]), [[1, 'access.log', 0, 'a'], [2, 'access.log', 0, 'c'], [3, 'access.log', 2, 'b'], [4, 'access.log', 2, 'd']]);
});
