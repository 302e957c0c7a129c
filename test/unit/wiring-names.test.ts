// Wiring names have one home (shared/contracts/names.ts, infra/topology.ts QUEUES): these tests
// hold what deployed brokers, stored outboxes and dead letters already know, as literals, so a
// rename there is a deliberate change of the wire, never a side effect. Also: the topic
// permissions admit exactly what the builders make, and consume() refuses a queue the topology
// does not declare before anything is asked of the broker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { topology, QUEUES, EV_ANALYTICS_QUEUES, deadLetterQueue, retryQueue, type Topology } from '../../infra/topology.ts';
import { ACCESS, PUBLISHED_KEYS } from '../../infra/access.ts';
import { MESSAGE_TYPES } from '../../shared/contracts/names.ts';
import { LOGS_EXCHANGE, logLineMessage, logRoutingKey, logLineContract } from '../../shared/contracts/logs.ts';
import {
  CLOCK_ROUTING_KEY, EV_EXCHANGE, QUIET_ROUTING_KEY, evQuietContract, quietMessage, EV_EVENT_TYPES, EvReadingSchema, clockMessage, eventMessage, eventRoutingKey, evClockContract, evEventContract,
  evReadingContract, readingMessage, readingRoutingKey, type EvEvent,
} from '../../shared/contracts/ev.ts';
import { ALERT_RULES, alertContract, alertMessage, alertRoutingKey, type AlertEvent } from '../../shared/contracts/alerts.ts';
import { declaredQueue } from '../../shared/amqp/topology.ts';
import { consume } from '../../shared/runtime.ts';
import * as logLakeConfig from '../../functions/log-lake/config.ts';
import * as logCleanConfig from '../../functions/log-clean/config.ts';
import * as evStoreConfig from '../../functions/ev-store/config.ts';
import * as notifyEmailConfig from '../../functions/notify-email/config.ts';
import * as evAnalyticsConfig from '../../functions/ev-analytics/config.ts';

test('the topology on the wire: exchanges, queues and their bindings keep their deployed names', () => {
  assert.deepEqual(
    topology.exchanges.map((e) => [e.name, e.type, e.arguments ?? null, e.bindings ?? null]),
    [
      ['logs', 'topic', null, null],
      ['ev', 'topic', null, null],
      ['ev.analytics', 'x-consistent-hash', { 'hash-header': 'sessionId' }, [{ source: 'ev', pattern: 'ev.reading.#' }, { source: 'ev', pattern: 'ev.quiet' }]],
    ],
  );
  const partition = [{ exchange: 'ev.analytics', pattern: '1' }, { exchange: 'ev', pattern: 'ev.clock' }];
  assert.deepEqual(
    topology.queues.map((q) => [q.name, q.bindings]),
    [
      ['logs.lake', [{ exchange: 'logs', pattern: 'logs.*.access' }]],
      ['logs.clean', [{ exchange: 'logs', pattern: 'logs.*.access' }]],
      ['ev.analytics.p0', partition],
      ['ev.analytics.p1', partition],
      ['ev.analytics.p2', partition],
      ['ev.analytics.p3', partition],
      ['ev.store.readings', [{ exchange: 'ev', pattern: 'ev.reading.#' }]],
      ['ev.store.events', [{ exchange: 'ev', pattern: 'ev.event.#' }]],
      ['notify.email', [{ exchange: 'ev', pattern: 'ev.event.#' }]],
      ['notify.alerts', [{ exchange: 'logs', pattern: 'logs.alert.#' }]],
    ],
  );
  assert.deepEqual([retryQueue('logs.clean'), deadLetterQueue('logs.clean')], ['logs.clean.retry', 'logs.clean.dlq']);
});

test('functions take their queue names from QUEUES; every name QUEUES holds is declared', () => {
  const declared = new Set(topology.queues.map((q) => q.name));
  for (const name of [...Object.values(QUEUES), ...EV_ANALYTICS_QUEUES]) assert.ok(declared.has(name), name);
  assert.equal(logLakeConfig.QUEUE, QUEUES.logLake);
  assert.equal(logCleanConfig.QUEUE, QUEUES.logClean);
  assert.deepEqual([evStoreConfig.READINGS_QUEUE, evStoreConfig.EVENTS_QUEUE], [QUEUES.evStoreReadings, QUEUES.evStoreEvents]);
  assert.deepEqual([notifyEmailConfig.QUEUE, notifyEmailConfig.ALERTS_QUEUE], [QUEUES.notifyEmail, QUEUES.notifyAlerts]);
  assert.deepEqual(evAnalyticsConfig.PARTITION_QUEUES, ['ev.analytics.p0', 'ev.analytics.p1', 'ev.analytics.p2', 'ev.analytics.p3']);
});

