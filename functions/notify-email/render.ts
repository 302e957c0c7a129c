// Email bodies: a clear subject, a text body and an HTML body with the session's facts.
import type { EvEvent } from '../../shared/contracts/ev.ts';
import type { AlertEvent } from '../../shared/contracts/alerts.ts';

export interface Email {
  to: string;
  subject: string;
  text: string;
  html: string;
}

const TITLE: Record<EvEvent['type'], string> = {
  'charge.started': 'Charging started',
  'charge.completed': 'Charging complete',
  'charge.fault': 'Charger fault',
  'charge.stalled': 'Charging stalled',
  'charge.soc_drop': 'Battery level dropped while charging',
  'charge.over_limit': 'Charged past the limit',
  'charge.offline': 'Charger offline',
  'charge.invalid_reading': 'Invalid charger reading',
};

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const pct = (v: number | null) => (v === null ? 'unknown' : `${v} %`);
const kwh = (wh: number | null) => (wh === null ? 'unknown' : `${(wh / 1000).toFixed(1)} kWh`);

function facts(e: EvEvent): [string, string][] {
  return [
    ['Event', `${e.type} (${e.severity})`],
    ['When', e.ts],
    ['Vehicle', `${e.vehicle.make} ${e.vehicle.model} (VIN ${e.vehicle.vin})`],
    ['Charge point', `${e.chargePointId}${e.location ? `, ${e.location}` : ''}`],
    ['Charger', `${e.charger.type} ${e.charger.maxKW} kW`],
    ['Battery', `${pct(e.socPercent)} (limit ${pct(e.chargeLimitPercent)})`],
    ['Energy delivered', kwh(e.energyWh)],
    ['Session', e.sessionId],
    ['Reference', e.eventId],
  ];
}

const textBlock = (e: EvEvent) => [e.summary, '', ...facts(e).map(([k, v]) => `${k}: ${v}`)].join('\n');
const htmlBlock = (e: EvEvent) =>
  `<h3>${escapeHtml(TITLE[e.type])}</h3><p>${escapeHtml(e.summary)}</p><table>${facts(e)
    .map(([k, v]) => `<tr><th align="left">${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`)
    .join('')}</table>`;

/** To the vehicle's owner: one event, one email. */
export function ownerEmail(e: EvEvent): Email {
  return {
    to: e.owner.email,
    subject: `${TITLE[e.type]}: your ${e.vehicle.make} ${e.vehicle.model} at ${e.chargePointId} (${pct(e.socPercent)})`,
    text: `Hello ${e.owner.name},\n\n${textBlock(e)}\n\n-- sluice charging alerts`,
    html: `<p>Hello ${escapeHtml(e.owner.name)},</p>${htmlBlock(e)}<p>-- sluice charging alerts</p>`,
  };
}

/** To the operator: every alert of one charge point in the group window, in one email. */
export function operatorEmail(to: string, events: EvEvent[]): Email {
  const first = events[0]!;
  const critical = events.some((e) => e.severity === 'critical');
  const types = [...new Set(events.map((e) => e.type))].join(', ');
  return {
    to,
    subject: `${critical ? '[CRITICAL] ' : ''}${events.length} alert${events.length > 1 ? 's' : ''} at ${first.chargePointId}: ${types}`,
    text: `${events.length} alert(s) at charge point ${first.chargePointId}:\n\n${events.map(textBlock).join('\n\n----\n\n')}\n`,
    html: `<p>${events.length} alert(s) at charge point <b>${escapeHtml(first.chargePointId)}</b>:</p>${events.map(htmlBlock).join('<hr>')}`,
  };
}

// --- web-log alerts ------------------------------------------------------------------------
// Paths and client addresses come from the log: hostile input. They are shown with every
// control, format (bidi overrides, zero-width) and separator character escaped, cut to a
// bounded length, and HTML-escaped in the HTML part; the subject carries only the source
// (a validated name), numbers and a cleaned, short client address.

/** `s` with invisible and control characters written as \u{..}, cut to `max` characters. */
export function printable(s: string, max = 200): string {
  const shown = s.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Co}\p{Cs}]/gu, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
  if (shown.length <= max) return shown;
  const cutAt = /[\ud800-\udbff]/.test(shown[max - 2] ?? '') ? max - 2 : max - 1;
  return `${shown.slice(0, cutAt)}…`;
}

