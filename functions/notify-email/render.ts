// Email bodies: a clear subject, a text body and an HTML body with the session's facts.
import type { EvEvent } from '../../shared/contracts/ev.ts';

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
