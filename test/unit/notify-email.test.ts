// notify-email: routing rules, outbox rows, rendering, the dispatcher (against a
// hand-written in-memory OutboxStore and EmailSender, with a fake clock) and the
// SES error classification.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import type { BatchContext, BatchItem } from '../../shared/amqp/consumer.ts';
import { EVENT_SEVERITY, EV_EVENT_TYPES, type EvEvent } from '../../shared/contracts/ev.ts';
import { DEFAULT_RULES, parseRules, type Role, type Rules } from '../../functions/notify-email/rules.ts';
import { alertEmail, operatorEmail, ownerEmail, printable, type Email } from '../../functions/notify-email/render.ts';
import { alertDedupeKey, createAlertHandler, createHandler, outboxRows, type NotifyDeps, type OutboxRow, type OutboxWriter } from '../../functions/notify-email/handler.ts';
import { AlertEventSchema, alertContract, type AlertEvent } from '../../shared/contracts/alerts.ts';
import { PoisonMessageError } from '../../shared/errors.ts';
import type { ConsumeMessage } from 'amqplib';
import { SendError, createDispatcher, redactAddresses, type ClaimedRow, type EmailSender, type OutboxStore } from '../../functions/notify-email/dispatcher.ts';
import { classify } from '../../functions/notify-email/ses.ts';

const log = pino({ level: 'silent' });
const ctx: BatchContext = { log, queue: 'notify.email' };
const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const OPERATOR = 'operator@sluice.example';
const WINDOW_MS = 30_000;

// ---- fixtures ---------------------------------------------------------------------------------


/** A plausible event; `sessionId` and `type` also make the (deterministic) event id. */
function evEvent(over: Partial<EvEvent> = {}): EvEvent {
  const sessionId = over.sessionId ?? 'sess-1';
  const type = over.type ?? 'charge.completed';
  return {
    eventId: `${sessionId}:${type}`,
    type,
    severity: EVENT_SEVERITY[type],
    runId: 'run-1',
    sessionId,
    ts: '2026-01-01T00:10:00.000Z',
    seq: 42,
    chargePointId: 'CP-ALPHA001',
    location: '12 Main Street, Springfield',
    vehicle: { make: 'Tesla', model: 'Model Y', batteryKWh: 75, vin: '5YJ3E1EA7KF000001' },
    owner: { name: 'Ada Lovelace', email: `${sessionId}@owners.example` },
    charger: { type: 'DC', maxKW: 150 },
    socPercent: 80,
    chargeLimitPercent: 80,
    energyWh: 42_300,
    summary: `Tesla Model Y at CP-ALPHA001: ${type}`,
    details: {},
    ...over,
  };
}

const item = <T>(body: T): BatchItem<T> => ({ body, messageId: undefined, routingKey: 'ev.event.x', redelivered: false, publishedAt: undefined, attempt: 1 });

/** Records every enqueue call (the handler's only port). */
function recordingWriter(): OutboxWriter & { calls: OutboxRow[][] } {
  const calls: OutboxRow[][] = [];
  return {
    calls,
    async enqueue(rows) {
      calls.push(structuredClone(rows));
    },
  };
}

// ---- fake clock --------------------------------------------------------------------------------

interface FakeClock {
  t: number;
  slept: number;
  sleeps: number[];
  now(): Date;
  sleep(ms: number): Promise<void>;
  advance(ms: number): void;
}

/** `sleep` advances the clock instead of waiting. `maxSleptMs` stops a runaway wait loop. */
function fakeClock(opts: { maxSleptMs?: number; onSleep?: (ms: number) => void } = {}): FakeClock {
  const c: FakeClock = {
    t: T0,
    slept: 0,
    sleeps: [],
    now: () => new Date(c.t),
    async sleep(ms) {
      opts.onSleep?.(ms);
      c.sleeps.push(ms);
      c.slept += ms;
      c.t += ms;
      if (opts.maxSleptMs !== undefined && c.slept > opts.maxSleptMs) {
        throw new Error(`runaway: ${c.sleeps.length} sleeps totalling ${c.slept} ms of fake time`);
      }
    },
    advance(ms) {
      c.t += ms;
    },
  };
  return c;
}

// ---- in-memory outbox (same semantics as the MySQL one in outbox.ts) --------------------------

type Status = 'pending' | 'sending' | 'sent' | 'failed' | 'unknown';

interface StoredRow {
  kind: 'ev' | 'alert';
  dedupeKey: string;
  eventId: string;
  runId: string;
  role: Role;
  recipient: string;
  groupKey: string;
  /** Stored as JSON, like the `event` column. */
  event: string;
  status: Status;
  dueAt: number;
  createdSeq: number;
  attempts: number;
  batchId: string | null;
  claimedAt: number | null;
  sentAt: number | null;
  sesMessageId: string | null;
  lastError: string | null;
}

type FakeOutbox = OutboxWriter & OutboxStore & { rows: Map<string, StoredRow>; row(key: string): StoredRow };

function fakeOutbox(): FakeOutbox {
  const rows = new Map<string, StoredRow>();
  let created = 0;
  const byBatch = (batchId: string) => [...rows.values()].filter((r) => r.batchId === batchId);
  return {
    rows,
    row(key) {
      const r = rows.get(key);
      assert.ok(r, `no outbox row ${key}`);
      return r;
    },
    async enqueue(list) {
      for (const r of list) {
        if (rows.has(r.dedupeKey)) continue; // ON DUPLICATE KEY: keep the first
        rows.set(r.dedupeKey, {
          kind: r.kind ?? 'ev',
          dedupeKey: r.dedupeKey,
          eventId: r.eventId,
          runId: r.runId,
          role: r.role,
          recipient: r.recipient,
          groupKey: r.groupKey,
          event: JSON.stringify(r.event),
          status: 'pending',
          dueAt: r.dueAt.getTime(),
          createdSeq: created++,
          attempts: 0,
          batchId: null,
          claimedAt: null,
          sentAt: null,
          sesMessageId: null,
          lastError: null,
        });
      }
    },
    async dueGroups(now, limit) {
      const minDue = new Map<string, number>();
      for (const r of rows.values()) {
        if (r.status !== 'pending') continue;
        minDue.set(r.groupKey, Math.min(minDue.get(r.groupKey) ?? Infinity, r.dueAt));
      }
      return [...minDue]
        .filter(([, due]) => due <= now.getTime())
        .sort((a, b) => a[1] - b[1])
        .slice(0, limit)
        .map(([g]) => g);
    },
    async claim(groupKey, batchId, now) {
      for (const r of rows.values()) {
        if (r.groupKey !== groupKey || r.status !== 'pending') continue;
        Object.assign(r, { status: 'sending', batchId, claimedAt: now.getTime(), attempts: r.attempts + 1 });
      }
      return byBatch(batchId)
        .sort((a, b) => a.createdSeq - b.createdSeq || a.dedupeKey.localeCompare(b.dedupeKey))
        .map((r): ClaimedRow => {
          const base = { dedupeKey: r.dedupeKey, role: r.role, recipient: r.recipient, attempts: r.attempts };
          return r.kind === 'alert' ? { ...base, kind: 'alert', event: JSON.parse(r.event) as AlertEvent } : { ...base, event: JSON.parse(r.event) as EvEvent };
        });
    },
    async markSent(batchId, sesMessageId, now) {
      for (const r of byBatch(batchId)) Object.assign(r, { status: 'sent', sesMessageId, sentAt: now.getTime(), lastError: null });
    },
    async release(batchId, retryAt, error) {
      for (const r of byBatch(batchId)) {
        if (r.status === 'sending') Object.assign(r, { status: 'pending', batchId: null, dueAt: retryAt.getTime(), lastError: error.slice(0, 1024) });
      }
    },
    async markFailed(batchId, status, error) {
      for (const r of byBatch(batchId)) Object.assign(r, { status, lastError: error.slice(0, 1024) });
    },
    async expireClaims(claimedBefore) {
      const keys: string[] = [];
      for (const r of rows.values()) {
        if (r.status === 'sending' && r.claimedAt !== null && r.claimedAt < claimedBefore.getTime()) {
          Object.assign(r, { status: 'unknown', lastError: 'the sender stopped before SES answered' });
          keys.push(r.dedupeKey);
        }
      }
      return keys;
    },
  };
}

