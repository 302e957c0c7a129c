// `sluice dlq …` against a hand-written fake of the Api port: what each command sends, the tables,
// the confirmation on a terminal, the refusal without one, and the exit codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Api, Query } from '../../cli/client.ts';
import { ApiError } from '../../cli/errors.ts';
import { painter } from '../../cli/format.ts';
import { run } from '../../cli/program.ts';
import { printable } from '../../cli/dlq.ts';
import { describeDeadLetter } from '../../functions/trigger/dlq.ts';
import { deadLetter } from './fakes/dead-letters.ts';

interface Call { method: string; path: string; body?: unknown; query?: Query }

const LIST = {
  queues: [
    { queue: 'logs.lake.dlq', source: 'logs.lake', messages: 0 },
    { queue: 'logs.clean.dlq', source: 'logs.clean', messages: 2 },
  ],
};
const PEEK = {
  queue: 'logs.clean.dlq',
  source: 'logs.clean',
  messages: 2,
  items: [
    describeDeadLetter(deadLetter('logs.clean', 'GET /\u202eevil\x1b[2J', { runId: 'r1', lineNo: 'x' }, 'm-1')),
    describeDeadLetter(deadLetter('logs.clean', Buffer.alloc(400, 0x41), { 'x-death': [{ count: 3 }], 'x-sluice-replayed': 1 }, 'm-2')),
  ],
};

function answer(call: Call): unknown {
  if (call.path === '/v1/dlq') return LIST;
  if (call.path === '/v1/dlq/nope') throw new ApiError(404, "no dead-letter queue 'nope': the queues are logs.lake.dlq, logs.clean.dlq (or their source queues' names)");
  if (call.method === 'GET') return call.query?.limit === 1 ? { ...PEEK, items: PEEK.items.slice(0, 1) } : PEEK;
  if (call.path.endsWith('/replay')) return { queue: 'logs.clean.dlq', source: 'logs.clean', replayed: 2, remaining: 0, via: 'logs.clean.retry', arrivesAfterMs: 5000 };
  if (call.path.endsWith('/purge')) return { queue: 'logs.clean.dlq', source: 'logs.clean', purged: 2 };
  throw new Error(`unexpected ${call.method} ${call.path}`);
}

async function cli(argv: string[], opts: { stdinTty?: boolean; reply?: string } = {}) {
  const calls: Call[] = [];
  const questions: string[] = [];
  const api: Api = {
    url: 'http://fake',
    async get(path, query) {
      const call = { method: 'GET', path, query };
      calls.push(call);
      return answer(call);
    },
    async post(path, body) {
      const call = { method: 'POST', path, body };
      calls.push(call);
      return { status: 200, body: answer(call) };
    },
    async upload() {
      throw new Error('no upload');
    },
  };
  let out = '';
  let err = '';
  const code = await run(argv, {
    api: () => api,
    io: {
      out: (s) => void (out += s),
      err: (s) => void (err += s),
      stdoutTty: false,
      stderrTty: false,
      columns: () => 120,
      paint: painter(false),
      paintErr: painter(false),
      now: () => 0,
      sleep: async () => {},
      stdinTty: opts.stdinTty ?? false,
      ask: async (q) => (questions.push(q), opts.reply ?? ''),
    },
  });
  return { code, out, err, calls, questions };
}

test('dlq list: a table of every queue, its source and depth; --json as the API says', async () => {
  const r = await cli(['dlq', 'list']);
  assert.equal(r.code, 0);
  assert.match(r.out, /^QUEUE\s+SOURCE\s+MESSAGES$/m);
  assert.match(r.out, /^logs\.clean\.dlq\s+logs\.clean\s+2$/m);
  assert.match(r.out, /2 dead letters: sluice dlq show QUEUE/);
  const j = await cli(['dlq', 'list', '--json']);
  assert.deepEqual(JSON.parse(j.out), LIST);
});

