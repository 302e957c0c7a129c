// The live dashboard in a real browser: Debian's headless Chromium (installed when missing,
// like goaccess in its test) driven by puppeteer-core, against the trigger, log-lake,
// log-clean, ev-analytics and ev-store running from their bundles on real RabbitMQ and MariaDB.
// Without a token nothing but the login form works; signed in, a replay started from the
// form reaches `done` in the runs panel and the requests total shown is the run's, without a
// reload; a follow is stopped from its button; the EV and health panels fill. Screenshots go to
// docs/screenshots/ (the README shows them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import type { Pool } from '../../shared/db/pool.ts';
import {
  AMQP_URL, RABBITMQ_MONITOR_URL, TOKEN, api, count, logsDir, resetEnvironment, root, startFunction, stopAll, waitFor, type FnProcess,
} from './harness.ts';

const CHROMIUM = '/usr/bin/chromium';
const shots = path.join(root, 'docs/screenshots');

function ensureChromium(): void {
  if (spawnSync(CHROMIUM, ['--version']).status === 0) return;
  assert.equal(process.getuid?.(), 0, 'chromium is missing: apt-get install -y chromium');
  spawnSync('apt-get', ['update', '-qq'], { stdio: 'ignore' });
  const r = spawnSync('apt-get', ['install', '-y', '-qq', 'chromium'], { encoding: 'utf8', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  assert.equal(r.status, 0, `apt-get install chromium failed: ${r.stderr}`);
}

let pool: Pool;
let trigger: FnProcess;
let browser: Browser;
let page: Page;
let logDir: string;
let base: string;
/** The test vhost, as the management API's paths spell it. */
const vhost = encodeURIComponent(decodeURIComponent(new URL(AMQP_URL).pathname.slice(1)) || '/');

/**
 * A management API call as sluice_monitor, the user the trigger's health panel reads with (the
 * harness gives the trigger RABBITMQ_MONITOR_URL, as npm start does): its status and body.
 */
async function asMonitor(method: string, p: string, body?: unknown): Promise<{ status: number; text: string }> {
  const u = new URL(RABBITMQ_MONITOR_URL);
  const res = await fetch(`${u.protocol}//${u.host}${p}`, {
    method,
    headers: { authorization: `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}`, 'content-type': 'application/json' },
    body: body === undefined ? null : JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

before(async () => {
  ensureChromium();
  // The page is part of the trigger's build output (npm test builds first; a bare run builds when it is missing).
  if (!existsSync(path.join(root, 'dist/trigger/dashboard/assets.json'))) {
    const r = spawnSync(process.execPath, ['build.mjs', '--no-check'], { cwd: root, stdio: 'inherit' });
    assert.equal(r.status, 0, 'build failed');
  }
  pool = await resetEnvironment();
  logDir = mkdtempSync(path.join(tmpdir(), 'sluice-dashboard-logs-'));
  copyFileSync(path.join(logsDir, 'apache_logs'), path.join(logDir, 'apache.log'));
  await Promise.all([startFunction('log-lake'), startFunction('log-clean'), startFunction('ev-analytics'), startFunction('ev-store')]);
  // The trigger's RABBITMQ_MONITOR_URL is the harness's: sluice_monitor, made by the migrate step.
  trigger = await startFunction('trigger', { LOG_DIR: logDir });
  base = `http://127.0.0.1:${trigger.ready.port}`;
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  page = await browser.newPage();
  await page.setViewport({ width: 1500, height: 1000 });
  mkdirSync(shots, { recursive: true });
});

after(async () => {
  await browser?.close();
  await stopAll();
  await pool?.end();
  if (logDir) rmSync(logDir, { recursive: true, force: true });
});

// The page's DOM as far as the probes below use it: the test is type-checked with Node's types,
// not the DOM's (those are for the page's own code), and the probes run in the page.
interface PageEl {
  hidden: boolean; offsetParent: unknown; value: string; textContent: string | null; dataset: Record<string, string | undefined>;
  click(): void;
  querySelector(sel: string): PageEl | null; querySelectorAll(sel: string): Iterable<PageEl> & ArrayLike<PageEl>;
}
interface Dom { document: PageEl }

/** Rendered, as the browser lays it out (not just without a `hidden` attribute: CSS could still show it). */
const visible = (sel: string) => page.$eval(sel, (e) => (e as unknown as PageEl).offsetParent !== null);

test('without a token, only the login form: the page makes no data request, and none would succeed', async () => {
  const dataRequests: string[] = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname.startsWith('/v1/')) dataRequests.push(`${r.method()} ${r.url()}`);
  });
  const res = await page.goto(`${base}/`, { waitUntil: 'networkidle0' });
  assert.equal(res?.status(), 200);
  assert.ok(await visible('#login'), 'the login form shows');
  assert.ok(!(await visible('#app')), 'the panels do not');
  assert.deepEqual(dataRequests, [], 'no data request before signing in');

  // From the page's own origin, with its cookies: every data route and the stream refuse.
  const statuses = await page.evaluate(async () => {
    const out: Record<string, number> = {};
    for (const url of ['/v1/runs', '/v1/stats', '/v1/stats/top?dimension=path', '/v1/events', '/metrics']) out[url] = (await fetch(url)).status;
    out['POST /v1/runs'] = (await fetch('/v1/runs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"kind":"logs","file":"apache.log"}' })).status;
    out.EventSource = await new Promise<number>((resolve) => {
      const es = new EventSource('/v1/events');
      es.onopen = () => (es.close(), resolve(200));
      es.onerror = () => (es.close(), resolve(es.readyState === EventSource.CLOSED ? 401 : 0));
    });
    return out;
  });
  for (const [what, status] of Object.entries(statuses)) assert.equal(status, 401, what);

  // A wrong token is refused, and the form says so.
  await page.type('#token', 'not-the-token-123');
  await page.click('#login-form button[type="submit"]');
  await page.waitForFunction(() => (globalThis as unknown as Dom).document.querySelector('#login-error')!.textContent!.includes('refused'), { timeout: 5_000 });
  assert.ok(await visible('#login'));
  assert.equal(await page.evaluate(() => sessionStorage.getItem('sluice.token')), null);
  assert.equal(await count(pool, 'SELECT COUNT(*) FROM runs'), 0, 'nothing started');
  await page.screenshot({ path: path.join(shots, 'dashboard-login.png') });
});

test('signed in: a replay started from the form reaches done, and the requests total shown is the run\'s, live', async () => {
  await page.$eval('#token', (e) => ((e as unknown as PageEl).value = ''));
  await page.type('#token', TOKEN);
  await page.click('#login-form button[type="submit"]');
  await page.waitForSelector('#app:not([hidden])', { timeout: 5_000 });
  await page.waitForSelector('#conn[data-state="live"]', { timeout: 5_000 });
  await page.evaluate(() => ((globalThis as unknown as { loadedOnce: boolean }).loadedOnce = true));

  await page.type('#replay-form input[name="file"]', 'apache.log');
  await page.type('#replay-form input[name="source"]', 'apache');
  await page.click('#replay-form input[name="alerts"]'); // an old log: mute its alerts
  await page.click('#replay-form button[type="submit"]');
  const runId = await waitFor('the run in the runs panel', async () => page.$eval('#runs tbody tr', (tr) => (tr as unknown as PageEl).dataset.runId).catch(() => undefined), 10_000);
  const run = await api(trigger, 'GET', `/v1/runs/${runId}`);
  assert.equal(run.body.file, 'apache.log');
  assert.deepEqual(run.body.params, { alerts: false });

  await page.waitForSelector(`#runs tr[data-run-id="${runId}"][data-state="done"]`, { timeout: 120_000 });
  const doneAt = Date.now();
  const published = Number(await page.$eval(`#runs tr[data-run-id="${runId}"] td[data-published]`, (td) => (td as unknown as PageEl).dataset.published));
  assert.equal(published, 10_000, 'every line of apache_logs published');

  // The consumers finish; the total the page shows is then exactly the run's stored requests.
  const stored = await waitFor('the run stored', async () => {
    const r = await api(trigger, 'GET', `/v1/runs/${runId}`);
    return r.body.stored.web_requests + r.body.stored.log_rejects === 10_000 ? r.body.stored.web_requests as number : undefined;
  }, 120_000);
  const storedAt = Date.now();
  await page.waitForFunction((n) => (globalThis as unknown as Dom).document.querySelector('#web-totals')!.dataset.total === String(n), { timeout: 10_000, polling: 50 }, stored);
  const shownAt = Date.now();
  console.log(`dashboard: total ${stored} shown ${shownAt - storedAt} ms after the consumers stored the last row (${shownAt - doneAt} ms after the run was done)`);
  assert.ok(shownAt - storedAt < 2_000 + 500, `the total appeared ${shownAt - storedAt} ms after the last row was stored`);
  assert.equal(await page.evaluate(() => (globalThis as unknown as { loadedOnce?: boolean }).loadedOnce), true, 'no reload');
  const viaApi = await api(trigger, 'GET', '/v1/stats?from=2015-05-17T00:00:00Z&to=2015-05-21T00:00:00Z&bucket=hour&source=apache');
  assert.equal(viaApi.body.totals.requests, stored);
  assert.equal(await page.$eval('#t-requests', (e) => e.textContent), stored.toLocaleString('en-US'));
  assert.ok(Number(await page.$eval('#web-panel', (e) => (e as unknown as PageEl).dataset.points)) > 24, 'the chart has its bars');
  await page.waitForSelector('.tops table[data-dimension="path"] tbody tr', { timeout: 5_000 });
  const topPath = await page.$eval('.tops table[data-dimension="path"] tbody tr td', (td) => td.textContent);
  const apiTop = await api(trigger, 'GET', '/v1/stats/top?dimension=path&from=2015-05-17T00:00:00Z&to=2015-05-21T00:00:00Z&limit=1');
  assert.equal(topPath, apiTop.body.items[0].value);

  // The source selector lists the run's source; a date range narrows the totals to the API's figure for it.
  assert.ok(await page.$('#range-form select option[value="apache"]'));
  await page.select('#range-form select[name="source"]', 'apache');
  await page.$eval('#range-form input[name="from"]', (e) => ((e as unknown as PageEl).value = '2015-05-18T00:00'));
  await page.$eval('#range-form input[name="to"]', (e) => ((e as unknown as PageEl).value = '2015-05-19T00:00'));
  const day = await api(trigger, 'GET', '/v1/stats?source=apache&from=2015-05-18T00:00:00Z&to=2015-05-19T00:00:00Z&bucket=hour');
  assert.ok(day.body.totals.requests > 0 && day.body.totals.requests < stored);
  await page.click('#range-form button[type="submit"]');
  await page.waitForFunction((n) => (globalThis as unknown as Dom).document.querySelector('#web-totals')!.dataset.total === String(n), { timeout: 5_000 }, day.body.totals.requests);
  await page.click('#range-all');
  await page.waitForFunction((n) => (globalThis as unknown as Dom).document.querySelector('#web-totals')!.dataset.total === String(n), { timeout: 5_000 }, stored);

  // Pipeline health from the management API: log-clean is up with its consumer.
  // The management API's figures lag by its statistics interval (5 s): wait for log-clean's consumer to show.
  await page.waitForFunction(() => [...(globalThis as unknown as Dom).document.querySelectorAll('#functions tbody tr')]
    .some((tr) => tr.textContent!.startsWith('log-clean') && tr.querySelector('.badge')!.textContent === 'ok'), { timeout: 15_000 });
  const functions = await page.$$eval('#functions tbody tr', (trs) => trs.map((tr) => [tr.children[0]!.textContent, tr.children[1]!.textContent, tr.querySelector('.badge')!.textContent]));
  assert.deepEqual(functions.find((f) => f[0] === 'log-clean'), ['log-clean', '1', 'ok']);
  assert.deepEqual(functions.find((f) => f[0] === 'notify-email'), ['notify-email', '0', 'down'], 'not started in this test');
  const queues = await page.$$eval('#queues tbody tr', (trs) => trs.map((tr) => tr.children[0]!.textContent));
  assert.ok(queues.includes('logs.clean') && !queues.some((q) => q!.endsWith('.dlq')), `queues: ${queues.join(', ')}`);
  // Drained: the queue's depth reaches 0 on the panel (within the API's statistics interval).
  await page.waitForFunction(() => [...(globalThis as unknown as Dom).document.querySelectorAll('#queues tbody tr')]
    .some((tr) => tr.textContent!.startsWith('logs.clean0')), { timeout: 20_000 });
});

test('sluice_monitor, whose figures the panel shows, can read no message, publish nothing, declare nothing', async () => {
  // What the panel reads.
  assert.equal((await asMonitor('GET', `/api/queues/${vhost}`)).status, 200);
  assert.equal((await asMonitor('GET', `/api/vhosts/${vhost}/connections`)).status, 200);
  // Refused: 401 (the API's own check), or for a publish 400 naming the broker's 403 ACCESS_REFUSED
  // (the API publishes on an AMQP channel of its own as the user, and the broker refuses it).
  const refused = ({ status, text }: { status: number; text: string }) => status === 401 || status === 403 || (status === 400 && /ACCESS_REFUSED/.test(text));
  const attempts: [string, string, unknown?][] = [
    ['POST', `/api/queues/${vhost}/logs.clean/get`, { count: 1, ackmode: 'ack_requeue_true', encoding: 'auto' }],
    ['POST', `/api/queues/${vhost}/notify.email.dlq/get`, { count: 1, ackmode: 'ack_requeue_true', encoding: 'auto' }],
    ['POST', `/api/exchanges/${vhost}/amq.default/publish`, { properties: {}, routing_key: 'notify.email', payload: '{}', payload_encoding: 'string' }],
    ['POST', `/api/exchanges/${vhost}/notify.email.retry/publish`, { properties: {}, routing_key: 'notify.email', payload: '{}', payload_encoding: 'string' }],
    ['DELETE', `/api/queues/${vhost}/logs.clean/contents`],
    ['PUT', `/api/queues/${vhost}/sluice-monitor-made-this`, { durable: false }],
    ['GET', '/api/users'],
  ];
  for (const [method, p, body] of attempts) {
    const res = await asMonitor(method, p, body);
    assert.ok(refused(res), `sluice_monitor: ${method} ${p} is refused (${res.status} ${res.text.slice(0, 200)})`);
  }
});

test('an EV run from its form fills the EV panel; a follow is stopped from its button', async () => {
  await page.$eval('#ev-form input[name="sessions"]', (e) => ((e as unknown as PageEl).value = '20'));
  await page.click('#ev-form button[type="submit"]');
  await page.waitForFunction(() => {
    const tiles = [...(globalThis as unknown as Dom).document.querySelectorAll('#ev-sessions [data-count]')];
    return tiles.reduce((n, t) => n + Number(t.dataset.count), 0) === 20 && !tiles.some((t) => t.dataset.key === 'charging');
  }, { timeout: 120_000, polling: 200 });
  await page.waitForSelector('#ev-feed li', { timeout: 30_000 });
  const runId = (await api(trigger, 'GET', '/v1/runs?limit=1')).body.runs[0].id as string;
  assert.equal(await page.$$eval('#ev-points tbody tr', (trs) => trs.length > 0), true);
  // The events shown are the run's events as stored (ev-store may still be writing the last ones: both are read until they agree).
  await waitFor('the EV panel to show the run\'s events', async () => {
    const stored = await count(pool, 'SELECT COUNT(*) FROM ev_events WHERE run_id = ?', [runId]);
    const shown = await page.$$eval('#ev-events [data-count]', (tiles) => tiles.reduce((n, t) => n + Number((t as unknown as PageEl).dataset.count), 0));
    return stored > 0 && shown === stored;
  }, 20_000);
  await (await page.$('#ev-panel'))!.screenshot({ path: path.join(shots, 'dashboard-ev.png') });

  await page.$eval('#replay-form input[name="file"]', (e) => ((e as unknown as PageEl).value = 'apache.log'));
  await page.$eval('#replay-form input[name="source"]', (e) => ((e as unknown as PageEl).value = 'followed'));
  await page.click('#replay-form input[name="follow"]');
  await page.click('#replay-form button[type="submit"]');
  const stop = await page.waitForSelector('#runs tr[data-state="running"] button[data-stop]', { timeout: 10_000 });
  const followId = await stop!.evaluate((b) => (b as unknown as PageEl).dataset.stop!);
  await page.waitForFunction((id) => (globalThis as unknown as Dom).document.querySelector(`#runs tr[data-run-id="${id}"]`)?.textContent?.includes('following'), { timeout: 30_000 }, followId);
  // Clicked in the page (the element's own click()): a click by coordinates can land beside a button the live table just moved.
  await page.$eval(`#runs button[data-stop="${followId}"]`, (b) => (b as unknown as PageEl).click());
  await page.waitForSelector(`#runs tr[data-run-id="${followId}"][data-state="stopped"]`, { timeout: 15_000 }).catch(async (err: unknown) => {
    const said = await page.$eval('#form-message', (e) => e.textContent);
    const pressed = await page.$eval(`#runs button[data-stop="${followId}"]`, (b) => (b as unknown as { disabled: boolean }).disabled).catch(() => 'gone');
    console.log(`stop button disabled: ${pressed}\n${trigger.logs.slice(-15).join('\n')}`);
    const run = await api(trigger, 'GET', `/v1/runs/${followId}`);
    throw new Error(`the follow run did not show stopped: the page says ${JSON.stringify(said)}, the API ${run.body.state}`, { cause: err });
  });
  assert.equal((await api(trigger, 'GET', `/v1/runs/${followId}`)).body.state, 'stopped');
  await (await page.$('#runs-panel'))!.screenshot({ path: path.join(shots, 'dashboard-runs.png') });
  await page.screenshot({ path: path.join(shots, 'dashboard.png'), fullPage: true });

  // Signing out forgets the token: back to the form, and a reload stays there.
  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])', { timeout: 5_000 });
  await page.reload({ waitUntil: 'networkidle0' });
  assert.ok(await visible('#login'));
  assert.ok(!(await visible('#app')), 'the panels are gone');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('sluice.token')), null);
});
