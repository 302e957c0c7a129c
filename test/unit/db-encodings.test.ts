// shared/db/encodings.ts stands in for iconv-lite in the bundles (build.mjs): it must decode the
// server charsets mysql2 still meets exactly as iconv-lite does, and refuse every other by name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import iconv from 'iconv-lite';
import { decode, encode, encodingExists, getDecoder } from '../../shared/db/encodings.ts';

test('cp1252 (MySQL latin1): every byte as iconv-lite decodes it', () => {
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  assert.equal(decode(all, 'cp1252'), iconv.decode(all, 'cp1252'));
  assert.equal(decode(Buffer.from([0x80, 0x9f, 0xe9]), 'windows-1252'), '€Ÿé');
});

test('cesu8 (MySQL utf8mb3): BMP text as iconv-lite decodes it, also split across writes', () => {
  const text = 'MariaDB 10.11.6 — réplique ✓ 日本';
  const bytes = iconv.encode(text, 'cesu8');
  assert.equal(decode(bytes, 'cesu8'), iconv.decode(bytes, 'cesu8'));
  const decoder = getDecoder('cesu8');
  const cut = bytes.indexOf(0xe2) + 1; // inside the dash's three bytes
  assert.equal(decoder.write(bytes.subarray(0, cut)) + decoder.write(bytes.subarray(cut)) + (decoder.end() ?? ''), text);
  assert.deepEqual(encode(text, 'cesu8'), bytes);
});

test('any other encoding fails, naming it', () => {
  assert.equal(encodingExists('utf8'), true);
  assert.equal(encodingExists('cp1252'), true);
  assert.equal(encodingExists('sjis'), false);
  assert.throws(() => getDecoder('sjis'), /encoding 'sjis' is not in this bundle/);
  assert.throws(() => encode('x', 'gbk'), /encoding 'gbk' is not in this bundle/);
});