// ---- fake sender -------------------------------------------------------------------------------

type Behaviour = (email: Email, call: number) => string | Error;

interface FakeSender extends EmailSender {
  calls: { email: Email; at: number }[];
  accepted: Email[];
}

function fakeSender(clock: FakeClock, behaviour: Behaviour = (_e, n) => `ses-${n}`): FakeSender {
  const s: FakeSender = {
    calls: [],
    accepted: [],
    async send(email) {
      const n = s.calls.length;
      s.calls.push({ email, at: clock.t });
      const out = behaviour(email, n);
      if (out instanceof Error) throw out;
      s.accepted.push(email);
      return out;
    },
  };
  return s;
}

// ---- wiring: handler -> fake outbox -> dispatcher ----------------------------------------------

interface Setup {
  clock: FakeClock;
  outbox: FakeOutbox;
  sender: FakeSender;
  dispatcher: ReturnType<typeof createDispatcher>;
  /** Runs the queue handler over these events at the fake clock's current time. */
  receive(events: EvEvent[]): Promise<void>;
}

function setup(o: { rules?: Rules; behaviour?: Behaviour; maxPerSecond?: number; maxAttempts?: number; leaseMs?: number; clock?: FakeClock } = {}): Setup {
  const clock = o.clock ?? fakeClock();
  const outbox = fakeOutbox();
  const sender = fakeSender(clock, o.behaviour);
  const handler = createHandler({ outbox, rules: o.rules ?? parseRules(DEFAULT_RULES), operatorEmail: OPERATOR, groupWindowMs: WINDOW_MS, now: clock.now });
  const dispatcher = createDispatcher({
    store: outbox,
    sender,
    log,
    operatorAddress: OPERATOR,
    maxPerSecond: o.maxPerSecond ?? 1000,
    maxAttempts: o.maxAttempts ?? 5,
    backoffMs: 1_000,
    leaseMs: o.leaseMs ?? 60_000,
    now: clock.now,
    sleep: clock.sleep,
  });
  return {
    clock,
    outbox,
    sender,
    dispatcher,
    async receive(events) {
      await handler(events.map(item), ctx);
    },
  };
}

const statuses = (outbox: FakeOutbox) => Object.fromEntries([...outbox.rows.values()].map((r) => [r.dedupeKey, r.status]));

// =================================================================================================

describe('parseRules', () => {
  test('the default rules parse into the documented routing', () => {
    const rules = parseRules(DEFAULT_RULES);
    assert.deepEqual(rules, {
      'charge.completed': ['owner'],
      'charge.fault': ['owner', 'operator'],
      'charge.offline': ['owner', 'operator'],
      'charge.stalled': ['owner', 'operator'],
      'charge.soc_drop': ['operator'],
      'charge.over_limit': ['operator'],
      'charge.invalid_reading': ['operator'],
    });
    assert.equal(rules['charge.started'], undefined, 'charge.started mails nobody');
  });

  test('whitespace and empty parts are tolerated; an empty text means no mail at all', () => {
    assert.deepEqual(parseRules(' charge.completed = owner , , charge.fault=operator+owner '), {
      'charge.completed': ['owner'],
      'charge.fault': ['operator', 'owner'],
    });
    assert.deepEqual(parseRules(''), {});
  });

  test('an unknown event type throws, naming it', () => {
    assert.throws(() => parseRules('charge.completed=owner,charge.exploded=owner'), (err: Error) => {
      assert.match(err.message, /unknown event type 'charge\.exploded'/);
      return true;
    });
  });

  test('an unknown recipient role throws, naming it and the event type', () => {
    assert.throws(() => parseRules('charge.fault=owner+admin'), (err: Error) => {
      assert.match(err.message, /unknown recipient 'admin' for charge\.fault/);
      return true;
    });
  });

  test('every known event type is accepted', () => {
    const rules = parseRules(EV_EVENT_TYPES.map((t) => `${t}=operator`).join(','));
    assert.deepEqual(Object.keys(rules).sort(), [...EV_EVENT_TYPES].sort());
  });
});

// =================================================================================================

