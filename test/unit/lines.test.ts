import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LineSplitter, readLines } from '../../shared/weblog/lines.ts';

async function collect(chunks: Buffer[], max?: number) {
  const out: [string, number, number][] = [];
  for await (const l of readLines(chunks, { maxLineBytes: max })) out.push([l.line.toString('latin1'), l.lineNo, l.byteOffset]);
  return out;
}

test('LF, CRLF, a last line without newline, empty lines', async () => {
  assert.deepEqual(await collect([Buffer.from('a\r\nbb\n\nccc')]), [['a', 1, 0], ['bb', 2, 3], ['', 3, 6], ['ccc', 4, 7]]);
  assert.deepEqual(await collect([Buffer.from('x\n')]), [['x', 1, 0]]);
  assert.deepEqual(await collect([Buffer.alloc(0)]), []);
});

test('lines and CRLF split across chunks keep their offsets', async () => {
  const text = 'first line\r\nsecond\nthird\r\nlast';
  const expected = await collect([Buffer.from(text)]);
  for (let size = 1; size <= text.length; size++) {
    const chunks: Buffer[] = [];
    for (let i = 0; i < text.length; i += size) chunks.push(Buffer.from(text.slice(i, i + size)));
    assert.deepEqual(await collect(chunks), expected, `chunk size ${size}`);
  }
});

test('bytes are never decoded', async () => {
  const bytes = Buffer.from([0x41, 0xff, 0xfe, 0x0a, 0xc3, 0x28]);
  const lines = [];
  for await (const l of readLines([bytes])) lines.push(l.line.toString('hex'));
  assert.deepEqual(lines, ['41fffe', 'c328']);
});

test('a line longer than the limit is kept cut to the limit, with its real length, and the stream goes on', async () => {
  const lines = [];
  for await (const l of readLines([Buffer.from('ok\n'), Buffer.alloc(40, 0x61), Buffer.from('\r\nnext\n')], { maxLineBytes: 32 })) lines.push(l);
  assert.deepEqual(
    lines.map((l) => [l.line.toString(), l.lineNo, l.byteOffset, l.truncatedFrom]),
    [['ok', 1, 0, undefined], ['a'.repeat(32), 2, 3, 40], ['next', 3, 45, undefined]],
  );
});

/** What readLines must yield, computed the simple way on the whole text. */
function reference(text: Buffer, max: number) {
  const out: [string, number, number, number | undefined][] = [];
  let offset = 0;
  let no = 0;
  while (offset < text.length) {
    let nl = text.indexOf(10, offset);
    const last = nl === -1;
    if (last) nl = text.length;
    let end = nl;
    if (end > offset && text[end - 1] === 13) end--;
    const length = end - offset;
    out.push([text.subarray(offset, offset + Math.min(length, max)).toString('latin1'), ++no, offset, length > max ? length : undefined]);
    offset = nl + 1;
  }
  return out;
}

test('over-long lines, CRLF and chunk boundaries anywhere: same lines, offsets and lengths as the simple reading', async () => {
  const text = Buffer.from('short\r\n' + 'x'.repeat(20) + '\r\n' + 'y'.repeat(16) + '\r\n' + 'z'.repeat(17) + '\n\n' + 'w'.repeat(30) + '\r');
  for (const max of [8, 16, 17, 64]) {
    const expected = reference(text, max);
    for (let size = 1; size <= text.length; size++) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < text.length; i += size) chunks.push(text.subarray(i, i + size));
      const got = [];
      for await (const l of readLines(chunks, { maxLineBytes: max })) got.push([l.line.toString('latin1'), l.lineNo, l.byteOffset, l.truncatedFrom]);
      assert.deepEqual(got, expected, `max ${max}, chunk size ${size}`);
    }
  }
});

