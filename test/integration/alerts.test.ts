// Web-log alerts end to end on real RabbitMQ, MariaDB and the SES emulator: an access log
// replayed through the trigger -> logs.clean -> log-clean (web_requests and the aggregates)
// -> log-alerts -> logs.alert.<rule> -> notify.alerts -> notify-email -> SES.
// The log holds clean minutes, three minutes over 5 % 5xx, clean minutes again and a scanner
// burst; the operator gets exactly one "fired" and one "resolved" mail per incident, with the
// numbers and the offenders, also when log-alerts publishes its events again. A copy replayed
// with "alerts": false under another source mails nobody. A followed source that stops
// publishing fires `silent` and resolves when lines flow again.
// The emulator is shared with other suites: mails are told apart by this run's source names.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import amqp, { type ConfirmChannel } from 'amqplib';
import type { Pool } from '../../shared/db/pool.ts';
import type { FunctionName } from '../../infra/access.ts';
import { deadLetterQueue } from '../../infra/topology.ts';
import { ensureSesEmulator } from '../../scripts/ses-emulator.ts';
import { AMQP_URL, SES_ENDPOINT, api, count, ensureBuilt, ownUrls, resetEnvironment, startFunction, stopAll, waitFor, type FnProcess } from './harness.ts';

interface StoredEmail {
  destination: { to: string[] };
  subject: string;
  body: { text?: string; html?: string };
}

const OPERATOR = 'ops-weblogs@sluice.test';
const tag = randomBytes(3).toString('hex');
const SHOP = `shop-${tag}`;
const MUTED = `muted-${tag}`;
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-alerts-'));
let pool: Pool;
let trigger: FnProcess;
let alerts: FnProcess;
let ses: Awaited<ReturnType<typeof ensureSesEmulator>>;

// --- the log ---------------------------------------------------------------------------------
// Minute i is 2024-10-10 12:0i UTC (event time: a replay of an old day).
const MINUTE0 = Date.UTC(2024, 9, 10, 12, 0);
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
function stamp(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}
const line = (minute: number, i: number, ip: string, target: string, status: number) =>
  `${ip} - - [${stamp(MINUTE0 + minute * 60_000 + (i % 60) * 1000)}] "GET ${target} HTTP/1.1" ${status} 512 "-" "Mozilla/5.0 (sluice-alerts-test)"`;

/** The file, and what each minute holds: requests and 5xx. */
function accessLog(): { text: string; minutes: { requests: number; s5xx: number }[] } {
  const lines: string[] = [];
  const minutes: { requests: number; s5xx: number }[] = [];
  const minute = (m: number, requests: number, errors: [string, number][]) => {
    let i = 0;
    for (const [target, n] of errors) for (let k = 0; k < n; k++) lines.push(line(m, i++, `198.51.100.${(i % 50) + 1}`, target, 503));
    while (i < requests) lines.push(line(m, i++, `198.51.100.${(i % 50) + 1}`, `/page/${i % 7}`, 200));
    minutes[m] = { requests, s5xx: errors.reduce((n, [, e]) => n + e, 0) };
  };
  minute(0, 30, []);
  minute(1, 30, [['/api/checkout', 1]]); // 3.3 %: under the threshold
  minute(2, 9, [['/api/checkout', 5]]); // 56 % but only 9 requests (18 once replayed twice)
  minute(3, 40, [['/api/checkout', 4], ['/api/cart', 2]]); // 15 %: fires
  minute(4, 40, [['/api/checkout', 5], ['/api/cart', 3]]); // 20 %
  minute(5, 40, [['/api/checkout', 3]]); // 7.5 %
  minute(6, 40, [['/api/checkout', 2]]); // exactly 5 %: clean, resolves the incident
  minute(7, 30, []);
  // A scanner in minute 7: 60 answers 404 to one client (and a hostile path among them).
  for (let k = 0; k < 60; k++) {
    const target = k < 40 ? '/wp-login.php' : k < 55 ? '/.env' : '/<script>alert(1)</script>';
    lines.push(line(7, k, '203.0.113.66', target, 404));
  }
  minutes[7]!.requests += 60;
  minute(8, 30, []);
  minute(9, 30, []);
  return { text: `${lines.join('\n')}\n`, minutes };
}

async function emails(): Promise<StoredEmail[]> {
  return ((await (await fetch(`${SES_ENDPOINT}/store`)).json()) as { emails: StoredEmail[] }).emails;
}
const mailsOf = async (source: string) => (await emails()).filter((e) => e.subject.includes(` ${source}:`));

