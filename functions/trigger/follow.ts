// Follow runs: files under LOG_DIR followed like `tail -F`, every line published
// exactly once (as rows: at-least-once to the broker, keyed writes) across
// appends, rotations and triggers that die.
//
// Files. A followed file is a slot: the file's identity (device, inode, and its
// first bytes, up to 1 KiB, whose SHA-256 is the fingerprint), an open handle,
// the offset read so far and the line splitter's pending bytes. The run holds the
// handle, so a file renamed away (rename + create) is still read to its end, and
// its inode cannot be reused while the run holds it. Each turn (every
// `pollMs`, sooner when fs.watch reports a change) the run:
//   1. looks for the files the pattern names (a file, or a glob: new matches are
//      picked up); a file is known by device and inode, so a renamed one keeps
//      its slot and its name (the `file` of its lines stays the name under which
//      the run first saw it). A new file is adopted once it holds bytes and its
//      first bytes are not a copy of a followed file's (logrotate copying one);
//   2. checks every slot for a truncation (copytruncate, or truncated and
//      rewritten): the size fell below the offset read, or its first bytes
//      changed. The slot then moves to the copy, if there is one among the
//      matches and the rotated siblings (`access.log.1`...), that begins with
//      the same bytes and holds at least what was read, and is drained from
//      there; the inode itself starts again at 0 as a new slot;
//   3. reads rotated files (no longer at a matched path) to their end first, so
//      a renamed file is drained before the new file at its path is read, then
//      the current files, up to TURN_BYTES each (one file cannot starve others);
//   4. closes a rotated file once it has not grown for `retireAfterMs` (late
//      writes to it are read until then).
//
// Lines. Only complete lines are published: an unterminated last line waits for
// its newline. It is published as it is only when its file is finished: a
// rotated file closed, a file truncated with no copy found, or the end of a
// one-shot run (`files` without follow). Stopping a run does not publish it: the
// checkpoint stays at its start. Line numbers: one counter per run, across
// files and rotations.
//
// Checkpoint (runs.follow_checkpoint). Only what the broker confirmed counts.
// The runner knows the first unconfirmed message; from it the run records: the
// next line number (of that message), per file its identity and the offset of
// its first unconfirmed line, and the order of the lines in flight as segments
// [file, count], plus the file being read (`active`), whose lines may follow.
// Lines from several files interleave, so a resumed run must give each line the
// number it had before: it publishes the segments again in their order, then
// the active file to its end (and its unterminated last line, when the dead
// trigger may have published it: a rotated file idle for retireAfterMs, the end
// of a one-shot run), and only then anything else. For that to hold,
// the run records its checkpoint before it publishes a line of a file other than
// the active one, and at least every SAVE_EVERY_LINES lines: what was published
// after the last recorded checkpoint is always the active file's next lines.
//
// Resume. Each recorded file is looked for among the matches and their rotated
// siblings: the same device, inode and first bytes (renamed while no trigger
// ran), or else a file beginning with the same bytes that holds at least the
// offset (a copytruncate while no trigger ran). A file found is read from its
// offset; a file gone for good (deleted, compressed) is logged and the numbers
// of its lines in flight are skipped (SAVE_EVERY_LINES of them when it was the
// active one), so no other line takes a number a stored row may already have.
import { createHash } from 'node:crypto';
import { constants, watch, type FSWatcher } from 'node:fs';
import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Logger } from '../../shared/log.ts';
import { LineSplitter, MAX_LINE_BYTES, type SplitLine } from '../../shared/weblog/lines.ts';
import { matchLogFiles, rotatedSiblings, type MatchedFile } from './paths.ts';
import type { Position, RunPublisher, RunWork } from './runner.ts';
import { LineFramer, type FramingOptions } from './framing.ts';
import type { FollowCheckpoint, FollowedFile } from './runs.ts';

