// Splits a byte stream into lines without decoding it: bytes stay exactly as
// read (invalid UTF-8 included). "\n" ends a line, a "\r" before it is dropped
// (CRLF files), and a last line without a newline still counts.

export interface Line {
  line: Buffer;
  /** Counted from 1. */
  lineNo: number;
  /** Offset of the line's first byte in the stream. */
  byteOffset: number;
}

export class LineTooLongError extends Error {
  override name = 'LineTooLongError';
}

export const MAX_LINE_BYTES = 8 * 1024 * 1024;

export interface ReadLinesOptions {
  maxLineBytes?: number;
  /** The stream starts after `lines` lines, at byte `offset` of the file (a resumed run). */
  from?: { lines: number; offset: number };
}

export async function* readLines(chunks: AsyncIterable<Buffer> | Iterable<Buffer>, options: ReadLinesOptions = {}): AsyncGenerator<Line> {
  const maxLineBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
  let rest: Buffer = Buffer.alloc(0);
  let restOffset = options.from?.offset ?? 0; // stream offset of rest[0]
  let lineNo = options.from?.lines ?? 0;
  for await (const chunk of chunks) {
    const buf = rest.length ? Buffer.concat([rest, chunk]) : chunk;
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
      const end = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl;
      yield { line: buf.subarray(start, end), lineNo: ++lineNo, byteOffset: restOffset + start };
      start = nl + 1;
    }
    rest = buf.subarray(start);
    restOffset += start;
    if (rest.length > maxLineBytes) throw new LineTooLongError(`line ${lineNo + 1} is longer than ${maxLineBytes} bytes`);
  }
  if (rest.length > 0) {
    const end = rest[rest.length - 1] === 13 ? rest.length - 1 : rest.length;
    yield { line: rest.subarray(0, end), lineNo: ++lineNo, byteOffset: restOffset };
  }
}
