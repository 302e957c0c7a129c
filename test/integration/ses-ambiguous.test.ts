// notify-email against a local HTTP server standing in for SES, with the real
// @aws-sdk/client-ses client (createSesSender, pointed at it as SES_ENDPOINT), the real
// MySQL outbox and the real dispatcher. The server reads each SendEmail in full (so SES
// "has" it) and then answers 500, resets the socket, or never answers: every such mail
// must reach the server exactly once and end `unknown`. Throttling is retried until it is
// accepted, a 400 MessageRejected ends `failed` after one request, and a refused
// connection (nothing sent) goes back to pending. A control shows the SDK's default
// client would have sent the 500 case three times.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { SESClient, SendEmailCommand } from '@aws-sdk/client-ses';
import type { Pool } from '../../shared/db/pool.ts';
import { EVENT_SEVERITY, type EvEvent } from '../../shared/contracts/ev.ts';
import { createOutbox } from '../../functions/notify-email/outbox.ts';
import { createDispatcher } from '../../functions/notify-email/dispatcher.ts';
import { createSesSender } from '../../functions/notify-email/ses.ts';
import { outboxRows } from '../../functions/notify-email/handler.ts';
import { parseRules } from '../../functions/notify-email/rules.ts';
import { resetEnvironment } from './harness.ts';

type Mode = '500' | 'reset' | 'stall' | 'throttle-once' | 'reject' | 'ok';

const requests = new Map<string, number>();
const stalled: http.ServerResponse[] = [];
let server: http.Server;
let endpoint: string;
let pool: Pool;

const xmlError = (type: string, code: string, message: string) =>
  `<ErrorResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><Error><Type>${type}</Type><Code>${code}</Code><Message>${message}</Message></Error><RequestId>req-1</RequestId></ErrorResponse>`;
const xmlOk = (id: string) =>
  `<SendEmailResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><SendEmailResult><MessageId>${id}</MessageId></SendEmailResult><ResponseMetadata><RequestId>req-ok</RequestId></ResponseMetadata></SendEmailResponse>`;

/** The recipient's local part says how the server behaves: `500.x@owners.example` answers 500, and so on. */
function handle(req: http.IncomingMessage, res: http.ServerResponse) {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c: string) => (body += c));
  req.on('end', () => {
    const to = new URLSearchParams(body).get('Destination.ToAddresses.member.1') ?? '';
    const n = (requests.get(to) ?? 0) + 1;
    requests.set(to, n);
    const mode = to.split('.')[0] as Mode;
    const send = (status: number, xml: string) => res.writeHead(status, { 'content-type': 'text/xml' }).end(xml);
    if (mode === '500') send(500, xmlError('Receiver', 'InternalFailure', 'The request processing has failed because of an unknown error.'));
    else if (mode === 'reset') req.socket.destroy();
    else if (mode === 'stall') stalled.push(res);
    else if (mode === 'throttle-once' && n === 1) send(400, xmlError('Sender', 'Throttling', 'Maximum sending rate exceeded.'));
    else if (mode === 'reject') send(400, xmlError('Sender', 'MessageRejected', `Email address is not verified: ${to}`));
    else send(200, xmlOk(`msg-${to}-${n}`));
  });
}

function evEvent(sessionId: string, email: string): EvEvent {
  return {
    eventId: `${sessionId}:charge.completed`,
    type: 'charge.completed',
    severity: EVENT_SEVERITY['charge.completed'],
    runId: '00000000-0000-4000-8000-000000000010',
    sessionId,
    ts: '2026-01-01T00:10:00.000Z',
    seq: 1,
    chargePointId: 'CP-SES0001',
    vehicle: { make: 'Tesla', model: 'Model 3', batteryKWh: 60, vin: '5YJ3E1EA7KF000010' },
    owner: { name: 'Test Owner', email },
    charger: { type: 'AC', maxKW: 11 },
    socPercent: 80,
    chargeLimitPercent: 80,
    energyWh: 30_000,
    summary: 'completed',
    details: {},
  };
}

