// The periodic evaluator (log-alerts is not a queue consumer: it follows the aggregates
// log-clean keeps). Every ALERT_POLL_MS:
//   1. read the minutes of log_stats_minute stamped since the shared cursor, less a slack
//      (a transaction stamps its rows before it commits), that hold alerting requests;
//   2. per rule and source (with the sources that have an open incident or a pending minute),
//      one transaction with the state row locked: judge the minutes (rules.ts), record the
//      breaching ones, save the state and put the events into the outbox, all in one commit;
//   3. every few seconds, the silent rule over the running follow runs;
//   4. publish the outbox with confirms and mark what the broker took. A process that dies
//      in between leaves rows unpublished, and the next poll (of any process) publishes them:
//      at least once, and notify-email mails once per (rule, source, incident, state).
import { randomUUID } from 'node:crypto';
import { Counter } from 'prom-client';
import { LOGS_EXCHANGE } from '../../shared/contracts/logs.ts';
import { ALERT_TEXT_MAX, alertMessageOptions, type AlertEvent, type AlertRule, type ClientCount, type PathCount } from '../../shared/contracts/alerts.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/log.ts';
import type { Publisher } from '../../shared/amqp/publisher.ts';
import type { Metrics } from '../../shared/metrics.ts';
import { periodic, type Periodic } from '../../shared/timing.ts';
import {
  MINUTE_MS, advance, errorRateBreach, isComplete, scannerCandidate, scannerOffenders, silenceBySource, silenceStep,
  type IncidentState, type MinuteCounts, type MinuteStatus, type Transition,
} from './rules.ts';
import type { AlertStore, ChangedMinute, StateTx } from './store.ts';

export interface EvaluatorConfig {
  rules: AlertRule[];
  errorRatio: number;
  errorMinRequests: number;
  scanner4xx: number;
  silentS: number;
  clearMinutes: number;
  settleS: number;
  topN: number;
  slackS: number;
  /** The silent rule runs at most this often (it is about minutes; reading the runs every poll is waste). */
  silentEveryMs?: number;
}

export interface EvaluatorDeps {
  store: AlertStore;
  publisher: Pick<Publisher, 'publish'>;
  log: Logger;
  config: EvaluatorConfig;
  metrics?: Metrics;
  newId?: () => string;
}

interface Detail {
  counts: MinuteCounts;
  clients?: { clientIp: string; count: number }[];
}

const iso = (ms: number) => new Date(ms).toISOString();
/** A string from the log, cut to what an event may carry (never inside a surrogate pair). */
export function cut(s: string, max = ALERT_TEXT_MAX): string {
  if (s.length <= max) return s;
  let end = max - 1;
  const code = s.charCodeAt(end - 1);
  if (code >= 0xd800 && code <= 0xdbff) end--;
  return `${s.slice(0, end)}…`;
}
const paths = (list: { path: string; count: number }[]): PathCount[] => list.map((p) => ({ path: cut(p.path), count: p.count }));

