// Splits a byte stream into lines without decoding it: bytes stay exactly as
// read (invalid UTF-8 included). "\n" ends a line, a "\r" before it is dropped
// (CRLF files), and a last line without a newline still counts.
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
  /** Set when the line was cut to `maxLineBytes`: its real length in bytes (without the line ending). */
  truncatedFrom?: number;
}

/** Default longest line, in bytes (MAX_LINE_BYTES of the trigger). */
export const MAX_LINE_BYTES = 1024 * 1024;

export interface ReadLinesOptions {
  maxLineBytes?: number;
  /** The stream starts after `lines` lines, at byte `offset` of the file (a resumed run). */
  from?: { lines: number; offset: number };
}

export async function* readLines(chunks: AsyncIterable<Buffer> | Iterable<Buffer>, options: ReadLinesOptions = {}): AsyncGenerator<Line> {
  const max = options.maxLineBytes ?? MAX_LINE_BYTES;
  let rest: Buffer = Buffer.alloc(0);
  let pos = options.from?.offset ?? 0; // stream offset of the first byte not yet yielded
  let lineNo = options.from?.lines ?? 0;
  // While skipping the tail of an over-long line: its kept head, its bytes so far, its last byte.
  let long: { head: Buffer; raw: number; last: number } | null = null;

  const line = (bytes: Buffer, length: number): Line => {
    const l: Line = { line: length > max ? bytes.subarray(0, max) : bytes.subarray(0, length), lineNo: ++lineNo, byteOffset: pos };
    if (length > max) l.truncatedFrom = length;
    return l;
  };

  for await (const chunk of chunks) {
    let buf = chunk;
    if (long) {
      const nl = chunk.indexOf(10);
      if (nl === -1) {
        long.raw += chunk.length;
        if (chunk.length > 0) long.last = chunk[chunk.length - 1]!;
        continue;
      }
      const raw = long.raw + nl;
      const last = nl > 0 ? chunk[nl - 1]! : long.last;
      yield line(long.head, last === 13 ? raw - 1 : raw);
      pos += raw + 1;
      long = null;
      buf = chunk.subarray(nl + 1);
    } else if (rest.length) {
      buf = Buffer.concat([rest, chunk]);
    }
    let start = 0;
    for (let nl = buf.indexOf(10); nl !== -1; nl = buf.indexOf(10, start)) {
      const end = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl;
      // Copy the head of an over-long line: a view would pin the whole chunk.
      yield line(end - start > max ? Buffer.from(buf.subarray(start, start + max)) : buf.subarray(start, end), end - start);
      pos += nl + 1 - start;
      start = nl + 1;
    }
    rest = buf.subarray(start);
    if (rest.length > max) {
      long = { head: Buffer.from(rest.subarray(0, max)), raw: rest.length, last: rest[rest.length - 1]! };
      rest = Buffer.alloc(0);
    }
  }
  if (long) {
    yield line(long.head, long.last === 13 ? long.raw - 1 : long.raw);
  } else if (rest.length > 0) {
    yield line(rest, rest[rest.length - 1] === 13 ? rest.length - 1 : rest.length);
  }
}