describe('outbox rows (handler)', () => {
  const now = new Date(T0 + 5_000);
  const deps = (outbox: OutboxWriter): NotifyDeps => ({ outbox, rules: parseRules(DEFAULT_RULES), operatorEmail: OPERATOR, groupWindowMs: WINDOW_MS, now: () => now });

  test('charge.completed -> one owner row, due now', async () => {
    const writer = recordingWriter();
    const e = evEvent({ type: 'charge.completed' });
    await createHandler(deps(writer))([item(e)], ctx);
    assert.equal(writer.calls.length, 1);
    const rows = writer.calls[0]!;
    assert.equal(rows.length, 1);
    const row = rows[0]!;
    assert.equal(row.role, 'owner');
    assert.equal(row.recipient, e.owner.email);
    assert.equal(row.eventId, e.eventId);
    assert.equal(row.runId, 'run-1');
    assert.equal(row.dedupeKey, `owner:${e.eventId}`);
    assert.equal(row.groupKey, `owner:${e.eventId}`);
    assert.equal(row.dueAt.getTime(), now.getTime());
    assert.deepEqual(row.event, e);
  });

  test('charge.fault -> owner row due now + operator row grouped by charge point, due after the window', async () => {
    const writer = recordingWriter();
    const e = evEvent({ type: 'charge.fault', chargePointId: 'CP-FAULTY' });
    await createHandler(deps(writer))([item(e)], ctx);
    const rows = writer.calls[0]!;
    assert.deepEqual(rows.map((r) => r.role), ['owner', 'operator']);
    const op = rows.find((r) => r.role === 'operator')!;
    assert.equal(op.recipient, OPERATOR);
    assert.equal(op.groupKey, 'operator:CP-FAULTY');
    assert.equal(op.dedupeKey, `operator:${e.eventId}`);
    assert.equal(op.dueAt.getTime(), now.getTime() + WINDOW_MS);
    const owner = rows.find((r) => r.role === 'owner')!;
    assert.equal(owner.dueAt.getTime(), now.getTime());
    assert.notEqual(owner.dedupeKey, op.dedupeKey);
  });

  test('charge.started -> no row', async () => {
    const writer = recordingWriter();
    await createHandler(deps(writer))([item(evEvent({ type: 'charge.started' }))], ctx);
    assert.deepEqual(writer.calls.flat(), []);
    assert.deepEqual(outboxRows(evEvent({ type: 'charge.started' }), deps(writer), now), []);
  });

  test('one batch of several events -> all their rows in one enqueue', async () => {
    const writer = recordingWriter();
    const events = [evEvent({ sessionId: 'a', type: 'charge.completed' }), evEvent({ sessionId: 'b', type: 'charge.started' }), evEvent({ sessionId: 'c', type: 'charge.soc_drop' })];
    await createHandler(deps(writer))(events.map(item), ctx);
    assert.equal(writer.calls.length, 1);
    assert.deepEqual(writer.calls[0]!.map((r) => r.dedupeKey), ['owner:a:charge.completed', 'operator:c:charge.soc_drop']);
  });

  test('a redelivered event produces identical rows with the same dedupe keys', async () => {
    const writer = recordingWriter();
    const handler = createHandler(deps(writer));
    const events = [evEvent({ type: 'charge.fault' }), evEvent({ sessionId: 'sess-2', type: 'charge.offline' })];
    await handler(events.map(item), ctx);
    await handler(events.map((e) => ({ ...item(structuredClone(e)), redelivered: true, attempt: 2 })), ctx);
    assert.equal(writer.calls.length, 2);
    assert.deepEqual(writer.calls[1], writer.calls[0]);

    // Even at a later time the keys are the same, so the idempotent outbox keeps one row each.
    const later = outboxRows(events[0]!, deps(writer), new Date(T0 + 3_600_000)).map((r) => r.dedupeKey);
    assert.deepEqual(later, writer.calls[0]!.slice(0, 2).map((r) => r.dedupeKey));
    const outbox = fakeOutbox();
    for (const rows of writer.calls) await outbox.enqueue(rows);
    assert.equal(outbox.rows.size, 4);
  });
});

// =================================================================================================

describe('render', () => {
  test('owner email: subject, text and html carry vehicle, charge point, SoC, energy and the reference', () => {
    const e = evEvent({ type: 'charge.completed', socPercent: 80, energyWh: 42_300 });
    const m = ownerEmail(e);
    assert.equal(m.to, e.owner.email);
    assert.match(m.subject, /^Charging complete: /);
    for (const part of ['Tesla Model Y', 'CP-ALPHA001', '80 %']) assert.ok(m.subject.includes(part), `subject lacks ${part}: ${m.subject}`);
    for (const body of [m.text, m.html]) {
      for (const part of ['Tesla Model Y', 'CP-ALPHA001', '80 %', '42.3 kWh', '5YJ3E1EA7KF000001', 'Ada Lovelace']) assert.ok(body.includes(part), `body lacks ${part}`);
    }
    assert.ok(m.text.includes(`Reference: ${e.eventId}`));
    assert.ok(m.html.includes(e.eventId));
  });

  test('unknown SoC and energy read "unknown"', () => {
    const m = ownerEmail(evEvent({ type: 'charge.offline', socPercent: null, energyWh: null, chargeLimitPercent: null }));
    assert.match(m.subject, /\(unknown\)$/);
    assert.ok(m.text.includes('Energy delivered: unknown'));
    assert.ok(m.text.includes('Battery: unknown (limit unknown)'));
  });

  test('HTML escapes names; no <script> gets through', () => {
    const e = evEvent({
      owner: { name: '<script>alert(1)</script>', email: 'x@example.com' },
      vehicle: { make: 'Evil<script>', model: '"M" & \'N\'', batteryKWh: 50, vin: '5YJ3E1EA7KF000001' },
      chargePointId: 'CP-<b>',
      summary: '<img src=x onerror=alert(1)>',
    });
    const m = ownerEmail(e);
    assert.ok(!m.html.includes('<script>'), m.html);
    assert.ok(!m.html.includes('<img'), m.html);
    assert.ok(m.html.includes('&lt;script&gt;alert(1)&lt;/script&gt;'));
    assert.ok(m.html.includes('&quot;M&quot; &amp; &#39;N&#39;'));
    const op = operatorEmail(OPERATOR, [e]);
    assert.ok(!op.html.includes('<script>'));
    assert.ok(!op.html.includes('CP-<b>'));
    assert.ok(op.html.includes('<b>CP-&lt;b&gt;</b>'));
  });

  test('operator email with 3 events lists all 3 references and says [CRITICAL] when one is critical', () => {
    const events = [
      evEvent({ sessionId: 's1', type: 'charge.stalled' }),
      evEvent({ sessionId: 's2', type: 'charge.fault' }),
      evEvent({ sessionId: 's3', type: 'charge.soc_drop' }),
    ];
    const m = operatorEmail(OPERATOR, events);
    assert.equal(m.to, OPERATOR);
    assert.match(m.subject, /^\[CRITICAL\] 3 alerts at CP-ALPHA001: /);
    for (const t of ['charge.stalled', 'charge.fault', 'charge.soc_drop']) assert.ok(m.subject.includes(t));
    for (const e of events) {
      assert.ok(m.text.includes(`Reference: ${e.eventId}`), `text lacks ${e.eventId}`);
      assert.ok(m.html.includes(e.eventId), `html lacks ${e.eventId}`);
    }
    assert.equal(m.text.split('Reference: ').length - 1, 3);
  });

  test('operator email without a critical event has no [CRITICAL] tag; one alert is singular', () => {
    const m = operatorEmail(OPERATOR, [evEvent({ type: 'charge.stalled' }), evEvent({ sessionId: 's9', type: 'charge.stalled' })]);
    assert.match(m.subject, /^2 alerts at CP-ALPHA001: charge\.stalled$/);
    const one = operatorEmail(OPERATOR, [evEvent({ type: 'charge.soc_drop' })]);
    assert.match(one.subject, /^1 alert at CP-ALPHA001: charge\.soc_drop$/);
  });
});