const reading = EvReadingSchema.parse({
  messageId: 'run-1:s-1:0', runId: 'run-1', sessionId: 's-1', seq: 0, timestamp: '2025-01-01T00:00:00.000Z', sampleIntervalS: 10,
  chargePointId: 'CP-1', connectorId: 1, vehicle: { make: 'Mercedes Benz', model: 'EQA', batteryKWh: 66, vin: 'W1N2437011J000001' },
  owner: { name: 'Ann', email: 'ann@example.com' }, charger: { type: 'AC', maxKW: 11 }, chargingState: 'Charging',
  socPercent: 40, chargeLimitPercent: 80, powerW: 11000, energyWh: 100, currentA: 16, voltageV: 400, temperatureC: 25, errorCode: 'NoError',
});
const event: EvEvent = {
  eventId: 'e-1', type: 'charge.soc_drop', severity: 'warning', runId: 'run-1', sessionId: 's-1', ts: reading.timestamp, seq: 0,
  chargePointId: 'CP-1', vehicle: reading.vehicle, owner: reading.owner, charger: reading.charger, socPercent: 40, chargeLimitPercent: 80,
  energyWh: 100, summary: 'dropped', details: {},
};
const alert: AlertEvent = {
  rule: 'scanner', source: 'web', incident: '7b0c5c3e-4d8e-4a57-9a41-1f1f5b0d2a10', state: 'fired', at: '2025-01-01T00:01:00.000Z',
  since: '2025-01-01T00:00:00.000Z', numbers: { requests: 100, s4xx: 90, minutes: 1 }, clients: [], thresholds: { clientErrors: 50 },
};

test('message builders: the routing keys, type strings and headers consumers and stored messages know', () => {
  assert.equal(logRoutingKey('web-1'), 'logs.web-1.access');
  assert.equal(readingRoutingKey('Mercedes Benz'), 'ev.reading.mercedes-benz');
  assert.equal(eventRoutingKey('charge.invalid_reading'), 'ev.event.invalid_reading');
  assert.equal(CLOCK_ROUTING_KEY, 'ev.clock');
  assert.equal(alertRoutingKey('error_rate'), 'logs.alert.error_rate');
  assert.equal(QUIET_ROUTING_KEY, 'ev.quiet');
  assert.deepEqual(MESSAGE_TYPES, { logLine: 'log.line', logBatch: 'log.batch', alert: 'log.alert', evReading: 'ev.reading', evClock: 'ev.clock', evQuiet: 'ev.quiet', evEvent: 'ev.event' });

  const r = readingMessage(reading, 1234);
  assert.deepEqual([r.exchange, r.routingKey, JSON.parse(r.content.toString())], ['ev', 'ev.reading.mercedes-benz', reading]);
  assert.deepEqual(r.options, { messageId: 'run-1:s-1:0', contentType: 'application/json', type: 'ev.reading', timestamp: 1234, headers: { sessionId: 's-1' } });
  const c = clockMessage({ runId: 'run-1', timestamp: reading.timestamp, final: false });
  assert.deepEqual([c.exchange, c.routingKey, c.options], ['ev', 'ev.clock', { messageId: `run-1:clock:${reading.timestamp}`, contentType: 'application/json', type: 'ev.clock' }]);
  const q = quietMessage({ runId: 'run-1', sessionId: 's-1', lastSeq: 41, timestamp: reading.timestamp });
  assert.deepEqual([q.exchange, q.routingKey, q.options], ['ev', 'ev.quiet', { messageId: 'run-1:quiet:s-1', contentType: 'application/json', type: 'ev.quiet', headers: { sessionId: 's-1' } }]);
  const e = eventMessage(event);
  assert.deepEqual([e.exchange, e.routingKey, e.options], ['ev', 'ev.event.soc_drop', { messageId: 'e-1', contentType: 'application/json', type: 'ev.event' }]);
  const a = alertMessage(alert);
  assert.deepEqual([a.exchange, a.routingKey, a.options], ['logs', 'logs.alert.scanner', { messageId: `${alert.incident}:fired`, contentType: 'application/json', type: 'log.alert' }]);
  assert.equal(logLineMessage({ runId: alert.incident, source: 'web', lineNo: 3, byteOffset: 10 }).type, 'log.line');
  assert.equal(LOGS_EXCHANGE, 'logs');
  assert.equal(EV_EXCHANGE, 'ev');
  // Contract names appear in dead-letter reasons.
  assert.deepEqual(
    [logLineContract.name, alertContract.name, evReadingContract.name, evClockContract.name, evQuietContract.name, evEventContract.name],
    ['log-line', 'log.alert', 'ev.reading', 'ev.clock', 'ev.quiet', 'ev.event'],
  );
});

