// log-alerts: the aggregates (log_stats_minute) and the follow runs -> alert events on exchange
// `logs` (logs.alert.<rule>) -> notify.alerts -> notify-email. A periodic evaluator, not a
// queue consumer (evaluator.ts); several instances are safe: decisions are taken under a row
// lock and published through an outbox that notify-email dedupes.
import type { AddressInfo } from 'node:net';
import { boot, serveHealth } from '../../shared/runtime.ts';
import { configShape } from './config.ts';
import { createEvaluator } from './evaluator.ts';
import { createAlertStore } from './store.ts';

const deps = await boot('log-alerts', configShape);
const { config, log } = deps;
const evaluator = createEvaluator({
  store: createAlertStore(deps.pool),
  publisher: deps.publisher,
  log,
  metrics: deps.metrics,
  config: {
    rules: config.ALERT_RULES,
    errorRatio: config.ALERT_ERROR_RATIO,
    errorMinRequests: config.ALERT_ERROR_MIN_REQUESTS,
    scanner4xx: config.ALERT_SCANNER_4XX,
    silentS: config.ALERT_SILENT_S,
    clearMinutes: config.ALERT_CLEAR_MINUTES,
    settleS: config.ALERT_SETTLE_S,
    topN: config.ALERT_TOP_N,
    slackS: config.ALERT_SLACK_S,
    // At least twice per silence threshold, at most every 5 s (reading the runs every poll is waste).
    silentEveryMs: Math.min(5_000, config.ALERT_SILENT_S * 500),
  },
});
// Registered first, so it runs after the evaluator stopped: nothing left to confirm.
deps.onStop(() => deps.publisher.flush());
evaluator.start(config.ALERT_POLL_MS);
deps.onStop(() => evaluator.stop());
// Ready while the broker is connected and passes succeed (a pass backs off to 10 s at most while failing).
const server = await serveHealth(deps, () => deps.amqp.connected && evaluator.healthy(Math.max(30_000, config.ALERT_POLL_MS * 5)));
log.info(
  {
    health: (server.address() as AddressInfo).port,
    rules: config.ALERT_RULES,
    thresholds: {
      errorRatio: config.ALERT_ERROR_RATIO, errorMinRequests: config.ALERT_ERROR_MIN_REQUESTS, scanner4xx: config.ALERT_SCANNER_4XX,
      silentS: config.ALERT_SILENT_S, clearMinutes: config.ALERT_CLEAR_MINUTES, settleS: config.ALERT_SETTLE_S,
    },
    uptimeMs: Math.round(process.uptime() * 1000),
  },
  'ready',
);