test('a 20 MiB line costs no more than the limit in memory and does not stop the stream', async () => {
  function* chunks() {
    yield Buffer.from('before\n');
    for (let i = 0; i < 20 * 16; i++) yield Buffer.alloc(64 * 1024, 0x62);
    yield Buffer.from('\nafter\n');
  }
  const got = [];
  for await (const l of readLines(chunks())) got.push([l.line.length, l.lineNo, l.byteOffset, l.truncatedFrom]);
  assert.deepEqual(got, [[6, 1, 0, undefined], [1024 * 1024, 2, 7, 20 * 1024 * 1024], [5, 3, 7 + 20 * 1024 * 1024 + 1, undefined]]);
});

test('a stream that starts mid-file numbers its lines from there', async () => {
  const lines = [];
  for await (const l of readLines([Buffer.from('c\nd\n')], { from: { lines: 2, offset: 4 } })) lines.push([l.line.toString(), l.lineNo, l.byteOffset]);
  assert.deepEqual(lines, [['c', 3, 4], ['d', 4, 6]]);
});

test('LineSplitter: lines taken one at a time, the rest kept; offset and pending; end() gives the unterminated line', () => {
  const s = new LineSplitter({ offset: 100 });
  s.push(Buffer.from('one\r\ntwo\nthr'));
  assert.equal(s.offset, 100);
  const one = s.next()!;
  assert.deepEqual([one.line.toString(), one.byteOffset, one.nextOffset], ['one', 100, 105]);
  assert.equal(s.offset, 105);
  assert.equal(s.pending, 7, 'two\\nthr still held');
  const two = s.next()!;
  assert.deepEqual([two.line.toString(), two.byteOffset, two.nextOffset], ['two', 105, 109]);
  assert.equal(s.next(), null, 'thr has no newline yet');
  assert.equal(s.offset, 109);
  assert.equal(s.pending, 3);
  s.push(Buffer.from('ee\nfour'));
  const three = s.next()!;
  assert.deepEqual([three.line.toString(), three.byteOffset, three.nextOffset], ['three', 109, 115]);
  assert.equal(s.next(), null);
  const last = s.end()!;
  assert.deepEqual([last.line.toString(), last.byteOffset, last.nextOffset], ['four', 115, 119]);
  assert.equal(s.end(), null);
  assert.equal(s.pending, 0);
});

test('LineSplitter: an over-long line across pushes is cut and flagged, its next offset past its newline', () => {
  const s = new LineSplitter({ maxLineBytes: 8 });
  s.push(Buffer.from('abcdefghij'));
  assert.equal(s.next(), null);
  assert.equal(s.pending, 10);
  s.push(Buffer.from('klm'));
  assert.equal(s.next(), null);
  s.push(Buffer.from('n\r\nok\n'));
  const long = s.next()!;
  assert.deepEqual([long.line.toString(), long.byteOffset, long.nextOffset, long.truncatedFrom], ['abcdefgh', 0, 16, 14]);
  const ok = s.next()!;
  assert.deepEqual([ok.line.toString(), ok.byteOffset, ok.nextOffset, ok.truncatedFrom], ['ok', 16, 19, undefined]);
});

test('LineSplitter pulled line by line between pushes gives what readLines gives', async () => {
  const text = Buffer.from('a\r\n' + 'x'.repeat(50) + '\nshort\n\n' + 'y'.repeat(40) + '\r\nend');
  const expected = [];
  for await (const l of readLines([text], { maxLineBytes: 16 })) expected.push([l.line.toString(), l.byteOffset, l.nextOffset, l.truncatedFrom]);
  for (let size = 1; size <= 9; size++) {
    const s = new LineSplitter({ maxLineBytes: 16 });
    const got = [];
    for (let i = 0; i < text.length; i += size) {
      s.push(text.subarray(i, i + size));
      for (let l = s.next(); l; l = s.next()) got.push([l.line.toString(), l.byteOffset, l.nextOffset, l.truncatedFrom]);
    }
    const last = s.end();
    if (last) got.push([last.line.toString(), last.byteOffset, last.nextOffset, last.truncatedFrom]);
    assert.deepEqual(got, expected, `chunk size ${size}`);
  }
});