// =================================================================================================

describe('dispatcher', () => {
  test('a) owner rows each go out as their own email, once; the next tick sends nothing', async () => {
    const s = setup();
    const events = ['a', 'b', 'c'].map((id) => evEvent({ sessionId: id, type: 'charge.completed' }));
    await s.receive(events);
    assert.equal(await s.dispatcher.tick(), 3);
    assert.deepEqual(s.sender.accepted.map((m) => m.to).sort(), events.map((e) => e.owner.email).sort());
    for (const [k, e] of events.entries()) {
      const m = s.sender.accepted.find((x) => x.to === e.owner.email)!;
      assert.ok(m.text.includes(`Reference: ${e.eventId}`));
      const row = s.outbox.row(`owner:${e.eventId}`);
      assert.equal(row.status, 'sent');
      assert.equal(row.attempts, 1);
      assert.match(row.sesMessageId ?? '', /^ses-\d$/, `row ${k}`);
    }
    s.clock.advance(3_600_000);
    assert.equal(await s.dispatcher.tick(), 0);
    assert.equal(s.sender.calls.length, 3);

    // A redelivery of the same events after they were sent mails nobody again.
    await s.receive(events);
    assert.equal(await s.dispatcher.tick(), 0);
    assert.equal(s.sender.calls.length, 3);
  });

  test('b) operator alerts of one charge point within the window go out as ONE email, after the window', async () => {
    const s = setup({ rules: parseRules('charge.fault=operator,charge.stalled=operator') });
    const a1 = evEvent({ sessionId: 's1', type: 'charge.stalled', chargePointId: 'CP-A' });
    const a2 = evEvent({ sessionId: 's2', type: 'charge.fault', chargePointId: 'CP-A' });
    const b1 = evEvent({ sessionId: 's3', type: 'charge.stalled', chargePointId: 'CP-B' });
    await s.receive([a1]);
    s.clock.advance(10_000);
    await s.receive([a2, b1]);

    s.clock.advance(19_999); // T0 + 29.999 s: the window of CP-A has not passed yet
    assert.equal(await s.dispatcher.tick(), 0);
    assert.equal(s.sender.calls.length, 0);

    s.clock.advance(1); // T0 + 30 s
    assert.equal(await s.dispatcher.tick(), 1);
    assert.equal(s.sender.accepted.length, 1);
    const m = s.sender.accepted[0]!;
    assert.equal(m.to, OPERATOR);
    assert.match(m.subject, /^\[CRITICAL\] 2 alerts at CP-A: /);
    assert.ok(m.text.includes(`Reference: ${a1.eventId}`) && m.text.includes(`Reference: ${a2.eventId}`));
    assert.ok(!m.text.includes(b1.eventId), 'another charge point is another email');
    assert.equal(s.outbox.row(`operator:${a2.eventId}`).status, 'sent');
    assert.equal(s.outbox.row(`operator:${b1.eventId}`).status, 'pending');

    s.clock.advance(10_000); // T0 + 40 s: CP-B's window has passed
    assert.equal(await s.dispatcher.tick(), 1);
    assert.match(s.sender.accepted[1]!.subject, /^1 alert at CP-B: charge\.stalled$/);

    s.clock.advance(600_000);
    assert.equal(await s.dispatcher.tick(), 0);
    assert.equal(s.sender.calls.length, 2);
  });

  test('b2) an alert arriving after its group went out starts a new group with its own window', async () => {
    const s = setup({ rules: parseRules('charge.stalled=operator') });
    await s.receive([evEvent({ sessionId: 's1', type: 'charge.stalled', chargePointId: 'CP-A' })]);
    s.clock.advance(WINDOW_MS);
    assert.equal(await s.dispatcher.tick(), 1);
    await s.receive([evEvent({ sessionId: 's2', type: 'charge.stalled', chargePointId: 'CP-A' })]);
    s.clock.advance(WINDOW_MS - 1);
    assert.equal(await s.dispatcher.tick(), 0);
    s.clock.advance(1);
    assert.equal(await s.dispatcher.tick(), 1);
    assert.ok(s.sender.accepted[1]!.text.includes('s2:charge.stalled'));
    assert.ok(!s.sender.accepted[1]!.text.includes('s1:charge.stalled'));
  });

  test('c) a throttled send is retried after the backoff and then succeeds: one email accepted', async () => {
    const s = setup({ behaviour: (_e, n) => (n === 0 ? new SendError('Throttling: Maximum sending rate exceeded.', 'retry') : 'ses-ok') });
    const e = evEvent({ type: 'charge.completed' });
    await s.receive([e]);
    const key = `owner:${e.eventId}`;

    assert.equal(await s.dispatcher.tick(), 0);
    let row = s.outbox.row(key);
    assert.equal(row.status, 'pending');
    assert.equal(row.attempts, 1);
    assert.match(row.lastError ?? '', /Throttling/);
    const delay = row.dueAt - s.clock.t;
    assert.ok(delay >= 800 && delay <= 1200, `first backoff ${delay} ms, expected 1 s +-20 %`);

    // Not before the backoff.
    assert.equal(await s.dispatcher.tick(), 0);
    assert.equal(s.sender.calls.length, 1);

    s.clock.advance(delay);
    assert.equal(await s.dispatcher.tick(), 1);
    row = s.outbox.row(key);
    assert.equal(row.status, 'sent');
    assert.equal(row.attempts, 2);
    assert.equal(row.sesMessageId, 'ses-ok');
    assert.equal(row.lastError, null);
    assert.equal(s.sender.calls.length, 2);
    assert.equal(s.sender.accepted.length, 1);
    assert.equal(s.sender.calls[0]!.email.subject, s.sender.calls[1]!.email.subject);

    s.clock.advance(3_600_000);
    assert.equal(await s.dispatcher.tick(), 0);
    assert.equal(s.sender.calls.length, 2);
  });

  test('d) a sender that always throttles: the row ends failed after maxAttempts, with doubling backoff', async () => {
    const s = setup({ maxAttempts: 4, behaviour: () => new SendError('Throttling: rate exceeded', 'retry') });
    const e = evEvent({ type: 'charge.completed' });
    await s.receive([e]);
    const key = `owner:${e.eventId}`;
    const delays: number[] = [];
    for (let i = 0; i < 10; i++) {
      await s.dispatcher.tick();
      const row = s.outbox.row(key);
      if (row.status !== 'pending') break;
      delays.push(row.dueAt - s.clock.t);
      s.clock.advance(60_000);
    }
    const row = s.outbox.row(key);
    assert.equal(row.status, 'failed');
    assert.equal(row.attempts, 4);
    assert.equal(s.sender.calls.length, 4);
    assert.equal(s.sender.accepted.length, 0);
    assert.match(row.lastError ?? '', /Throttling/);
    assert.equal(delays.length, 3);
    delays.forEach((d, k) => {
      const base = 1_000 * 2 ** k;
      assert.ok(d >= base * 0.8 && d <= base * 1.2, `backoff ${k + 1} = ${d} ms, expected ${base} ms +-20 %`);
    });

    s.clock.advance(3_600_000);
    assert.equal(await s.dispatcher.tick(), 0);
    assert.equal(s.sender.calls.length, 4);
  });

  test('e) no answer (unknown) is never resent and ends unknown', async () => {
    const s = setup({ behaviour: () => new SendError('TimeoutError: The operation was aborted due to timeout', 'unknown') });
    const e = evEvent({ type: 'charge.completed' });
    await s.receive([e]);
    assert.equal(await s.dispatcher.tick(), 0);
    for (let i = 0; i < 5; i++) {
      s.clock.advance(3_600_000);
      await s.dispatcher.tick();
    }
    const row = s.outbox.row(`owner:${e.eventId}`);
    assert.equal(row.status, 'unknown');
    assert.equal(row.attempts, 1);
    assert.match(row.lastError ?? '', /TimeoutError/);
    assert.equal(s.sender.calls.length, 1);
  });

  test('e2) an error that is not a SendError counts as unknown too', async () => {
    const s = setup({ behaviour: () => new Error('socket hang up') });
    const e = evEvent({ type: 'charge.completed' });
    await s.receive([e]);
    await s.dispatcher.tick();
    s.clock.advance(3_600_000);
    await s.dispatcher.tick();
    assert.equal(s.outbox.row(`owner:${e.eventId}`).status, 'unknown');
    assert.equal(s.sender.calls.length, 1);
  });

  test('f) a permanent failure is not retried', async () => {
    const s = setup({ behaviour: () => new SendError('MessageRejected: Email address is not verified.', 'failed') });
    const e = evEvent({ type: 'charge.completed' });
    await s.receive([e]);
    await s.dispatcher.tick();
    s.clock.advance(3_600_000);
    await s.dispatcher.tick();
    const row = s.outbox.row(`owner:${e.eventId}`);
    assert.equal(row.status, 'failed');
    assert.equal(row.attempts, 1);
    assert.match(row.lastError ?? '', /MessageRejected/);
    assert.equal(s.sender.calls.length, 1);
  });

  test('f2) one failing group does not hold back the others in the same tick', async () => {
    const s = setup({ behaviour: (m) => (m.to === 'bad@owners.example' ? new SendError('MessageRejected', 'failed') : 'ok') });
    await s.receive([evEvent({ sessionId: 'good1' }), evEvent({ sessionId: 'bad' }), evEvent({ sessionId: 'good2' })]);
    assert.equal(await s.dispatcher.tick(), 2);
    assert.deepEqual(statuses(s.outbox), {
      'owner:good1:charge.completed': 'sent',
      'owner:bad:charge.completed': 'failed',
      'owner:good2:charge.completed': 'sent',
    });
  });

  test('g) rows left sending past the lease become unknown on the next tick and are not sent', async () => {
    const s = setup({ leaseMs: 60_000 });
    const dead = evEvent({ sessionId: 'dead' });
    const recent = evEvent({ sessionId: 'recent' });
    const fresh = evEvent({ sessionId: 'fresh' });
    await s.receive([dead, recent]);
    // Another dispatcher claimed these and died before SES answered.
    assert.equal((await s.outbox.claim(`owner:${dead.eventId}`, 'crashed-1', new Date(T0))).length, 1);
    s.clock.advance(30_000);
    assert.equal((await s.outbox.claim(`owner:${recent.eventId}`, 'crashed-2', s.clock.now())).length, 1);
    s.clock.advance(30_001); // dead: claimed 60.001 s ago (> lease); recent: 30.001 s ago
    await s.receive([fresh]);

    assert.equal(await s.dispatcher.tick(), 1);
    assert.deepEqual(statuses(s.outbox), {
      'owner:dead:charge.completed': 'unknown',
      'owner:recent:charge.completed': 'sending',
      'owner:fresh:charge.completed': 'sent',
    });
    assert.deepEqual(s.sender.calls.map((c) => c.email.to), [fresh.owner.email]);
    assert.match(s.outbox.row(`owner:${dead.eventId}`).lastError ?? '', /sender stopped/);

    s.clock.advance(60_000); // now `recent` has outlived its lease too
    assert.equal(await s.dispatcher.tick(), 0);
    assert.equal(s.outbox.row(`owner:${recent.eventId}`).status, 'unknown');
    assert.equal(s.sender.calls.length, 1);
  });

  test('two dispatchers ticking at once send every email once', async () => {
    const s = setup();
    const second = createDispatcher({ store: s.outbox, sender: s.sender, log, operatorAddress: OPERATOR, maxPerSecond: 1000, maxAttempts: 5, now: s.clock.now, sleep: s.clock.sleep });
    const events = Array.from({ length: 12 }, (_, i) => evEvent({ sessionId: `s${i}` }));
    await s.receive(events);
    const [a, b] = await Promise.all([s.dispatcher.tick(), second.tick()]);
    assert.equal(a + b, 12);
    assert.equal(s.sender.calls.length, 12);
    assert.equal(new Set(s.sender.calls.map((c) => c.email.to)).size, 12);
  });

  test('h0) rate limit: a burst of maxPerSecond goes out at once, the next email waits for a token', async () => {
    let sentWhenSleeping = -1;
    const clock = fakeClock({
      onSleep: () => {
        sentWhenSleeping = s.sender.calls.length;
        // Stop the tick at its first wait: everything after it depends on how the bucket refills.
        throw new Error('stop at first wait');
      },
    });
    const s = setup({ clock, maxPerSecond: 5 });
    await s.receive(Array.from({ length: 6 }, (_, i) => evEvent({ sessionId: `r${i}` })));
    await assert.rejects(s.dispatcher.tick(), /stop at first wait/);
    assert.equal(sentWhenSleeping, 5, 'five emails before the first wait');
    assert.equal(s.sender.calls.length, 5);
  });

  test(
    'h) rate limit: 20 owner rows at maxPerSecond 5 take ~3 s of injected sleep (fake clock)',
    async () => {
      // maxSleptMs: if the bucket ignores the injected clock it would spin; stop it instead of waiting for wall time.
      const clock = fakeClock({ maxSleptMs: 30_000 });
      const s = setup({ clock, maxPerSecond: 5 });
      await s.receive(Array.from({ length: 20 }, (_, i) => evEvent({ sessionId: `r${i}` })));
      const start = clock.t;
      assert.equal(await s.dispatcher.tick(), 20);
      assert.equal(s.sender.accepted.length, 20);
      assert.equal(new Set(s.sender.accepted.map((m) => m.to)).size, 20);
      // 5 at once (full bucket), then 15 more at 5 per second.
      assert.ok(clock.slept >= 2_900, `slept only ${clock.slept} ms`);
      assert.ok(clock.slept <= 4_000, `slept ${clock.slept} ms in ${clock.sleeps.length} sleeps; expected ~3000`);
      assert.ok(clock.t - start >= 2_900);
      s.sender.calls.forEach((c, k) => {
        if (k >= 5) assert.ok(c.at - start >= (k - 5) * 200, `email ${k} at +${c.at - start} ms`);
      });
    },
  );
});