const RULE_TITLE: Record<AlertEvent['rule'], string> = {
  error_rate: '5xx error rate',
  scanner: 'scanner (many 4xx from one client)',
  silent: 'followed log silent',
};

const percent = (ratio: number) => `${(ratio * 100).toFixed(1)} %`;
const fmt = (n: number) => n.toLocaleString('en-US');
/** "2024-10-10 13:55 UTC" */
const minuteOf = (isoTime: string) => `${isoTime.slice(0, 10)} ${isoTime.slice(11, 16)} UTC`;
const duration = (s: number) => (s >= 120 ? `${Math.round(s / 60)} min` : `${Math.round(s)} s`);

interface AlertBody {
  subject: string;
  lead: string;
  facts: [string, string][];
  /** Titled lists of [count, value] (values from the log). */
  lists: { title: string; rows: [string, string][] }[];
}

function alertBody(e: AlertEvent): AlertBody {
  const fired = e.state === 'fired';
  const tag = fired ? '[ALERT]' : '[RESOLVED]';
  const common: [string, string][] = [
    ['Rule', `${e.rule} (${RULE_TITLE[e.rule]})`],
    ['Source', e.source],
    ['State', e.state],
  ];
  const tail: [string, string][] = [['Incident', e.incident]];
  if (e.rule === 'error_rate') {
    const n = e.numbers;
    const t = e.thresholds;
    const rule = `more than ${percent(t.ratio)} of a minute's requests answered 5xx, with at least ${fmt(t.minRequests)} requests`;
    return fired
      ? {
          subject: `${tag} ${e.source}: ${percent(n.ratio)} 5xx (${fmt(n.s5xx)} of ${fmt(n.requests)} requests) in the minute ${minuteOf(e.at)}`,
          lead: `Source ${e.source} answered ${fmt(n.s5xx)} of ${fmt(n.requests)} requests with 5xx (${percent(n.ratio)}) in the minute of ${minuteOf(e.at)} (the log's own time). Threshold: ${rule}.`,
          facts: [...common, ['Minute', e.at], ['Requests', fmt(n.requests)], ['5xx answers', `${fmt(n.s5xx)} (${percent(n.ratio)})`], ['Threshold', rule], ...tail],
          lists: [{ title: 'Top paths answered 5xx in that minute', rows: e.topPaths.map((p) => [fmt(p.count), p.path]) }],
        }
      : {
          subject: `${tag} ${e.source}: 5xx rate back to normal since ${minuteOf(e.until ?? e.at)} (${n.minutes} minute${n.minutes > 1 ? 's' : ''} over the threshold)`,
          lead: `The 5xx incident of source ${e.source} that began at ${minuteOf(e.since)} is over: the minutes after ${minuteOf(e.until ?? e.at)} were clean (event time ${e.at}).`,
          facts: [
            ...common, ['Began', e.since], ['Last bad minute ended', e.until ?? ''], ['Resolved at', e.at], ['Minutes over the threshold', fmt(n.minutes)],
            ['Requests in those minutes', fmt(n.requests)], ['5xx answers in those minutes', `${fmt(n.s5xx)} (${percent(n.ratio)})`], ['Threshold', rule], ...tail,
          ],
          lists: [],
        };
  }
  if (e.rule === 'scanner') {
    const n = e.numbers;
    const rule = `one client with more than ${fmt(e.thresholds.clientErrors)} 4xx answers in a minute`;
    const top = e.clients[0];
    return fired
      ? {
          subject: `${tag} ${e.source}: scanner ${top ? `${printable(top.clientIp, 46)} with ${fmt(top.count)} 4xx answers` : ''} in the minute ${minuteOf(e.at)}`,
          lead: `${e.clients.length} client${e.clients.length === 1 ? '' : 's'} of source ${e.source} got more than ${fmt(e.thresholds.clientErrors)} 4xx answers in the minute of ${minuteOf(e.at)} (the log's own time).`,
          facts: [...common, ['Minute', e.at], ['Requests', fmt(n.requests)], ['4xx answers', fmt(n.s4xx)], ['Threshold', rule], ...tail],
          lists: e.clients.map((c) => ({ title: `Client ${printable(c.clientIp, 100)}: ${fmt(c.count)} 4xx answers; its top paths`, rows: c.paths.map((p) => [fmt(p.count), p.path]) })),
        }
      : {
          subject: `${tag} ${e.source}: scanner gone since ${minuteOf(e.until ?? e.at)} (${n.minutes} minute${n.minutes > 1 ? 's' : ''} over the threshold)`,
          lead: `The scanner incident of source ${e.source} that began at ${minuteOf(e.since)} is over: no client went over the threshold in the minutes after ${minuteOf(e.until ?? e.at)}.`,
          facts: [...common, ['Began', e.since], ['Last bad minute ended', e.until ?? ''], ['Resolved at', e.at], ['Minutes over the threshold', fmt(n.minutes)], ['4xx answers in those minutes', fmt(n.s4xx)], ['Threshold', rule], ...tail],
          lists: [],
        };
  }
  const n = e.numbers;
  const rule = `no new line for ${duration(e.thresholds.silentS)} from a followed source`;
  return fired
    ? {
        subject: `${tag} ${e.source}: no new log line for ${duration(n.silentForS)}`,
        lead: `The followed source ${e.source} has published no new line since ${e.since} (${duration(n.silentForS)}, wall clock).`,
        facts: [...common, ['Last line', e.since], ['Checked at', e.at], ['Lines published so far', fmt(n.published)], ['Follow runs', `${fmt(n.runs)}: ${e.runIds.join(', ')}`], ['Threshold', rule], ...tail],
        lists: [],
      }
    : {
        subject: `${tag} ${e.source}: ${e.reason === 'stopped' ? 'no longer followed' : 'log lines flow again'} (silent for ${duration(n.silentForS)})`,
        lead: e.reason === 'stopped'
          ? `The source ${e.source}, silent since ${e.since}, is no longer followed (its follow runs ended).`
          : `The followed source ${e.source}, silent since ${e.since}, publishes lines again.`,
        facts: [...common, ['Silent since', e.since], ['Resolved at', e.at], ['Silent for', duration(n.silentForS)], ['Lines published so far', fmt(n.published)], ['Threshold', rule], ...tail],
        lists: [],
      };
}