/** A file's fingerprint covers its first bytes, up to this many. */
export const FINGERPRINT_BYTES = 1024;
/** The run records its checkpoint at least every this many lines (and bounds the numbers skipped when the active file is lost). */
export const SAVE_EVERY_LINES = 10_000;
/** Files one run follows at once; more matches wait (with a warning) until some close. */
export const MAX_FOLLOWED_FILES = 1024;
/** Longest `file` name a line can carry (raw_logs.file). */
const MAX_NAME = 1024;
const READ_CHUNK = 256 * 1024;
/** Bytes read from one current file per turn before the next file's turn. */
const TURN_BYTES = 4 * 1024 * 1024;
/** Change notifications wake the run at most this often. */
const MIN_TURN_GAP_MS = 20;
const MAX_WATCHED_DIRS = 64;

export interface FollowOptions {
  runId: string;
  source: string;
  /** LOG_DIR. */
  logDir: string;
  /** A file, or a glob (`glob: true`), relative to LOG_DIR. */
  pattern: string;
  glob: boolean;
  /** false: the run ends once every file was read to its end (a glob replayed once). */
  follow: boolean;
  /** A resumed run's checkpoint. */
  from?: FollowCheckpoint | undefined;
  maxLineBytes?: number | undefined;
  /** false: the run muted alerts (`"alerts": false`); every line carries the header `alerts: false`. */
  alerts?: boolean | undefined;
  /** One message per line (the default) or batches of lines (functions/trigger/framing.ts). */
  framing?: FramingOptions | undefined;
  /** How often files are looked at when no change is reported (250 ms). */
  pollMs?: number | undefined;
  /** A rotated file is closed once it has not grown for this long (30 s). */
  retireAfterMs?: number | undefined;
  log?: Logger | undefined;
}

export function followRun(options: FollowOptions): RunWork {
  return async (out) => {
    const follower = new Follower(options, out);
    try {
      await follower.run();
    } finally {
      await follower.close();
    }
  };
}

interface Slot {
  id: number;
  name: string;
  dev: string;
  ino: string;
  /** The file's first bytes (up to FINGERPRINT_BYTES), as last checked. */
  head: Buffer;
  fp: string;
  /** Null once closed (retired, or lost to a truncation). */
  fh: FileHandle | null;
  real: string;
  /** Next byte to read. */
  readPos: number;
  splitter: LineSplitter;
  /** Where the line after the last one published starts. */
  publishedEnd: number;
  /** At a path the pattern names (as of the last look). */
  current: boolean;
  size: number;
  mtimeMs: number;
  lastGrowth: number;
}

/** Published lines the broker may not have confirmed: `count` lines of `slot` from number `first` (slot null: numbers skipped). */
interface Segment {
  slot: Slot | null;
  first: number;
  count: number;
  /** Offset of the segment's first line in its file. */
  firstOffset: number;
}