async function replay(body: Record<string, unknown>): Promise<string> {
  const res = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'access.log', ...body });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const id = res.body.id as string;
  await waitFor(`run ${id} done`, async () => {
    const run = (await api(trigger, 'GET', `/v1/runs/${id}`)).body;
    assert.notEqual(run.state, 'failed', run.error);
    return run.state === 'done';
  }, 30_000);
  return id;
}

/** Publish as a function's own RabbitMQ user (or the administrator) with confirms: 'ok' or the broker's refusal. */
async function publishAs(fn: FunctionName | 'admin', routingKey: string, body: string): Promise<string> {
  const conn = await amqp.connect(fn === 'admin' ? AMQP_URL : ownUrls(fn).AMQP_URL);
  conn.on('error', () => {});
  try {
    const ch: ConfirmChannel = await conn.createConfirmChannel();
    const closed = new Promise<string>((resolve) => ch.on('error', (err: Error) => resolve(err.message)));
    ch.publish('logs', routingKey, Buffer.from(body), { messageId: `alerts-test-${Date.now()}`, persistent: true, contentType: 'application/json' });
    return await Promise.race([ch.waitForConfirms().then(() => 'ok'), closed]);
  } catch (err) {
    return (err as Error).message;
  } finally {
    await conn.close().catch(() => {});
  }
}

before(async () => {
  ensureBuilt();
  ses = await ensureSesEmulator(SES_ENDPOINT);
  pool = await resetEnvironment();
  writeFileSync(path.join(dir, 'access.log'), accessLog().text);
  await startFunction('log-clean');
  // Short settle and poll so the test's last minute is judged within seconds.
  alerts = await startFunction('log-alerts', { ALERT_SETTLE_S: '2', ALERT_POLL_MS: '200', ALERT_SLACK_S: '5' });
  await startFunction('notify-email', { GROUP_WINDOW_S: '1', SES_MAX_PER_SECOND: '200', OUTBOX_POLL_MS: '50', ALERT_EMAIL: OPERATOR });
  trigger = await startFunction('trigger', { LOG_DIR: dir });
});
after(async () => {
  await stopAll();
  await ses?.stop();
  await pool?.end();
  rmSync(dir, { recursive: true, force: true });
});