/** One web-log alert, one email to the operator. */
export function alertEmail(to: string, e: AlertEvent): Email {
  const b = alertBody(e);
  const text = [
    b.lead,
    '',
    ...b.facts.map(([k, v]) => `${k}: ${v}`),
    ...b.lists.flatMap((l) => ['', `${l.title}:`, ...(l.rows.length ? l.rows.map(([n, v]) => `  ${n.padStart(7)}  ${printable(v)}`) : ['  (none)'])]),
    '',
    e.state === 'fired' ? 'You get one more email when it resolves.' : 'This incident is closed.',
    '-- sluice web-log alerts',
  ].join('\n');
  const html =
    `<p>${escapeHtml(b.lead)}</p><table>${b.facts.map(([k, v]) => `<tr><th align="left">${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table>` +
    b.lists
      .map((l) => `<h4>${escapeHtml(l.title)}</h4>${l.rows.length ? `<table>${l.rows.map(([n, v]) => `<tr><td align="right">${escapeHtml(n)}</td><td><code>${escapeHtml(printable(v))}</code></td></tr>`).join('')}</table>` : '<p>(none)</p>'}`)
      .join('') +
    `<p>${e.state === 'fired' ? 'You get one more email when it resolves.' : 'This incident is closed.'}</p><p>-- sluice web-log alerts</p>`;
  return { to, subject: printable(b.subject, 200), text, html };
}