test('dlq show: reason, attempts, routing, headers and the escaped first bytes; --limit passed on', async () => {
  const r = await cli(['dlq', 'show', 'logs.clean', '--limit', '5']);
  assert.equal(r.code, 0);
  assert.deepEqual(r.calls, [{ method: 'GET', path: '/v1/dlq/logs.clean', query: { limit: 5 } }]);
  assert.match(r.out, /logs\.clean\.dlq \(from logs\.clean\): 2 messages/);
  assert.match(r.out, /reason\s+log\.line: invalid log-line headers/);
  assert.match(r.out, /routing\s+logs\.web\.access \(exchange logs\)/);
  assert.match(r.out, /headers\s+runId=r1 · lineNo=x/);
  assert.match(r.out, /retries through the retry queue 3 · replayed 1 time before/);
  assert.match(r.out, /body\s+400 B, starts: A+…?/);
  // The bidi override and the terminal escape travel escaped, never raw.
  assert.ok(!/[\u202e\x1b]/.test(r.out), 'no raw control or bidi character on the terminal');
  assert.match(r.out, /\\u\{202e\}evil\\u\{1b\}\[2J/);
  const bad = await cli(['dlq', 'show', 'logs.clean', '--limit', '0']);
  assert.equal(bad.code, 2, 'a bad --limit is a usage error');
  assert.deepEqual(bad.calls, []);
});

test('dlq show of an unknown queue: exit 1 with the API message', async () => {
  const r = await cli(['dlq', 'show', 'nope']);
  assert.equal(r.code, 1);
  assert.match(r.err, /no dead-letter queue 'nope'.*\(HTTP 404\)/);
});

test('dlq replay without a terminal refuses unless --yes (exit 2, nothing sent)', async () => {
  const r = await cli(['dlq', 'replay', 'logs.clean']);
  assert.equal(r.code, 2);
  assert.match(r.err, /stdin is not a terminal.*--yes/);
  assert.deepEqual(r.calls.filter((c) => c.method === 'POST'), []);
  const yes = await cli(['dlq', 'replay', 'logs.clean', '--yes', '--limit', '7']);
  assert.equal(yes.code, 0);
  assert.deepEqual(yes.calls, [{ method: 'POST', path: '/v1/dlq/logs.clean/replay', body: { limit: 7 } }]);
  assert.match(yes.out, /replayed 2 messages of logs\.clean\.dlq back to logs\.clean \(through logs\.clean\.retry: they arrive in 5s\); 0 left/);
});

test('dlq replay on a terminal asks, with the count; "n" sends nothing (exit 1), "y" replays', async () => {
  const no = await cli(['dlq', 'replay', 'logs.clean.dlq'], { stdinTty: true, reply: 'n' });
  assert.equal(no.code, 1);
  assert.deepEqual(no.questions, ['Replay 2 messages of logs.clean.dlq back to logs.clean? [y/N] ']);
  assert.deepEqual(no.calls.filter((c) => c.method === 'POST'), []);
  assert.match(no.err, /nothing done/);
  const yes = await cli(['dlq', 'replay', 'logs.clean.dlq', '--limit', '1'], { stdinTty: true, reply: 'y' });
  assert.equal(yes.code, 0);
  assert.deepEqual(yes.questions, ['Replay 1 message of logs.clean.dlq back to logs.clean? [y/N] ']);
  assert.deepEqual(yes.calls.at(-1), { method: 'POST', path: '/v1/dlq/logs.clean.dlq/replay', body: { limit: 1 } });
});

test('dlq purge: asks on a terminal, refuses without one, --yes purges; --json', async () => {
  assert.equal((await cli(['dlq', 'purge', 'logs.clean'])).code, 2);
  const asked = await cli(['dlq', 'purge', 'logs.clean'], { stdinTty: true, reply: 'yes' });
  assert.equal(asked.code, 0);
  assert.match(asked.questions[0]!, /Drop all 2 messages of logs\.clean\.dlq, for good\?/);
  assert.match(asked.out, /purged logs\.clean\.dlq: 2 messages dropped/);
  const j = await cli(['dlq', 'purge', 'logs.clean', '--yes', '--json']);
  assert.deepEqual(JSON.parse(j.out), { queue: 'logs.clean.dlq', source: 'logs.clean', purged: 2 });
});

test('printable escapes what a terminal would act on', () => {
  assert.equal(printable('a\u202eb\x1b[0m\nc'), 'a\\u{202e}b\\u{1b}[0m\\nc');
});