before(async () => {
  server = http.createServer(handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  pool = await resetEnvironment();
});
after(async () => {
  for (const res of stalled) res.destroy();
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  await pool?.end();
});

test('an SES answer that may have come after acceptance marks the mail unknown: one request each, never resent; throttling is retried; a rejection fails', async () => {
  const outbox = createOutbox(pool);
  const lines: string[] = [];
  const log = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
  const counts: Record<string, number> = {};
  const dispatcher = createDispatcher({
    store: outbox,
    sender: createSesSender({ region: 'us-east-1', endpoint, from: 'alerts@sluice.example', timeoutMs: 1_000 }),
    log,
    operatorAddress: 'operator@sluice.example',
    maxPerSecond: 100,
    maxAttempts: 4,
    backoffMs: 50,
    count: (outcome, rows) => void (counts[outcome] = (counts[outcome] ?? 0) + rows),
  });
  const modes: Mode[] = ['500', 'reset', 'stall', 'throttle-once', 'reject', 'ok'];
  const address = (m: Mode) => `${m}.owner@owners.example`;
  const rules = parseRules('charge.completed=owner');
  const deps = { outbox, rules, operatorEmail: 'operator@sluice.example', groupWindowMs: 0 };
  await outbox.enqueue(modes.flatMap((m) => outboxRows(evEvent(`ses-${m}`, address(m)), deps, new Date())));

  // Far more passes than any backoff needs: a mail that could be resent would be.
  for (let i = 0; i < 20; i++) {
    await dispatcher.tick();
    await new Promise((r) => setTimeout(r, 100));
  }
  // A redelivered event finds its row: still nothing resent.
  await outbox.enqueue(modes.flatMap((m) => outboxRows(evEvent(`ses-${m}`, address(m)), deps, new Date())));
  await dispatcher.tick();

  const [rows] = (await pool.query('SELECT dedupe_key, status, attempts, last_error FROM email_outbox ORDER BY dedupe_key')) as unknown as [
    { dedupe_key: string; status: string; attempts: number; last_error: string | null }[],
  ];
  const byMode = Object.fromEntries(rows.map((r) => [r.dedupe_key.replace(/^owner:ses-|:charge\.completed$/g, ''), r]));
  const expected: Record<Mode, { status: string; requests: number }> = {
    '500': { status: 'unknown', requests: 1 },
    reset: { status: 'unknown', requests: 1 },
    stall: { status: 'unknown', requests: 1 },
    'throttle-once': { status: 'sent', requests: 2 },
    reject: { status: 'failed', requests: 1 },
    ok: { status: 'sent', requests: 1 },
  };
  for (const m of modes) {
    assert.equal(byMode[m]?.status, expected[m].status, `${m}: ${JSON.stringify(byMode[m])}`);
    assert.equal(requests.get(address(m)), expected[m].requests, `${m}: requests that reached the server`);
  }
  assert.match(byMode['500']!.last_error ?? '', /InternalFailure/);
  assert.match(byMode.stall!.last_error ?? '', /AbortError|Timeout/);
  assert.deepEqual(counts, { unknown: 3, retry: 1, sent: 2, failed: 1 });

  // Each unknown mail is logged at warn with its dedupe key; no log line carries an address or a body.
  const parsed = lines.map((l) => JSON.parse(l) as { level: number; msg: string; dedupeKeys?: string[] });
  for (const m of ['500', 'reset', 'stall'] as const) {
    const line = parsed.find((l) => /unknown/.test(l.msg) && l.dedupeKeys?.includes(`owner:ses-${m}:charge.completed`));
    assert.ok(line, `a warn line names ${m}`);
    assert.equal(line.level, 40);
  }
  for (const l of lines) {
    assert.ok(!l.includes('@owners.example'), `an address leaked into the log: ${l}`);
    assert.ok(!l.includes('Test Owner'), `the body leaked into the log: ${l}`);
  }
});

test('a refused connection (nothing sent) goes back to pending for a retry', async () => {
  const closed = http.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r)); // nobody listens there now
  const outbox = createOutbox(pool);
  const dispatcher = createDispatcher({
    store: outbox,
    sender: createSesSender({ region: 'us-east-1', endpoint: `http://127.0.0.1:${port}`, from: 'alerts@sluice.example', timeoutMs: 1_000 }),
    log: pino({ level: 'silent' }),
    operatorAddress: 'operator@sluice.example',
    maxPerSecond: 100,
    maxAttempts: 4,
    backoffMs: 60_000,
  });
  const deps = { outbox, rules: parseRules('charge.completed=owner'), operatorEmail: 'operator@sluice.example', groupWindowMs: 0 };
  await outbox.enqueue(outboxRows(evEvent('ses-refused', 'refused.owner@owners.example'), deps, new Date()));
  await dispatcher.tick();
  const [rows] = (await pool.query("SELECT status, attempts, last_error FROM email_outbox WHERE dedupe_key = 'owner:ses-refused:charge.completed'")) as unknown as [
    { status: string; attempts: number; last_error: string }[],
  ];
  assert.equal(rows[0]?.status, 'pending');
  assert.equal(rows[0]?.attempts, 1);
  assert.match(rows[0]?.last_error ?? '', /ECONNREFUSED/);
});

test("control: the SDK's default client would have sent the 500 mail three times (its own retries)", async () => {
  const client = new SESClient({ region: 'us-east-1', endpoint, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
  const to = '500.control@owners.example';
  await assert.rejects(
    client.send(new SendEmailCommand({ Source: 'alerts@sluice.example', Destination: { ToAddresses: [to] }, Message: { Subject: { Data: 's' }, Body: { Text: { Data: 't' } } } })),
    /unknown error/,
  );
  assert.equal(requests.get(to), 3);
  client.destroy();
});