test('topic permissions admit what each publisher builds, and nothing of the others', () => {
  const admits = (pattern: string, key: string) => new RegExp(pattern).test(key);
  const trigger = ACCESS.trigger.publishes;
  assert.deepEqual(Object.keys(trigger).sort(), ['ev', 'logs']);
  assert.ok(admits(trigger.logs!, logRoutingKey('web_1')));
  assert.ok(!admits(trigger.logs!, logRoutingKey('alert')), 'no source named alert');
  for (const rule of ALERT_RULES) assert.ok(!admits(trigger.logs!, alertRoutingKey(rule)));
  assert.ok(admits(trigger.ev!, readingMessage(reading).routingKey));
  assert.ok(admits(trigger.ev!, CLOCK_ROUTING_KEY));
  assert.ok(admits(trigger.ev!, quietMessage({ runId: 'r', sessionId: 's', lastSeq: 0, timestamp: reading.timestamp }).routingKey));
  for (const type of EV_EVENT_TYPES) {
    assert.ok(!admits(trigger.ev!, eventRoutingKey(type)), `the trigger may not publish ${type}`);
    assert.ok(admits(ACCESS['ev-analytics'].publishes.ev!, eventRoutingKey(type)), `ev-analytics publishes ${type}`);
  }
  assert.ok(!admits(ACCESS['ev-analytics'].publishes.ev!, readingRoutingKey('Kia')));
  assert.ok(!admits(ACCESS['ev-analytics'].publishes.ev!, CLOCK_ROUTING_KEY));
  assert.ok(!admits(ACCESS['ev-analytics'].publishes.ev!, QUIET_ROUTING_KEY));
  for (const rule of ALERT_RULES) assert.ok(admits(ACCESS['log-alerts'].publishes.logs!, alertRoutingKey(rule)), rule);
  assert.ok(!admits(ACCESS['log-alerts'].publishes.logs!, logRoutingKey('web')));
  assert.ok(!admits(ACCESS['log-alerts'].publishes.logs!, alertRoutingKey('other' as AlertEvent['rule'])));
  assert.deepEqual(Object.values(PUBLISHED_KEYS).sort(), [...new Set(Object.values(ACCESS).flatMap((a) => Object.values(a.publishes)))].sort());
});

test('consume() refuses a queue infra/topology.ts does not declare, before anything reaches the broker', () => {
  const contract = { name: 'x', decode: () => null };
  const handler = async () => {};
  for (const queue of ['logs.cleen', 'logs.clean.dlq', 'ev.analytics.p4', '']) {
    assert.throws(
      () => consume(queue, contract, handler),
      (err: Error) => err.message.includes(`'${queue}'`) && err.message.includes('infra/topology.ts') && err.message.includes('logs.clean,'),
      queue,
    );
  }
  for (const q of topology.queues) assert.equal(consume(q.name, contract, handler).queue, q.name);
  const other: Topology = { exchanges: [], queues: [{ name: 'only', bindings: [], retryDelayMs: 1 }] };
  assert.equal(declaredQueue('only', other).retryDelayMs, 1);
  assert.throws(() => declaredQueue('logs.clean', other), /cannot consume queue 'logs\.clean': infra\/topology\.ts does not declare it \(declared: only\)/);
});
