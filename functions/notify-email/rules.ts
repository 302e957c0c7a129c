// Routing rules: which event types are mailed to whom. Configuration, not code:
// EMAIL_RULES="charge.completed=owner,charge.fault=owner+operator,...".
import { EV_EVENT_TYPES, type EvEventType } from '../../shared/contracts/ev.ts';

export type Role = 'owner' | 'operator';
export type Rules = Partial<Record<EvEventType, Role[]>>;

export const DEFAULT_RULES = [
  'charge.completed=owner',
  'charge.fault=owner+operator',
  'charge.offline=owner+operator',
  'charge.stalled=owner+operator',
  'charge.soc_drop=operator',
  'charge.over_limit=operator',
  'charge.invalid_reading=operator',
].join(',');

export function parseRules(text: string): Rules {
  const rules: Rules = {};
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [type, roles = ''] = part.split('=').map((s) => s.trim());
    if (!(EV_EVENT_TYPES as readonly string[]).includes(type!)) throw new Error(`unknown event type '${type}' (known: ${EV_EVENT_TYPES.join(', ')})`);
    const list = roles.split('+').filter(Boolean);
    for (const r of list) if (r !== 'owner' && r !== 'operator') throw new Error(`unknown recipient '${r}' for ${type} (owner or operator)`);
    rules[type as EvEventType] = list as Role[];
  }
  return rules;
}
