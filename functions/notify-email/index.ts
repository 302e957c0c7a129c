// notify-email: queues notify.email (EV events) and notify.alerts (web-log alerts) -> email_outbox -> SES.
import { Counter } from 'prom-client';
import { boot, consume, runQueueFunction } from '../../shared/runtime.ts';
import { evEventContract } from '../../shared/contracts/ev.ts';
import { alertContract } from '../../shared/contracts/alerts.ts';
import { ALERTS_QUEUE, QUEUE, configShape } from './config.ts';
import { createAlertHandler, createHandler } from './handler.ts';
import { createDispatcher } from './dispatcher.ts';
import { createOutbox } from './outbox.ts';
import { createSesSender } from './ses.ts';

const deps = await boot('notify-email', configShape);
const { config, log } = deps;
const outbox = createOutbox(deps.pool);
// 'unknown' rows need a person (README, "Emails whose fate is unknown"): alert on this counter.
const outboxOutcomes = new Counter({
  name: 'sluice_email_outbox_total',
  help: 'Outbox rows settled by the dispatcher, by outcome (sent, retry, failed, unknown)',
  labelNames: ['outcome'] as const,
  registers: [deps.metrics.registry],
});
const dispatcher = createDispatcher({
  store: outbox,
  sender: createSesSender({ region: config.AWS_REGION, endpoint: config.SES_ENDPOINT, from: config.SES_FROM, timeoutMs: config.SES_TIMEOUT_MS }),
  log,
  operatorAddress: config.ALERT_EMAIL,
  maxPerSecond: config.SES_MAX_PER_SECOND,
  maxAttempts: config.SES_MAX_ATTEMPTS,
  count: (outcome, rows) => outboxOutcomes.inc({ outcome }, rows),
});
dispatcher.start(config.OUTBOX_POLL_MS);
deps.onStop(() => dispatcher.stop());
await runQueueFunction(deps, [
  consume(QUEUE, evEventContract, createHandler({
    outbox,
    rules: config.EMAIL_RULES,
    operatorEmail: config.ALERT_EMAIL,
    groupWindowMs: config.GROUP_WINDOW_S * 1000,
    onEnqueued: () => dispatcher.wake(),
  })),
  consume(ALERTS_QUEUE, alertContract, createAlertHandler({ outbox, operatorEmail: config.ALERT_EMAIL, onEnqueued: () => dispatcher.wake() })),
]);
log.info({ ses: config.SES_ENDPOINT ?? 'AWS', rules: config.EMAIL_RULES }, 'notifying');