test('a replayed outage and a scanner: one fired and one resolved mail each, with the numbers and offenders; a muted copy mails nobody', { timeout: 120_000 }, async () => {
  const { minutes } = accessLog();
  await replay({ source: SHOP });
  await replay({ source: MUTED, alerts: false });

  // The muted run's requests are counted, but not as alerting.
  await waitFor('both sources counted', async () =>
    (await count(pool, 'SELECT COALESCE(SUM(requests), 0) FROM log_stats_minute WHERE source = ?', [MUTED])) === minutes.reduce((n, m) => n + m.requests, 0) &&
    (await count(pool, 'SELECT COALESCE(SUM(requests), 0) FROM log_stats_minute WHERE source = ?', [SHOP])) === minutes.reduce((n, m) => n + m.requests, 0),
  30_000);
  assert.equal(await count(pool, 'SELECT COALESCE(SUM(alerting), 0) FROM log_stats_minute WHERE source = ?', [MUTED]), 0, 'lines of a muted run carry alerts: false');

  const mails = await waitFor('four mails for the shop', async () => {
    const got = await mailsOf(SHOP);
    return got.length >= 4 ? got : undefined;
  }, 45_000, 250);
  const find = (what: RegExp) => mails.filter((m) => what.test(m.subject));
  for (const m of mails) assert.deepEqual(m.destination.to, [OPERATOR]);

  // error_rate: fired on minute 3 with its numbers and its top 5xx paths.
  const [fired, ...moreFired] = find(/^\[ALERT\] .*5xx/);
  assert.ok(fired && moreFired.length === 0, `one error_rate fired mail: ${mails.map((m) => m.subject).join(' | ')}`);
  assert.equal(fired.subject, `[ALERT] ${SHOP}: 15.0 % 5xx (6 of 40 requests) in the minute 2024-10-10 12:03 UTC`);
  const text = fired.body.text ?? '';
  assert.match(text, /^Requests: 40$/m);
  assert.match(text, /^5xx answers: 6 \(15\.0 %\)$/m);
  assert.match(text, /^Minute: 2024-10-10T12:03:00\.000Z$/m);
  assert.match(text, /Top paths answered 5xx in that minute:\n\s+4 {2}\/api\/checkout\n\s+2 {2}\/api\/cart\n/);
  // ... resolved once minute 6 (exactly 5 %: not above) is complete: three minutes, their totals.
  const [resolved, ...moreResolved] = find(/^\[RESOLVED\] .*5xx/);
  assert.ok(resolved && moreResolved.length === 0, 'one error_rate resolved mail');
  assert.equal(resolved.subject, `[RESOLVED] ${SHOP}: 5xx rate back to normal since 2024-10-10 12:06 UTC (3 minutes over the threshold)`);
  const s5xx = minutes[3]!.s5xx + minutes[4]!.s5xx + minutes[5]!.s5xx;
  assert.match(resolved.body.text ?? '', new RegExp(`^5xx answers in those minutes: ${s5xx} \\(${((s5xx / 120) * 100).toFixed(1)} %\\)$`, 'm'));
  assert.match(resolved.body.text ?? '', /^Requests in those minutes: 120$/m);
  assert.match(resolved.body.text ?? '', /^Resolved at: 2024-10-10T12:07:00\.000Z$/m);

  // scanner: the client, its count and its paths; the hostile path escaped in HTML.
  const [scan, ...moreScan] = find(/^\[ALERT\] .*scanner/);
  assert.ok(scan && moreScan.length === 0, 'one scanner fired mail');
  assert.equal(scan.subject, `[ALERT] ${SHOP}: scanner 203.0.113.66 with 60 4xx answers in the minute 2024-10-10 12:07 UTC`);
  assert.match(scan.body.text ?? '', /Client 203\.0\.113\.66: 60 4xx answers; its top paths:\n\s+40 {2}\/wp-login\.php\n\s+15 {2}\/\.env\n\s+5 {2}\/<script>alert\(1\)<\/script>\n/);
  assert.ok(scan.body.html?.includes('&lt;script&gt;alert(1)&lt;/script&gt;'), 'the path is HTML-escaped');
  assert.ok(!scan.body.html?.includes('<script>'), 'no markup from the log reaches the HTML');
  assert.equal(find(/^\[RESOLVED\] .*scanner/).length, 1, 'one scanner resolved mail');
  assert.equal(mails.length, 4, mails.map((m) => m.subject).join(' | '));

  // The events went through the outbox, one row per transition.
  const outbox = (await pool.query('SELECT rule, state, published_at IS NOT NULL AS published FROM log_alerts_outbox WHERE source = ? ORDER BY id', [SHOP]))[0] as { rule: string; state: string; published: number }[];
  assert.deepEqual(outbox.map((r) => `${r.rule}:${r.state}:${r.published}`).sort(), ['error_rate:fired:1', 'error_rate:resolved:1', 'scanner:fired:1', 'scanner:resolved:1']);

  // At least once: published again (as after a crash between the broker's confirm and the
  // mark), the events reach notify-email a second time and mail nobody.
  await pool.query('UPDATE log_alerts_outbox SET published_at = NULL WHERE source = ?', [SHOP]);
  await waitFor('republished', async () => (await count(pool, 'SELECT COUNT(*) FROM log_alerts_outbox WHERE source = ? AND published_at IS NULL', [SHOP])) === 0, 15_000);
  // Replaying the same log again under the same source counts every minute twice: the
  // breaching minutes were counted in their incidents already, so nothing fires again.
  await replay({ source: SHOP });
  await waitFor('the second replay counted', async () =>
    (await count(pool, 'SELECT COALESCE(SUM(requests), 0) FROM log_stats_minute WHERE source = ?', [SHOP])) === 2 * minutes.reduce((n, m) => n + m.requests, 0), 30_000);
  // The cursor moves past a stamp only once every minute stamped before it was judged.
  await waitFor('log-alerts to have judged the moved minutes', async () => {
    const [[row]] = (await pool.query(
      "SELECT (SELECT updated_at FROM log_alerts_cursor WHERE name = 'minutes') >= (SELECT MAX(updated_at) FROM log_stats_minute WHERE source = ?) AS judged", [SHOP],
    )) as [{ judged: number }[], unknown];
    return Number(row?.judged) === 1 && (await count(pool, 'SELECT COUNT(*) FROM log_alerts_state WHERE source = ? AND pending_minute IS NOT NULL', [SHOP])) === 0;
  }, 15_000);
  await new Promise((r) => setTimeout(r, 1_500)); // what it published (nothing) reaches notify-email
  assert.equal((await mailsOf(SHOP)).length, 4, 'still exactly one fired and one resolved mail per incident');
  assert.equal(await count(pool, "SELECT COUNT(*) FROM email_outbox WHERE kind = 'alert' AND dedupe_key LIKE ?", [`alert:%:${SHOP}:%`]), 4);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM log_alerts_outbox WHERE source = ?', [SHOP]), 4);

  // The muted copy: nothing decided, nothing mailed.
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM log_alerts_outbox WHERE source = ?', [MUTED]), 0);
  assert.equal((await mailsOf(MUTED)).length, 0);
});

