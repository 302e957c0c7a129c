import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readLines } from '../../shared/weblog/lines.ts';

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