/** A file that may be a recorded one (a match or a rotated sibling), as stat saw it. */
interface Candidate {
  m: MatchedFile;
  dev: bigint;
  ino: bigint;
  size: number;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const identity = (s: { dev: bigint | string; ino: bigint | string }) => `${s.dev}:${s.ino}`;

async function readHead(fh: FileHandle, n: number): Promise<Buffer> {
  const buf = Buffer.alloc(n);
  let got = 0;
  while (got < n) {
    const { bytesRead } = await fh.read(buf, got, n - got, got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

async function openFile(real: string): Promise<FileHandle | null> {
  try {
    // The path was resolved and confined to LOG_DIR; a symlink swapped in since is not followed.
    return await open(real, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return null;
  }
}

/** `head` (a file's first bytes) is a prefix of a followed file's: a copy of it, possibly being made. */
const isCopyOf = (head: Buffer, of: Buffer) => head.length > 0 && head.length <= of.length && of.subarray(0, head.length).equals(head);

class Follower {
  private readonly o: FollowOptions;
  private readonly out: RunPublisher;
  /** Lines go out through it; in batch framing it holds some (a file's, consecutive) until their message is full, idle or lingered. */
  private readonly framer: LineFramer;
  private readonly pollMs: number;
  private readonly retireAfterMs: number;
  private root = '';
  private slots: Slot[] = [];
  private nextFileId = 1;
  private nextLineNo = 1;
  /** Published lines not known to be confirmed, in publish order. */
  private segs: Segment[] = [];
  /** A resumed run's lines to publish again, in the recorded order. */
  private plan: { slot: Slot | null; count: number }[] = [];
  private replaying = false;
  /** The file whose lines may follow the recorded segments. */
  private active: Slot | null = null;
  private sinceSave = 0;
  private lastScan = 0;
  /** Matched files not adopted yet (empty, or a copy being made): look again next turn. */
  private deferred = false;
  private warnedFull = false;
  /** Files that could not be opened, warned about once (at most MAX_FOLLOWED_FILES remembered). */
  private readonly unreadable = new Set<string>();
  private readonly waker = new Waker();

  constructor(o: FollowOptions, out: RunPublisher) {
    this.o = o;
    this.out = out;
    this.framer = new LineFramer(out, { runId: o.runId, source: o.source, alerts: o.alerts }, o.framing);
    this.pollMs = o.pollMs ?? 250;
    this.retireAfterMs = o.retireAfterMs ?? 30_000;
  }

  async run(): Promise<void> {
    this.root = await realpath(this.o.logDir);
    // Described once restored: a save before that keeps the recorded checkpoint.
    if (this.o.from) await this.restore(this.o.from);
    this.out.describeCheckpoint((first) => this.describe(first));
    await this.scan();
    await this.replay();
    const active = this.active;
    if (active?.fh) {
      await this.drain(active, Infinity);
      // The dead trigger may have published its unterminated last line as a line (a rotated file
      // closed after retireAfterMs idle, the end of a one-shot run): that line's number comes next.
      if (!this.o.follow || (!active.current && Date.now() - active.mtimeMs >= this.retireAfterMs)) await this.flush(active);
    }
    for (;;) {
      const started = Date.now();
      const moved = await this.turn();
      if (!this.o.follow && !moved) return this.finishOneShot();
      if (moved) {
        await nextTurn();
        this.out.signal.throwIfAborted();
        continue;
      }
      // Caught up: what the framer holds goes out now rather than after its linger.
      await this.framer.flush();
      await this.waker.wait(this.pollMs, this.out.signal);
      const gap = MIN_TURN_GAP_MS - (Date.now() - started);
      if (gap > 0) await new Promise((r) => setTimeout(r, gap));
      this.out.signal.throwIfAborted();
    }
  }

  /** Closes the files; the slots stay as they are, for the checkpoint recorded once every confirm is in. */
  async close(): Promise<void> {
    this.framer.close();
    this.waker.close();
    await Promise.all(this.slots.map((s) => s.fh?.close().catch(() => {})));
  }

  // ---- the checkpoint -------------------------------------------------------

  private describe(confirmedUpTo: Position | null): FollowCheckpoint {
    // Lines the framer holds are not published yet: as unconfirmed as the runner's first unconfirmed one.
    const first = confirmedUpTo ?? this.framer.firstPending;
    const nextLineNo = first ? first.item + 1 : this.nextLineNo;
    // What the broker confirmed needs no replay.
    while (this.segs.length > 0 && this.segs[0]!.first + this.segs[0]!.count <= nextLineNo) this.segs.shift();
    const head = this.segs[0];
    if (head && head.first < nextLineNo) {
      head.count -= nextLineNo - head.first;
      head.first = nextLineNo;
      if (first) head.firstOffset = first.offset;
    }
    const firstOffset = new Map<Slot, number>();
    for (const s of this.segs) if (s.slot && !firstOffset.has(s.slot)) firstOffset.set(s.slot, s.firstOffset);
    const files: FollowedFile[] = this.slots.filter((s) => this.needed(s)).map((s) => ({
      id: s.id, name: s.name, dev: s.dev, ino: s.ino, fpLen: s.head.length, fp: s.fp, offset: firstOffset.get(s) ?? s.publishedEnd,
    }));
    const segments: [number, number][] = [];
    const add = (id: number, count: number) => {
      const last = segments.at(-1);
      if (count <= 0) return;
      if (last && last[0] === id) last[1] += count;
      else segments.push([id, count]);
    };
    for (const s of this.segs) add(s.slot?.id ?? -1, s.count);
    for (const p of this.plan) add(p.slot?.id ?? -1, p.count);
    return { v: 1, nextLineNo, files, segments, active: this.active?.id ?? null, nextFileId: this.nextFileId };
  }

  /** A resumed run: find the recorded files and plan the lines to publish again. */
  private async restore(cp: FollowCheckpoint): Promise<void> {
    this.nextLineNo = cp.nextLineNo;
    this.nextFileId = cp.nextFileId;
    const candidates = new Map<string, MatchedFile>();
    for (const m of await matchLogFiles(this.root, this.o.pattern, this.o.glob)) candidates.set(m.real, m);
    for (const name of new Set(cp.files.map((f) => f.name))) for (const m of await rotatedSiblings(this.root, name)) candidates.set(m.real, m);
    const stats: Candidate[] = [];
    for (const m of candidates.values()) {
      try {
        const st = await stat(m.real, { bigint: true });
        stats.push({ m, dev: st.dev, ino: st.ino, size: Number(st.size) });
      } catch {
        // gone meanwhile
      }
    }
    const found = new Map<number, Slot>();
    for (const f of cp.files) {
      const slot = await this.locate(f, stats);
      if (slot) {
        found.set(f.id, slot);
        this.slots.push(slot);
        if (slot.real !== path.resolve(this.root, f.name)) this.o.log?.info({ runId: this.o.runId, file: f.name, at: path.relative(this.root, slot.real), offset: f.offset }, 'followed file found rotated');
      } else if (f.offset > 0 || cp.segments.some(([id]) => id === f.id)) {
        this.o.log?.warn({ runId: this.o.runId, file: f.name, offset: f.offset }, 'followed file is gone (not at its path nor among its rotated siblings): its unread lines are lost');
      }
    }
    for (const [id, count] of cp.segments) this.plan.push({ slot: found.get(id) ?? null, count });
    if (cp.active !== null) {
      const active = found.get(cp.active);
      if (active) this.active = active;
      // The lines it may have published after the checkpoint are unknown: their numbers are skipped.
      else this.plan.push({ slot: null, count: SAVE_EVERY_LINES });
    }
  }

  /** The recorded file: same device, inode and first bytes; else a copy of it holding at least its offset. */
  private async locate(f: FollowedFile, candidates: Candidate[]): Promise<Slot | null> {
    const taken = new Set(this.slots.map((s) => identity(s)));
    const stats = candidates.filter((c) => !taken.has(identity(c)));
    const exact = stats.filter((c) => identity(c) === identity(f));
    const copies = f.fpLen > 0 ? stats.filter((c) => identity(c) !== identity(f) && c.size >= Math.max(f.offset, f.fpLen)) : [];
    for (const c of [...exact, ...copies]) {
      const fh = await openFile(c.m.real);
      if (!fh) continue;
      const st = await fh.stat({ bigint: true });
      const head = await readHead(fh, FINGERPRINT_BYTES);
      if (identity(st) === identity(c) && head.length >= f.fpLen && sha256(head.subarray(0, f.fpLen)) === f.fp && Number(st.size) >= f.offset) {
        return this.slot({ id: f.id, name: f.name, fh, real: c.m.real, st, head, offset: f.offset });
      }
      await fh.close();
    }
    return null;
  }

  private slot(a: { id: number; name: string; fh: FileHandle; real: string; st: { dev: bigint; ino: bigint; size: bigint; mtimeMs: bigint }; head: Buffer; offset: number; current?: boolean }): Slot {
    return {
      id: a.id, name: a.name, dev: String(a.st.dev), ino: String(a.st.ino), head: a.head, fp: sha256(a.head), fh: a.fh, real: a.real,
      readPos: a.offset, splitter: new LineSplitter({ maxLineBytes: this.o.maxLineBytes ?? MAX_LINE_BYTES, offset: a.offset }),
      publishedEnd: a.offset, current: a.current ?? false, size: Number(a.st.size), mtimeMs: Number(a.st.mtimeMs), lastGrowth: Date.now(),
    };
  }

  /** Publish again what the dead trigger may have published, numbered as it was. */
  private async replay(): Promise<void> {
    this.replaying = true;
    while (this.plan.length > 0) {
      const step = this.plan[0]!;
      const slot = step.slot;
      if (slot?.fh) {
        while (step.count > 0) {
          const line = await this.nextLine(slot);
          if (!line) break;
          await this.emit(slot, line);
        }
        if (step.count > 0 && !slot.current) {
          // A rotated file's unterminated last line was published when the file was closed.
          const last = slot.splitter.end();
          if (last) await this.emit(slot, last);
        }
      }
      if (step.count > 0) {
        if (slot) this.o.log?.warn({ runId: this.o.runId, file: slot.name, lines: step.count }, 'fewer lines than recorded: their numbers are skipped');
        this.skip(step.count);
        step.count = 0;
      }
      this.plan.shift();
    }
    this.replaying = false;
  }

  private skip(count: number): void {
    this.segs.push({ slot: null, first: this.nextLineNo, count, firstOffset: 0 });
    this.nextLineNo += count;
  }

  // ---- publishing -----------------------------------------------------------

  private async emit(slot: Slot, l: SplitLine): Promise<void> {
    if (!this.replaying && (this.active !== slot || this.sinceSave >= SAVE_EVERY_LINES)) {
      // The lines after the recorded checkpoint are always the active file's next lines.
      this.active = slot;
      await this.out.save();
      this.sinceSave = 0;
    }
    const lineNo = this.nextLineNo;
    await this.framer.add({ line: l.line, lineNo, byteOffset: l.byteOffset, truncatedFrom: l.truncatedFrom }, slot.name);
    this.nextLineNo++;
    this.sinceSave++;
    slot.publishedEnd = l.nextOffset;
    const last = this.segs.at(-1);
    if (last && last.slot === slot) last.count++;
    else this.segs.push({ slot, first: lineNo, count: 1, firstOffset: l.byteOffset });
    if (this.replaying) this.plan[0]!.count--;
  }

  /** Reads up to READ_CHUNK more bytes of the file into its splitter; 0 at its end. */
  private async read(slot: Slot): Promise<number> {
    if (!slot.fh) return 0;
    const { size } = await slot.fh.stat();
    const want = Math.min(READ_CHUNK, size - slot.readPos);
    if (want <= 0) return 0;
    // A buffer of its own per read: published lines are views of it until the broker has them.
    const buf = Buffer.allocUnsafe(want);
    const { bytesRead } = await slot.fh.read(buf, 0, want, slot.readPos);
    if (bytesRead === 0) return 0;
    slot.readPos += bytesRead;
    slot.splitter.push(buf.subarray(0, bytesRead));
    return bytesRead;
  }

  private async nextLine(slot: Slot): Promise<SplitLine | null> {
    for (;;) {
      const line = slot.splitter.next();
      if (line) return line;
      if ((await this.read(slot)) === 0) return null;
    }
  }

  /** Publishes the file's complete lines, reading up to `budget` bytes; true when anything was read or published. */
  private async drain(slot: Slot, budget: number): Promise<boolean> {
    let moved = false;
    let read = 0;
    for (;;) {
      for (let l = slot.splitter.next(); l; l = slot.splitter.next()) {
        await this.emit(slot, l);
        moved = true;
      }
      if (read >= budget) return moved;
      const n = await this.read(slot);
      if (n === 0) return moved;
      read += n;
      moved = true;
    }
  }

  /** The file is finished: its unterminated last line, if any, is published as it is. */
  private async flush(slot: Slot): Promise<void> {
    const last = slot.splitter.end();
    if (last) await this.emit(slot, last);
  }

  // ---- files ----------------------------------------------------------------

  private live(): Slot[] {
    return this.slots.filter((s) => s.fh !== null);
  }

  private async turn(): Promise<boolean> {
    if (this.deferred || this.waker.renamed || Date.now() - this.lastScan >= this.pollMs) await this.scan();
    for (const s of this.live()) await this.check(s);
    let moved = false;
    for (const s of this.live()) if (!s.current && (await this.drain(s, Infinity))) moved = true;
    for (const s of this.live()) if (s.current && (await this.drain(s, TURN_BYTES))) moved = true;
    if (this.o.follow) await this.retire();
    this.slots = this.slots.filter((s) => this.needed(s));
    return moved;
  }

  /** A closed file is forgotten once no line of it may need publishing again. */
  private needed(s: Slot): boolean {
    return s.fh !== null || s === this.active || this.segs.some((g) => g.slot === s) || this.plan.some((p) => p.slot === s);
  }

  /** Which files the pattern names now: known ones are marked current, new ones adopted. */
  private async scan(): Promise<void> {
    this.lastScan = Date.now();
    this.waker.renamed = false;
    this.deferred = false;
    const matches = await matchLogFiles(this.root, this.o.pattern, this.o.glob);
    const seen = new Set<Slot>();
    for (const m of matches) {
      let st;
      try {
        st = await stat(m.real, { bigint: true });
      } catch {
        continue;
      }
      const known = this.live().find((s) => identity(s) === identity(st));
      if (known) {
        seen.add(known);
        known.real = m.real;
        continue;
      }
      const adopted = await this.adopt(m);
      if (adopted) seen.add(adopted);
    }
    for (const s of this.live()) s.current = seen.has(s);
    const dirs = new Set(this.live().map((s) => path.dirname(s.real)));
    dirs.add(path.dirname(path.resolve(this.root, this.o.glob ? this.o.pattern.split(/[*?[{]/, 1)[0]! + 'x' : this.o.pattern)));
    this.waker.watch(dirs);
  }

  private async adopt(m: MatchedFile): Promise<Slot | null> {
    const fh = await openFile(m.real);
    if (!fh) {
      if (!this.unreadable.has(m.real) && this.unreadable.size < MAX_FOLLOWED_FILES) {
        this.unreadable.add(m.real);
        this.o.log?.warn({ runId: this.o.runId, file: m.rel }, 'matched file cannot be opened (permissions?): not followed until it can be');
      }
      return null;
    }
    this.unreadable.delete(m.real);
    const st = await fh.stat({ bigint: true });
    const known = this.live().find((s) => identity(s) === identity(st));
    const head = known || st.size === 0n ? null : await readHead(fh, FINGERPRINT_BYTES);
    let refusal: string | null = null;
    if (known) refusal = 'known';
    else if (!head || head.length === 0) refusal = 'empty';
    else if (this.live().some((s) => isCopyOf(head, s.head))) refusal = 'copy';
    else if (Buffer.byteLength(m.rel) > MAX_NAME) refusal = 'name';
    else if (this.live().length >= MAX_FOLLOWED_FILES) refusal = 'full';
    if (refusal) {
      await fh.close();
      if (refusal === 'known') return known!;
      if (refusal === 'empty' || refusal === 'copy') this.deferred = true;
      if (refusal === 'name') this.o.log?.warn({ runId: this.o.runId, file: m.rel.slice(0, 200) }, `file name longer than ${MAX_NAME} bytes: not followed`);
      if (refusal === 'full' && !this.warnedFull) {
        this.warnedFull = true;
        this.o.log?.warn({ runId: this.o.runId, file: m.rel, max: MAX_FOLLOWED_FILES }, 'too many files matched: the rest wait until some close');
      }
      return null;
    }
    const slot = this.slot({ id: this.nextFileId++, name: m.rel, fh, real: m.real, st, head: head!, offset: 0, current: true });
    this.slots.push(slot);
    return slot;
  }

  /** Size and first bytes: a file truncated or rewritten under the run. */
  private async check(slot: Slot): Promise<void> {
    const fh = slot.fh!;
    let st;
    try {
      st = await fh.stat();
    } catch {
      return;
    }
    if (st.size === slot.size && st.mtimeMs === slot.mtimeMs) return;
    let truncated = st.size < slot.readPos;
    if (!truncated && slot.head.length > 0) truncated = !(await readHead(fh, slot.head.length)).equals(slot.head);
    if (truncated) return this.truncated(slot);
    if (slot.head.length < FINGERPRINT_BYTES && st.size > slot.head.length) {
      slot.head = await readHead(fh, FINGERPRINT_BYTES);
      slot.fp = sha256(slot.head);
    }
    if (st.size > slot.size) slot.lastGrowth = Date.now();
    slot.size = st.size;
    slot.mtimeMs = st.mtimeMs;
  }

  /**
   * The file's bytes were replaced under the run. Its lines continue in a copy when there is
   * one (copytruncate); the inode itself is read again from 0, as a new file.
   */
  private async truncated(slot: Slot): Promise<void> {
    const fh = slot.fh!;
    const st = await fh.stat({ bigint: true });
    const fresh = this.slot({ id: this.nextFileId++, name: slot.name, fh, real: slot.real, st, head: await readHead(fh, FINGERPRINT_BYTES), offset: 0, current: slot.current });
    this.slots.push(fresh);
    const copy = await this.findCopy(slot);
    slot.current = false;
    if (copy) {
      this.o.log?.info({ runId: this.o.runId, file: slot.name, copy: path.relative(this.root, copy.real), offset: slot.readPos }, 'file truncated (copytruncate): reading its copy from the same offset, then the file from 0');
      Object.assign(slot, copy, { lastGrowth: Date.now() });
      return;
    }
    this.o.log?.warn({ runId: this.o.runId, file: slot.name, offset: slot.readPos, size: Number(st.size) }, 'file truncated and no copy of it found: reading it again from 0 (lines written to it since the last read are lost)');
    slot.fh = null;
    await this.flush(slot);
    if (this.active === slot) this.active = null;
  }

  private async findCopy(slot: Slot): Promise<Pick<Slot, 'fh' | 'dev' | 'ino' | 'real' | 'size' | 'mtimeMs'> | null> {
    const candidates = new Map<string, MatchedFile>();
    for (const m of await matchLogFiles(this.root, this.o.pattern, this.o.glob)) candidates.set(m.real, m);
    for (const m of await rotatedSiblings(this.root, slot.name)) candidates.set(m.real, m);
    const taken = new Set(this.live().map((s) => identity(s)));
    for (const m of candidates.values()) {
      const fh = await openFile(m.real);
      if (!fh) continue;
      const st = await fh.stat({ bigint: true });
      if (!taken.has(identity(st)) && st.size >= BigInt(Math.max(slot.readPos, slot.head.length)) && (await readHead(fh, slot.head.length)).equals(slot.head)) {
        return { fh, dev: String(st.dev), ino: String(st.ino), real: m.real, size: Number(st.size), mtimeMs: Number(st.mtimeMs) };
      }
      await fh.close();
    }
    return null;
  }

  /** Rotated files read to their end and idle for retireAfterMs are finished and closed. */
  private async retire(): Promise<void> {
    const now = Date.now();
    for (const s of this.live()) {
      if (s.current || s.readPos < s.size || now - s.lastGrowth < this.retireAfterMs) continue;
      await this.flush(s);
      await s.fh!.close().catch(() => {});
      s.fh = null;
      if (this.active === s) this.active = null;
    }
  }

  /** `files` without follow: every file was read to its end. */
  private async finishOneShot(): Promise<void> {
    for (const s of this.live()) await this.flush(s);
    await this.framer.flush();
  }
}

/** Wakes the run when a watched directory reports a change; polling covers what it misses. */
class Waker {
  private readonly watchers = new Map<string, FSWatcher>();
  private wake: (() => void) | null = null;
  private signalled = false;
  /** A file was created, renamed or deleted: look for files again. */
  renamed = false;

  watch(dirs: Set<string>): void {
    for (const [dir, w] of this.watchers) if (!dirs.has(dir)) w.close(), this.watchers.delete(dir);
    for (const dir of dirs) {
      if (this.watchers.has(dir) || this.watchers.size >= MAX_WATCHED_DIRS) continue;
      try {
        const w = watch(dir, { persistent: false }, (event) => this.fire(event));
        w.on('error', () => (w.close(), this.watchers.delete(dir)));
        this.watchers.set(dir, w);
      } catch {
        // not watchable (gone, or no inotify left): polling only
      }
    }
  }

  private fire(event: string): void {
    if (event === 'rename') this.renamed = true;
    this.signalled = true;
    this.wake?.();
  }

  async wait(ms: number, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    if (!this.signalled) {
      await new Promise<void>((resolve, reject) => {
        const end = (fn: () => void) => () => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          this.wake = null;
          fn();
        };
        const onAbort = end(() => reject(signal.reason));
        const timer = setTimeout(end(resolve), ms);
        signal.addEventListener('abort', onAbort, { once: true });
        this.wake = end(resolve);
      });
    }
    this.signalled = false;
  }

  close(): void {
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }
}