export function createEvaluator(deps: EvaluatorDeps) {
  const { store, log, config } = deps;
  const newId = deps.newId ?? randomUUID;
  const enabled = new Set(config.rules);
  const silentEveryMs = deps.config.silentEveryMs ?? 5_000;
  const transitions = deps.metrics
    ? new Counter({ name: 'sluice_alerts_total', help: 'Alert transitions decided, by rule and state', labelNames: ['rule', 'state'] as const, registers: [deps.metrics.registry] })
    : null;
  /** (rule, source, minute) -> the updated_at it was judged at, for rows still inside the slack window. */
  const judged = new Map<string, number>();
  let lastSilent = -Infinity;

  const key = (rule: string, c: Pick<ChangedMinute, 'source' | 'minute'>) => `${rule}\0${c.source}\0${c.minute}`;

  async function statusOf(rule: AlertRule, tx: StateTx, latest: Awaited<ReturnType<StateTx['latest']>>, rows: Map<number, MinuteCounts | null>, minute: number): Promise<MinuteStatus<Detail>> {
    if (!isComplete(minute, latest)) return { kind: 'incomplete' };
    if (!rows.has(minute)) {
      // The walk after a breach asks for the minutes that follow: fetch an hour of them at once.
      const ahead = Array.from({ length: 60 }, (_, i) => minute + i * MINUTE_MS);
      const got = await tx.minutes(ahead);
      for (const m of ahead) if (!rows.has(m)) rows.set(m, got.get(m) ?? null);
    }
    const counts = rows.get(minute);
    if (!counts) return { kind: 'clean' }; // no alerting request in that minute
    if (rule === 'error_rate') {
      return errorRateBreach(counts, { ratio: config.errorRatio, minRequests: config.errorMinRequests }) ? { kind: 'breach', detail: { counts } } : { kind: 'clean' };
    }
    if (!scannerCandidate(counts, config.scanner4xx)) return { kind: 'clean' };
    const clients = scannerOffenders(await tx.clients4xx(minute, config.scanner4xx, config.topN), config.scanner4xx);
    return clients.length > 0 ? { kind: 'breach', detail: { counts, clients } } : { kind: 'clean' };
  }

  async function eventOf(rule: AlertRule, source: string, tx: StateTx, t: Transition<Detail>): Promise<AlertEvent> {
    if (t.type === 'fired') {
      const c = t.detail.counts;
      const base = { source, incident: t.incident, state: 'fired' as const, at: iso(t.minute), since: iso(t.minute) };
      if (rule === 'error_rate') {
        return {
          ...base, rule,
          numbers: { requests: c.requests, s5xx: c.s5xx, ratio: c.requests ? c.s5xx / c.requests : 0, minutes: 1 },
          topPaths: paths(await tx.topPaths(t.minute, 500, 599, config.topN)),
          thresholds: { ratio: config.errorRatio, minRequests: config.errorMinRequests },
        };
      }
      const offenders = t.detail.clients ?? [];
      const byClient = await tx.clientPaths(t.minute, offenders.map((o) => o.clientIp), config.topN);
      const clients: ClientCount[] = offenders.map((o) => ({ clientIp: cut(o.clientIp), count: o.count, paths: paths(byClient.get(o.clientIp) ?? []) }));
      return { ...base, rule: 'scanner', numbers: { requests: c.requests, s4xx: c.s4xx, minutes: 1 }, clients, thresholds: { clientErrors: config.scanner4xx } };
    }
    const totals = await tx.incidentTotals(t.since, t.lastBreach);
    const base = { source, incident: t.incident, state: 'resolved' as const, at: iso(t.at), since: iso(t.since), until: iso(t.lastBreach + MINUTE_MS) };
    const minutes = Math.max(1, totals.minutes);
    if (rule === 'error_rate') {
      return {
        ...base, rule,
        numbers: { requests: totals.requests, s5xx: totals.s5xx, ratio: totals.requests ? Math.min(1, totals.s5xx / totals.requests) : 0, minutes },
        topPaths: [],
        thresholds: { ratio: config.errorRatio, minRequests: config.errorMinRequests },
      };
    }
    return { ...base, rule: 'scanner', numbers: { requests: totals.requests, s4xx: totals.s4xx, minutes }, clients: [], thresholds: { clientErrors: config.scanner4xx } };
  }

  /** One (rule, source) in one transaction; returns the state's pending minute (not judged yet). */
  async function evaluate(rule: AlertRule, source: string, candidates: number[]): Promise<number | null> {
    return store.withState(rule, source, config.settleS * 1000, async (tx) => {
      const latest = await tx.latest();
      const wanted = tx.state.pending === null ? candidates : [...candidates, tx.state.pending];
      const got = await tx.minutes(wanted);
      const rows = new Map<number, MinuteCounts | null>(wanted.map((m) => [m, got.get(m) ?? null]));
      const result = await advance<Detail>(
        tx.state,
        candidates,
        { status: (m) => statusOf(rule, tx, latest, rows, m), recorded: (ms) => tx.recorded(ms) },
        { clearMinutes: config.clearMinutes, newId },
      );
      await tx.record(result.records);
      for (const t of result.transitions) {
        const event = await eventOf(rule, source, tx, t);
        await tx.enqueue(event);
        transitions?.inc({ rule, state: event.state });
        log.warn({ rule, source, incident: event.incident, state: event.state, at: event.at, numbers: event.numbers }, `alert ${event.state}`);
      }
      if (changed(tx.state, result.state) || latest !== null) await tx.save(result.state);
      return result.state.pending;
    });
  }

  async function silent(): Promise<boolean> {
    const now = await store.now();
    const running = await store.runningFollows();
    const sources = [...new Set([...running.map((r) => r.source), ...(await store.silenceSources())])].sort();
    let ok = true;
    for (const source of sources) {
      try {
        await store.withSilence(source, async (tx) => {
          const tracked = await tx.track(running.filter((r) => r.source === source), now);
          const view = silenceBySource(tracked.map((t) => ({ ...t, source })), now, config.silentS * 1000).get(source);
          const step = silenceStep(tx.state, view, newId);
          const t = step.transition;
          if (t) {
            const v = t.view;
            const silentForS = (t.type === 'resolved' && t.reason === 'flowing' && v ? v.lastMoved - t.since : now - t.since) / 1000;
            const event: AlertEvent = {
              rule: 'silent', source, incident: t.incident, state: t.type, at: iso(now), since: iso(t.since),
              ...(t.type === 'resolved' ? { reason: t.reason } : {}),
              numbers: { silentForS: Math.max(0, Math.round(silentForS)), published: v?.published ?? 0, runs: v?.runIds.length ?? 0 },
              runIds: (v?.runIds ?? []).slice(0, 10),
              thresholds: { silentS: config.silentS },
            };
            await tx.enqueue(event);
            transitions?.inc({ rule: 'silent', state: event.state });
            log.warn({ rule: 'silent', source, incident: event.incident, state: event.state, numbers: event.numbers }, `alert ${event.state}`);
          }
          if (changed(tx.state, step.state)) await tx.save(step.state);
        });
      } catch (err) {
        ok = false;
        log.error({ rule: 'silent', source, err: errorMessage(err) }, 'evaluating a source failed');
      }
    }
    return ok;
  }

  async function publishOutbox(): Promise<number> {
    let sent = 0;
    for (;;) {
      const batch = await store.unpublished(100);
      if (batch.length === 0) return sent;
      await Promise.all(batch.map((m) => deps.publisher.publish(LOGS_EXCHANGE, m.routingKey, m.body, alertMessageOptions(m.messageId))));
      await store.markPublished(batch.map((m) => m.id));
      sent += batch.length;
      if (batch.length < 100) return sent;
    }
  }

  /** One pass; throws when something failed (after doing what it could), so the loop backs off. */
  async function poll(): Promise<{ minutes: number; published: number }> {
    const cursor = await store.cursor();
    const from = cursor - config.slackS * 1000;
    const changedRows = await store.changedMinutes(from);
    let failed = 0;
    for (const rule of (['error_rate', 'scanner'] as const).filter((r) => enabled.has(r))) {
      const bySource = new Map<string, ChangedMinute[]>();
      for (const c of changedRows) {
        if (judged.get(key(rule, c)) === c.updatedAt) continue;
        const list = bySource.get(c.source) ?? [];
        list.push(c);
        bySource.set(c.source, list);
      }
      const sources = [...new Set([...bySource.keys(), ...(await store.revisit(rule))])].sort();
      for (const source of sources) {
        const list = bySource.get(source) ?? [];
        try {
          const pending = await evaluate(rule, source, list.map((c) => c.minute));
          for (const c of list) if (c.minute !== pending) judged.set(key(rule, c), c.updatedAt);
        } catch (err) {
          failed++;
          log.error({ rule, source, err: errorMessage(err) }, 'evaluating a source failed');
        }
      }
    }
    // The cursor moves only when every source was judged: a failed one is read again next time.
    if (failed === 0 && changedRows.length > 0) await store.advanceCursor(Math.max(...changedRows.map((c) => c.updatedAt)));
    for (const [k, at] of judged) if (at < from) judged.delete(k);
    if (enabled.has('silent') && Date.now() - lastSilent >= silentEveryMs) {
      if (await silent()) lastSilent = Date.now();
      else failed++;
    }
    const published = await publishOutbox();
    if (failed > 0) throw new Error(`${failed} evaluation(s) failed (see above)`);
    return { minutes: changedRows.length, published };
  }

  let loop: Periodic | null = null;
  let lastOk = 0;
  return {
    poll,
    /** The last pass succeeded within `ms`. */
    healthy: (ms: number) => Date.now() - lastOk <= ms,
    start(pollMs: number) {
      // Back off while something is wrong (the database, the broker), up to 10 s.
      loop = periodic(async () => {
        await poll();
        lastOk = Date.now();
      }, { name: 'alert pass', everyMs: pollMs, backoff: { baseMs: pollMs * 2, maxMs: Math.max(10_000, pollMs) }, log });
    },
    async stop() {
      await loop?.stop();
    },
  };
}

function changed(a: IncidentState, b: IncidentState): boolean {
  return a.incident !== b.incident || a.since !== b.since || a.lastBreach !== b.lastBreach || a.pending !== b.pending;
}