// =================================================================================================

describe('ses classify', () => {
  const err = (props: Record<string, unknown>, message = 'boom') => Object.assign(new Error(message), props);

  const outcome = (e: unknown) => classify(e).outcome;

  test('throttling is retried: Throttling (SES answers it with 400), 429, $retryable.throttling, "Maximum sending rate exceeded"', () => {
    for (const e of [
      err({ name: 'Throttling', $fault: 'client', $metadata: { httpStatusCode: 400 } }, 'Maximum sending rate exceeded.'),
      err({ name: 'Throttling', $metadata: { httpStatusCode: 400 } }, 'Daily message quota exceeded.'),
      err({ name: 'ThrottlingException' }),
      err({ name: 'TooManyRequestsException', $metadata: { httpStatusCode: 429 } }),
      err({ name: 'SomethingElse', $metadata: { httpStatusCode: 429 } }),
      err({ name: 'SESServiceException', $retryable: { throttling: true }, $metadata: { httpStatusCode: 400 } }),
      err({ name: 'SESServiceException', $metadata: { httpStatusCode: 400 } }, 'Maximum sending rate exceeded.'),
    ]) {
      const out = classify(e);
      assert.ok(out instanceof SendError);
      assert.equal(out.outcome, 'retry', `${e.name} ${JSON.stringify((e as { $metadata?: unknown }).$metadata)}`);
      assert.equal(out.cause, e);
      assert.ok(out.message.startsWith(`${e.name}: `));
    }
  });

  test('a 5xx is unknown, never retried: SES may have accepted the mail before it failed', () => {
    for (const e of [
      err({ name: 'ServiceUnavailable', $fault: 'server', $metadata: { httpStatusCode: 503 } }),
      err({ name: 'InternalFailure', $fault: 'server', $metadata: { httpStatusCode: 500 } }),
      err({ name: 'Whatever', $metadata: { httpStatusCode: 502 } }),
      err({ name: 'Unknown', $metadata: { httpStatusCode: 504 } }, 'Maximum sending rate exceeded.'), // a 5xx stays ambiguous whatever it says
      err({ name: 'SESServiceException', $fault: 'server' }),
    ]) {
      assert.equal(outcome(e), 'unknown', `${e.name} ${JSON.stringify((e as { $metadata?: unknown }).$metadata)}`);
    }
  });

  test('not reached (nothing was sent) is retried: connection refused, DNS, the connect timeout; also when the code sits on the cause', () => {
    assert.equal(outcome(err({ code: 'ECONNREFUSED' }, 'connect ECONNREFUSED 127.0.0.1:9')), 'retry');
    assert.equal(outcome(err({ cause: { code: 'ECONNREFUSED' } })), 'retry');
    assert.equal(outcome(err({ code: 'ENOTFOUND' })), 'retry');
    assert.equal(outcome(err({ code: 'EAI_AGAIN' })), 'retry');
    // @smithy/node-http-handler's connectionTimeout
    assert.equal(
      outcome(err({ name: 'TimeoutError' }, '@smithy/node-http-handler - the request socket did not establish a connection with the server within the configured timeout of 5000 ms.')),
      'retry',
    );
  });

  test('a 4xx rejection fails for good; a 4xx that says "not now" (request timeout, clock skew, expired token) is retried', () => {
    const out = classify(err({ name: 'MessageRejected', $fault: 'client', $metadata: { httpStatusCode: 400 } }, 'Email address is not verified.'));
    assert.equal(out.outcome, 'failed');
    assert.match(out.message, /^MessageRejected: Email address is not verified\.$/);
    assert.equal(outcome(err({ name: 'InvalidParameterValue', $metadata: { httpStatusCode: 400 } }, 'Missing final @domain')), 'failed');
    assert.equal(outcome(err({ name: 'AccessDenied', $metadata: { httpStatusCode: 403 } })), 'failed');
    assert.equal(outcome(err({ name: 'RequestExpired', $metadata: { httpStatusCode: 400 } })), 'retry');
    assert.equal(outcome(err({ name: 'RequestTimeout', $metadata: { httpStatusCode: 408 } })), 'retry');
  });

  test('timeouts, aborts, resets and hang-ups after the request went out are unknown (may have gone out)', () => {
    assert.equal(outcome(new DOMException('The operation was aborted due to timeout', 'TimeoutError')), 'unknown');
    assert.equal(outcome(err({ name: 'TimeoutError' })), 'unknown');
    assert.equal(outcome(err({ name: 'AbortError' }, 'Request aborted')), 'unknown');
    assert.equal(outcome(err({ code: 'ECONNRESET' }, 'socket hang up')), 'unknown');
    // The Node handler renames ECONNRESET / EPIPE / ETIMEDOUT errors TimeoutError.
    assert.equal(outcome(err({ name: 'TimeoutError', code: 'ECONNRESET' }, 'socket hang up')), 'unknown');
    assert.equal(outcome(err({ name: 'TimeoutError', code: 'EPIPE' }, 'write EPIPE')), 'unknown');
    assert.equal(outcome(err({ name: 'TimeoutError', code: 'ETIMEDOUT' }, 'a request has exceeded the configured 1000 ms requestTimeout.')), 'unknown');
    assert.equal(outcome('weird'), 'unknown');
    assert.equal(outcome(undefined), 'unknown');
  });
});