test('only log-alerts may publish logs.alert.*; an invalid alert is dead-lettered with the reason', async () => {
  assert.match(await publishAs('trigger', 'logs.alert.access', '{}'), /ACCESS_REFUSED.*logs\.alert\.access/, 'the trigger cannot publish into notify.alerts');
  assert.match(await publishAs('log-clean', 'logs.alert.error_rate', '{}'), /ACCESS_REFUSED/);
  assert.match(await publishAs('log-alerts', 'logs.x.access', 'a log line'), /ACCESS_REFUSED.*logs\.x\.access/, 'log-alerts cannot publish log lines');
  assert.equal(await publishAs('admin', 'logs.alert.error_rate', JSON.stringify({ rule: 'error_rate', source: 'x' })), 'ok');
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    const dlq = deadLetterQueue('notify.alerts');
    const msg = await waitFor('the invalid alert in the DLQ', async () => (await ch.get(dlq, { noAck: true })) || undefined, 15_000);
    assert.match(String(msg.properties.headers?.['x-sluice-reason']), /schema violation: incident/);
  } finally {
    await conn.close();
  }
});

test('a followed source that goes silent: fired after ALERT_SILENT_S, resolved when lines flow again', { timeout: 60_000 }, async () => {
  const QUIET = `quiet-${tag}`;
  await alerts.kill();
  alerts = await startFunction('log-alerts', { ALERT_SILENT_S: '3', ALERT_POLL_MS: '200' });
  writeFileSync(path.join(dir, 'follow.log'), `${line(0, 0, '192.0.2.1', '/', 200)}\n`);
  const res = await api(trigger, 'POST', '/v1/runs', { kind: 'logs', file: 'follow.log', follow: true, source: QUIET });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const runId = res.body.id as string;
  const fired = await waitFor('the silent alert', async () => (await mailsOf(QUIET)).find((m) => m.subject.startsWith('[ALERT]')), 30_000, 250);
  assert.match(fired.subject, new RegExp(`^\\[ALERT\\] ${QUIET}: no new log line for \\d+ s$`));
  assert.match(fired.body.text ?? '', new RegExp(`^Follow runs: 1: ${runId}$`, 'm'));
  assert.match(fired.body.text ?? '', /^Lines published so far: 1$/m);
  appendFileSync(path.join(dir, 'follow.log'), `${line(1, 1, '192.0.2.1', '/', 200)}\n`);
  const back = await waitFor('the resolution', async () => (await mailsOf(QUIET)).find((m) => m.subject.startsWith('[RESOLVED]')), 30_000, 250);
  assert.match(back.subject, new RegExp(`^\\[RESOLVED\\] ${QUIET}: log lines flow again \\(silent for \\d+ s\\)$`));
  assert.equal((await api(trigger, 'POST', `/v1/runs/${runId}/stop`)).status, 200);
  // Once the run is stopped nothing is followed: any incident still open (the source fell silent
  // again meanwhile) is resolved as stopped; every incident has exactly one mail of each kind.
  await waitFor('the stopped run forgotten, no silent incident open', async () =>
    (await count(pool, 'SELECT COUNT(*) FROM log_alerts_silence WHERE run_id = ?', [runId])) === 0 &&
    (await count(pool, "SELECT COUNT(*) FROM log_alerts_state WHERE rule = 'silent' AND source = ? AND incident IS NOT NULL", [QUIET])) === 0, 15_000);
  const rows = (await pool.query("SELECT incident, state FROM log_alerts_outbox WHERE source = ? AND published_at IS NOT NULL", [QUIET]))[0] as { incident: string; state: string }[];
  const byIncident = new Map<string, string[]>();
  for (const r of rows) byIncident.set(r.incident, [...(byIncident.get(r.incident) ?? []), r.state].sort());
  for (const states of byIncident.values()) assert.deepEqual(states, ['fired', 'resolved']);
  await waitFor('every transition mailed', async () => (await mailsOf(QUIET)).length === rows.length, 10_000);
});
