// npm start's log sink (scripts/start-logs.ts): readable lines on a terminal, JSON lines with the
// function's name otherwise, and every line in the combined file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLogSink } from '../../scripts/start-logs.ts';

const record = JSON.stringify({ level: 40, time: Date.UTC(2026, 10, 25, 12, 0, 0), pid: 1, hostname: 'h', name: 'log-clean', msg: 'batch split', size: 500 });

function sink(pretty: boolean, colour: boolean) {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-start-logs-'));
  const out: string[] = [];
  const s = createLogSink({ dir, pretty, colour, out: (t) => void out.push(t), now: new Date(Date.UTC(2026, 10, 25, 12, 0, 0)) });
  return { s, out, dir };
}

test('a terminal gets one readable line per record, with the function, level and fields', async () => {
  const { s, out, dir } = sink(true, false);
  s.line('log-clean#2', 'cyan', record);
  s.line('trigger', 'yellow', 'TypeError: boom (a line that is not JSON)');
  await s.close();
  assert.match(out[0]!, /^log-clean#2 +\[\d\d:\d\d:\d\d\.\d{3}\] WARN: batch split .*size.*500/);
  assert.doesNotMatch(out[0]!, /hostname|pid/, 'what every line of a process shares is left out');
  assert.equal(out[1], `${'trigger'.padEnd(16)} TypeError: boom (a line that is not JSON)\n`);
  assert.equal(path.basename(s.file), 'sluice-2026-11-25T12-00-00.log');
  const file = readFileSync(s.file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(file.map((r) => [r.fn, r.msg]), [['log-clean#2', 'batch split'], ['trigger', 'TypeError: boom (a line that is not JSON)']]);
  assert.equal(file[1].raw, true, 'a line that was not JSON is marked as such');
  rmSync(dir, { recursive: true });
});

test('colour only when asked; JSON lines with the function when not pretty', async () => {
  const coloured = sink(true, true);
  coloured.s.line('log-lake', 'green', record);
  await coloured.s.close();
  assert.match(coloured.out[0]!, /\x1b\[/, 'ANSI colours');
  const plain = sink(false, false);
  plain.s.line('log-lake', 'green', record);
  await plain.s.close();
  assert.deepEqual(JSON.parse(plain.out[0]!), { fn: 'log-lake', ...JSON.parse(record) });
  assert.doesNotMatch(plain.out[0]!, /\x1b\[/);
  for (const d of [coloured.dir, plain.dir]) rmSync(d, { recursive: true });
});