describe('dispatcher decisions on classified SES errors', () => {
  const sdkError = (props: Record<string, unknown>, message = 'boom') => Object.assign(new Error(message), props);
  /** A sender that fails like the SES client does: the SDK error, classified. */
  const failing = (...errors: (Error | string)[]): Behaviour => (_e, n) => {
    const e = errors[Math.min(n, errors.length - 1)]!;
    return typeof e === 'string' ? e : classify(e);
  };
  const counting = () => {
    const counts: Record<string, number> = {};
    return { counts, count: (outcome: string, rows: number) => void (counts[outcome] = (counts[outcome] ?? 0) + rows) };
  };
  function withCount(o: Parameters<typeof setup>[0]) {
    const c = counting();
    const s = setup(o);
    const dispatcher = createDispatcher({ store: s.outbox, sender: s.sender, log, operatorAddress: OPERATOR, maxPerSecond: 1000, maxAttempts: o?.maxAttempts ?? 5, backoffMs: 1_000, now: s.clock.now, sleep: s.clock.sleep, count: c.count });
    return { ...s, dispatcher, counts: c.counts };
  }
  /** Ticks for a simulated day, far past every backoff. */
  async function drain(s: Setup) {
    for (let i = 0; i < 30; i++) {
      await s.dispatcher.tick();
      s.clock.advance(3_600_000);
    }
  }

  test('throttling is retried with backoff until SES accepts: one email', async () => {
    const throttled = sdkError({ name: 'Throttling', $fault: 'client', $metadata: { httpStatusCode: 400 } }, 'Maximum sending rate exceeded.');
    const s = withCount({ behaviour: failing(throttled, sdkError({ $metadata: { httpStatusCode: 429 }, name: 'TooManyRequestsException' }), 'ses-ok') });
    const e = evEvent();
    await s.receive([e]);
    await drain(s);
    const row = s.outbox.row(`owner:${e.eventId}`);
    assert.equal(row.status, 'sent');
    assert.equal(row.attempts, 3);
    assert.equal(s.sender.calls.length, 3);
    assert.deepEqual(s.counts, { retry: 2, sent: 1 });
  });

  for (const [what, error] of [
    ['a 500 InternalFailure', sdkError({ name: 'InternalFailure', $fault: 'server', $metadata: { httpStatusCode: 500 } }, 'We encountered an internal error.')],
    ['a 503 ServiceUnavailable', sdkError({ name: 'ServiceUnavailable', $fault: 'server', $metadata: { httpStatusCode: 503 } })],
    ['a timeout', sdkError({ name: 'AbortError' }, 'Request aborted')],
    ['a connection reset after sending', sdkError({ name: 'TimeoutError', code: 'ECONNRESET' }, 'socket hang up')],
  ] as const) {
    test(`${what}: the mail is unknown, sent exactly once, never again; counted and logged without the address`, async () => {
      const lines: string[] = [];
      const warnLog = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
      const c = counting();
      const s = setup({ behaviour: failing(error, 'would-be-second-email') });
      const dispatcher = createDispatcher({ store: s.outbox, sender: s.sender, log: warnLog, operatorAddress: OPERATOR, maxPerSecond: 1000, maxAttempts: 5, now: s.clock.now, sleep: s.clock.sleep, count: c.count });
      const e = evEvent({ sessionId: 'amb' });
      await s.receive([e]);
      for (let i = 0; i < 30; i++) {
        await dispatcher.tick();
        s.clock.advance(3_600_000);
      }
      // A redelivered event finds its row: still nothing resent.
      await s.receive([e]);
      await dispatcher.tick();
      const row = s.outbox.row(`owner:${e.eventId}`);
      assert.equal(row.status, 'unknown');
      assert.equal(row.attempts, 1);
      assert.equal(s.sender.calls.length, 1, 'one SES call, ever');
      assert.deepEqual(c.counts, { unknown: 1 });
      const warn = lines.map((l) => JSON.parse(l) as { level: number; dedupeKeys?: string[]; msg: string }).find((l) => l.dedupeKeys);
      assert.ok(warn, 'a log line names the mail');
      assert.equal(warn.level, 40, 'at warn');
      assert.deepEqual(warn.dedupeKeys, [`owner:${e.eventId}`]);
      assert.match(warn.msg, /unknown/);
      for (const l of lines) {
        assert.ok(!l.includes(e.owner.email), `no address in ${l}`);
        assert.ok(!l.includes('Hello'), `no body in ${l}`);
      }
    });
  }

  test('a rejection (400 MessageRejected) is failed at once, not retried; its address is not logged', async () => {
    const lines: string[] = [];
    const s = setup({
      behaviour: failing(sdkError({ name: 'MessageRejected', $fault: 'client', $metadata: { httpStatusCode: 400 } }, 'Email address is not verified: rej@owners.example'), 'x'),
    });
    const dispatcher = createDispatcher({ store: s.outbox, sender: s.sender, log: pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) }), operatorAddress: OPERATOR, maxPerSecond: 1000, maxAttempts: 5, now: s.clock.now, sleep: s.clock.sleep });
    const e = evEvent({ sessionId: 'rej' });
    await s.receive([e]);
    for (let i = 0; i < 5; i++) {
      await dispatcher.tick();
      s.clock.advance(3_600_000);
    }
    assert.equal(s.outbox.row(`owner:${e.eventId}`).status, 'failed');
    assert.equal(s.sender.calls.length, 1);
    assert.ok(lines.length > 0 && lines.every((l) => !l.includes('rej@owners.example')), lines.join('\n'));
    assert.ok(lines.some((l) => l.includes('<address>')));
  });

  test('an operator digest that ends unknown counts each of its rows; rows expired past the lease count as unknown too', async () => {
    const s = withCount({ rules: parseRules('charge.fault=operator,charge.stalled=operator'), behaviour: failing(sdkError({ name: 'Whatever', $metadata: { httpStatusCode: 502 } })) });
    await s.receive([evEvent({ sessionId: 'd1', type: 'charge.fault' }), evEvent({ sessionId: 'd2', type: 'charge.stalled' })]);
    await s.outbox.enqueue([{ ...outboxRows(evEvent({ sessionId: 'dead' }), { outbox: s.outbox, rules: parseRules('charge.completed=owner'), operatorEmail: OPERATOR, groupWindowMs: 0 }, s.clock.now())[0]! }]);
    await s.outbox.claim('owner:dead:charge.completed', 'crashed', s.clock.now());
    s.clock.advance(WINDOW_MS);
    await drain(s);
    assert.deepEqual(statuses(s.outbox), { 'operator:d1:charge.fault': 'unknown', 'operator:d2:charge.stalled': 'unknown', 'owner:dead:charge.completed': 'unknown' });
    assert.equal(s.sender.calls.length, 1);
    assert.deepEqual(s.counts, { unknown: 3 });
  });

  test('throttled past maxAttempts ends failed (counted), never unknown', async () => {
    const s = withCount({ maxAttempts: 3, behaviour: failing(sdkError({ name: 'Throttling', $metadata: { httpStatusCode: 400 } }, 'Maximum sending rate exceeded.')) });
    const e = evEvent();
    await s.receive([e]);
    await drain(s);
    assert.equal(s.outbox.row(`owner:${e.eventId}`).status, 'failed');
    assert.equal(s.sender.calls.length, 3);
    assert.deepEqual(s.counts, { retry: 2, failed: 1 });
  });

  test('redactAddresses hides addresses in error texts', () => {
    assert.equal(redactAddresses('MessageRejected: Email address is not verified. The following identities failed the check in region US-EAST-1: a.b+c@x.example, <d@y.example>'),
      'MessageRejected: Email address is not verified. The following identities failed the check in region US-EAST-1: <address>, <<address>>');
  });
});

