// Splits a byte stream into lines without decoding it: bytes stay exactly as
// read (invalid UTF-8 included). "\n" ends a line, a "\r" before it is dropped
// (CRLF files), and a last line without a newline still counts (readLines; a
// follower decides itself when an unterminated line is final, see LineSplitter.end).
//
// A line longer than `maxLineBytes` never stops the stream and is never held in
// memory whole: its first `maxLineBytes` bytes are yielded with `truncatedFrom`
// set to its real length, the rest is skipped up to the next newline. The
// consumers keep it (the lake truncated with the flag, the clean store as a
// reject with the reason), so one hostile line costs a bounded amount of memory
// and loses nothing but its tail.

export interface Line {
  line: Buffer;
  /** Counted from 1. */
  lineNo: number;
  /** Offset of the line's first byte in the stream. */
  byteOffset: number;
  /** Offset just past the line and its terminator: where the next line starts. */
  nextOffset: number;
  /** Set when the line was cut to `maxLineBytes`: its real length in bytes (without the line ending). */
  truncatedFrom?: number;
}

/** A line as the splitter yields it: numbering is the caller's (a follow run numbers lines across files). */
export type SplitLine = Omit<Line, 'lineNo'>;

/** Default longest line, in bytes (MAX_LINE_BYTES of the trigger). */
export const MAX_LINE_BYTES = 1024 * 1024;

export interface ReadLinesOptions {
  maxLineBytes?: number;
  /** The stream starts after `lines` lines, at byte `offset` of the file (a resumed run). */
  from?: { lines: number; offset: number };
}

/**
 * The incremental splitter: push() bytes, then take complete lines with next() until it
 * answers null, then push more. Lines can be taken one at a time and the rest stays
 * buffered, so a caller may stop after any line. Memory: at most one pushed chunk plus
 * the pending (unterminated) line, itself at most `maxLineBytes`.
 */
export class LineSplitter {
  private readonly max: number;
  private buf: Buffer = Buffer.alloc(0);
  /** Index in buf of the first byte not yet part of a line. */
  private start = 0;
  /** Index in buf from which to look for the next newline (bytes before it have none). */
  private scanFrom = 0;
  /** Stream offset of buf[start]: where the pending line starts. */
  private pos: number;
  /** While skipping the tail of an over-long line: its kept head, its bytes so far, its last byte. */
  private long: { head: Buffer; raw: number; last: number } | null = null;

  constructor(options: { maxLineBytes?: number; offset?: number } = {}) {
    this.max = options.maxLineBytes ?? MAX_LINE_BYTES;
    this.pos = options.offset ?? 0;
  }

  /** Where the first line not yet taken starts (the pending, unterminated line, if any). */
  get offset(): number {
    return this.pos;
  }

  /** Bytes pushed that belong to no line taken yet. */
  get pending(): number {
    return (this.long?.raw ?? 0) + this.buf.length - this.start;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.start >= this.buf.length) {
      this.buf = chunk;
      this.start = this.scanFrom = 0;
    } else {
      const rest = this.buf.subarray(this.start);
      this.scanFrom = this.scanFrom - this.start;
      this.buf = Buffer.concat([rest, chunk]);
      this.start = 0;
    }
  }

  /** The next complete line, or null when the bytes pushed so far end in the middle of one. */
  next(): SplitLine | null {
    const buf = this.buf;
    if (this.long) {
      const nl = buf.indexOf(10, this.start);
      if (nl === -1) {
        this.long.raw += buf.length - this.start;
        if (buf.length > this.start) this.long.last = buf[buf.length - 1]!;
        this.start = this.scanFrom = buf.length;
        return null;
      }
      const raw = this.long.raw + nl - this.start;
      const last = nl > this.start ? buf[nl - 1]! : this.long.last;
      const head = this.long.head;
      this.long = null;
      this.start = this.scanFrom = nl + 1;
      return this.line(head, last === 13 ? raw - 1 : raw, raw + 1);
    }
    const nl = buf.indexOf(10, this.scanFrom);
    if (nl === -1) {
      const rest = buf.length - this.start;
      if (rest > this.max) {
        // Copy the head: a view would pin the whole chunk while the tail is skipped.
        this.long = { head: Buffer.from(buf.subarray(this.start, this.start + this.max)), raw: rest, last: buf[buf.length - 1]! };
        this.start = this.scanFrom = buf.length;
      } else {
        this.scanFrom = buf.length;
      }
      return null;
    }
    const start = this.start;
    const end = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl;
    this.start = this.scanFrom = nl + 1;
    const length = end - start;
    return this.line(length > this.max ? Buffer.from(buf.subarray(start, start + this.max)) : buf.subarray(start, end), length, nl + 1 - start);
  }

  /** The pending bytes as a last line (the stream ended without a newline), or null when there are none. */
  end(): SplitLine | null {
    if (this.long) {
      const { head, raw, last } = this.long;
      this.long = null;
      return this.line(head, last === 13 ? raw - 1 : raw, raw);
    }
    const rest = this.buf.subarray(this.start);
    if (rest.length === 0) return null;
    this.start = this.scanFrom = this.buf.length;
    return this.line(rest, rest[rest.length - 1] === 13 ? rest.length - 1 : rest.length, rest.length);
  }

  private line(bytes: Buffer, length: number, consumed: number): SplitLine {
    const byteOffset = this.pos;
    this.pos += consumed;
    const l: SplitLine = { line: length > this.max ? bytes.subarray(0, this.max) : bytes.subarray(0, length), byteOffset, nextOffset: this.pos };
    if (length > this.max) l.truncatedFrom = length;
    return l;
  }
}

export async function* readLines(chunks: AsyncIterable<Buffer> | Iterable<Buffer>, options: ReadLinesOptions = {}): AsyncGenerator<Line> {
  const splitter = new LineSplitter({ maxLineBytes: options.maxLineBytes, offset: options.from?.offset ?? 0 });
  let lineNo = options.from?.lines ?? 0;
  for await (const chunk of chunks) {
    splitter.push(chunk);
    for (let l = splitter.next(); l; l = splitter.next()) yield { ...l, lineNo: ++lineNo };
  }
  const last = splitter.end();
  if (last) yield { ...last, lineNo: ++lineNo };
}
