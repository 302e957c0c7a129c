import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readLines, LineTooLongError } from '../../shared/weblog/lines.ts';

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

test('a line longer than the limit is an error that names it', async () => {
  await assert.rejects(collect([Buffer.from('ok\n'), Buffer.alloc(40, 0x61)], 32), (err: Error) => err instanceof LineTooLongError && /line 2/.test(err.message));
});

test('a stream that starts mid-file numbers its lines from there', async () => {
  const lines = [];
  for await (const l of readLines([Buffer.from('c\nd\n')], { from: { lines: 2, offset: 4 } })) lines.push([l.line.toString(), l.lineNo, l.byteOffset]);
  assert.deepEqual(lines, [['c', 3, 4], ['d', 4, 6]]);
});