describe('dispatcher wake-up', () => {
  test('a committed batch wakes the dispatcher: due mail goes out without waiting for the next poll', async () => {
    const clock = fakeClock();
    const outbox = fakeOutbox();
    const sender = fakeSender(clock);
    const dispatcher = createDispatcher({ store: outbox, sender, log, operatorAddress: OPERATOR, maxPerSecond: 1000, maxAttempts: 5, now: clock.now, sleep: clock.sleep });
    const handler = createHandler({ outbox, rules: parseRules(DEFAULT_RULES), operatorEmail: OPERATOR, groupWindowMs: WINDOW_MS, now: clock.now, onEnqueued: () => dispatcher.wake() });
    dispatcher.start(3_600_000); // an hour between polls: only wake() can send in time
    try {
      await new Promise((r) => setTimeout(r, 20)); // the first (empty) pass
      await handler([item(evEvent({ sessionId: 'w1' }))], ctx);
      for (let i = 0; i < 100 && sender.calls.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(sender.calls.length, 1);
    } finally {
      await dispatcher.stop();
    }
  });
});

// ---- web-log alerts (notify.alerts) ------------------------------------------------------------

describe('web-log alerts', () => {
  const incident = '5f0c3c1e-8d7a-4c39-9d44-2a1f0b6c7e11';
  const scanner = (over: Partial<AlertEvent> = {}): AlertEvent => ({
    rule: 'scanner', source: 'shop', incident, state: 'fired', at: '2024-10-10T12:07:00.000Z', since: '2024-10-10T12:07:00.000Z',
    numbers: { requests: 90, s4xx: 60, minutes: 1 },
    clients: [{ clientIp: '203.0.113.66\r\nBcc: victim@example.com', count: 60, paths: [{ path: '/<img src=x onerror=alert(1)>\u202Etxt.exe', count: 20 }, { path: '/wp-login.php', count: 40 }] }],
    thresholds: { clientErrors: 50 },
    ...over,
  } as AlertEvent);
  const message = (body: unknown, routingKey = 'logs.alert.scanner') => ({ content: Buffer.from(JSON.stringify(body)), fields: { routingKey }, properties: { headers: {} } }) as unknown as ConsumeMessage;

  test('the contract: valid events decode; a bad body or a routing key not its rule is poison', () => {
    assert.deepEqual(alertContract.decode(message(scanner())), AlertEventSchema.parse(scanner()));
    assert.throws(() => alertContract.decode(message({ ...scanner(), incident: 'x' })), (err) => err instanceof PoisonMessageError && /incident/.test(err.message));
    assert.throws(() => alertContract.decode(message(scanner(), 'logs.alert.error_rate')), (err) => err instanceof PoisonMessageError && /routing key/.test(err.message));
    assert.throws(() => alertContract.decode(message({ ...scanner(), source: 'alert' })), /alert is reserved/);
  });

  test('one outbox row per (rule, source, incident, state): a redelivered or republished alert adds nothing', async () => {
    const s = setup();
    const handler = createAlertHandler({ outbox: s.outbox, operatorEmail: OPERATOR, now: s.clock.now });
    const fired = scanner();
    await handler([item(fired), item(fired)], ctx);
    await handler([item(fired)], ctx);
    await handler([item(scanner({ state: 'resolved', numbers: { requests: 90, s4xx: 60, minutes: 1 }, clients: [] }))], ctx);
    assert.deepEqual([...s.outbox.rows.keys()].sort(), [alertDedupeKey(fired), alertDedupeKey({ ...fired, state: 'resolved' })].sort());
    assert.equal(alertDedupeKey(fired), `alert:scanner:shop:${incident}:fired`);
    s.clock.advance(2_000);
    assert.equal(await s.dispatcher.tick(), 2, 'two mails: fired, then resolved');
    assert.deepEqual(s.sender.accepted.map((e) => e.subject.slice(0, 10)), ['[ALERT] sh', '[RESOLVED]']);
    await handler([item(fired)], ctx);
    assert.equal(await s.dispatcher.tick(), 0, 'a republished event after the mail went out: no second mail');
    assert.ok(s.sender.accepted.every((e) => e.to === OPERATOR));
  });

  test('hostile log text is escaped and bounded: no header injection, no markup, no hidden characters', () => {
    const email = alertEmail(OPERATOR, scanner());
    assert.doesNotMatch(email.subject, /[\r\n]/, 'the subject holds no line break');
    assert.match(email.subject, /scanner 203\.0\.113\.66\\u\{d\}\\u\{a\}Bcc/);
    assert.ok(!email.html.includes('<img'), 'no markup from the log');
    assert.ok(email.html.includes('&lt;img src=x onerror=alert(1)&gt;'));
    assert.ok(!email.text.includes('\u202E') && email.text.includes('\\u{202e}txt.exe'), 'a bidi override is shown, not applied');
    assert.equal(printable('x'.repeat(500), 200).length, 200);
    assert.ok(printable('x'.repeat(500), 200).endsWith('…'));
  });

  test('an error_rate mail says the numbers and the top paths', () => {
    const email = alertEmail(OPERATOR, {
      rule: 'error_rate', source: 'shop', incident, state: 'fired', at: '2024-10-10T12:03:00.000Z', since: '2024-10-10T12:03:00.000Z',
      numbers: { requests: 40, s5xx: 6, ratio: 0.15, minutes: 1 }, topPaths: [{ path: '/api/checkout', count: 4 }, { path: '/api/cart', count: 2 }],
      thresholds: { ratio: 0.05, minRequests: 20 },
    });
    assert.equal(email.subject, '[ALERT] shop: 15.0 % 5xx (6 of 40 requests) in the minute 2024-10-10 12:03 UTC');
    assert.match(email.text, /^5xx answers: 6 \(15\.0 %\)$/m);
    assert.match(email.text, /\n\s+4 {2}\/api\/checkout\n\s+2 {2}\/api\/cart\n/);
  });
});
