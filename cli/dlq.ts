// `sluice dlq list|show|replay|purge`: the dead-letter routes of the API (functions/trigger/dlq.ts).
// replay and purge change the pipeline: on a terminal they ask first (unless --yes); without a
// terminal to ask on they refuse unless --yes (exit 2), so a script says what it means.
import { Command, Option } from 'commander';
import type { DeadLetter, DlqQueue } from '../functions/trigger/dlq.ts';
import { EXIT, UsageError, type ExitCode } from './errors.ts';
import { fmtBytes, fmtDuration, fmtInt, fmtTime, keyValues, table, truncate, type Paint } from './format.ts';
import type { Deps } from './program.ts';
import { intArg } from './program.ts';

export interface DlqPeekView extends DlqQueue {
  items: DeadLetter[];
}
export interface DlqReplayView {
  queue: string;
  source: string;
  replayed: number;
  remaining: number;
  via: string;
  arrivesAfterMs: number;
}
export interface DlqPurgeView {
  queue: string;
  source: string;
  purged: number;
}

const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

/** Text from the API (reasons, header values) shown on a terminal: control, format and separator characters escaped. */
export function printable(s: string): string {
  return s.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Co}\p{Cs}]/gu, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : `\\u{${c.codePointAt(0)!.toString(16)}}`));
}

export function dlqListView(queues: DlqQueue[], paint: Paint): string {
  const rows = queues.map((q) => [q.messages > 0 ? paint('yellow', q.queue) : q.queue, q.source, fmtInt(q.messages)]);
  const total = queues.reduce((n, q) => n + q.messages, 0);
  return (
    table([{ header: 'QUEUE' }, { header: 'SOURCE' }, { header: 'MESSAGES', align: 'right' }], rows, paint) +
    `\n${total === 0 ? 'no dead letters' : `${fmtInt(total)} dead letter${total === 1 ? '' : 's'}: sluice dlq show QUEUE`}\n`
  );
}

/** Headers worth a line: the message's own (those the runtime adds are shown as fields). */
const ownHeaders = (h: Record<string, unknown>) =>
  Object.entries(h).filter(([k]) => !k.startsWith('x-sluice-') && k !== 'x-death' && k !== 'x-delivery-count' && k !== 'x-acquired-count' && !k.startsWith('x-first-death') && !k.startsWith('x-last-death'));

export function dlqShowView(v: DlqPeekView, paint: Paint, width: number): string {
  const head = `${paint('bold', v.queue)} (from ${v.source}): ${fmtInt(v.messages)} message${v.messages === 1 ? '' : 's'}${v.items.length < v.messages ? `, the first ${fmtInt(v.items.length)} shown` : ''}\n`;
  if (v.items.length === 0) return `${head}\nempty\n`;
  const blocks = v.items.map((m, i) => {
    const pairs: [string, string][] = [
      ['reason', paint('red', truncate(printable(m.reason ?? '(none: not dead-lettered by the sluice runtime)'), width))],
      ['attempts', `${m.attempts === null ? '–' : fmtInt(m.attempts)} · retries through the retry queue ${fmtInt(m.deaths)}${m.replayed > 0 ? ` · replayed ${fmtInt(m.replayed)} time${m.replayed === 1 ? '' : 's'} before` : ''}`],
      ['routing', `${printable(m.routingKey)}${m.exchange ? ` (exchange ${printable(m.exchange)})` : ''}`],
      ['message', `${m.messageId ? printable(m.messageId) : '–'}${m.failedAt ? ` · failed ${fmtTime(m.failedAt)} UTC` : ''}`],
    ];
    const own = ownHeaders(m.headers);
    if (own.length > 0) pairs.push(['headers', truncate(own.map(([k, x]) => `${printable(k)}=${printable(typeof x === 'string' ? x : JSON.stringify(x))}`).join(' · '), width)]);
    pairs.push(['body', `${fmtBytes(m.size)}${m.truncated ? ', starts' : ''}: ${truncate(m.preview, width)}`]);
    return `${paint('dim', `#${i + 1}`)}\n${keyValues(pairs, paint).replace(/^(?=.)/gm, '  ')}`;
  });
  return `${head}\n${blocks.join('\n')}`;
}

export function addDlqCommands(program: Command, deps: Deps, setExit: (code: ExitCode) => void): void {
  const { io } = deps;
  const asJson = (cmd: Command) => (cmd.optsWithGlobals() as { json?: boolean }).json === true;

  /** Asks on the terminal, or refuses: true to go ahead. */
  async function confirm(what: string, yes: boolean | undefined, question: string): Promise<boolean> {
    if (yes) return true;
    if (!io.stdinTty || !io.ask) throw new UsageError(`${what} changes the pipeline and stdin is not a terminal to confirm on: add --yes`);
    const answer = (await io.ask(`${question} [y/N] `)).trim().toLowerCase();
    if (answer === 'y' || answer === 'yes') return true;
    io.err('nothing done\n');
    setExit(EXIT.failed);
    return false;
  }

  /** The queue as the API knows it, with its depth (a 404 names the known queues). */
  async function depthOf(queue: string): Promise<DlqPeekView> {
    return (await deps.api().get(`/v1/dlq/${encodeURIComponent(queue)}`, { limit: 1 })) as DlqPeekView;
  }

  const dlq = program
    .command('dlq')
    .description("dead letters: every queue's .dlq, where poison messages go with their reason (GET/POST /v1/dlq)");

  dlq
    .command('list')
    .description('every dead-letter queue, its source queue and its depth')
    .action(async (_opts: unknown, cmd: Command) => {
      const { queues } = (await deps.api().get('/v1/dlq')) as { queues: DlqQueue[] };
      io.out(asJson(cmd) ? json({ queues }) : dlqListView(queues, io.paint));
    });

  dlq
    .command('show')
    .description("the first messages of a dead-letter queue, left in it: reason, attempts, routing, headers, the body's first bytes")
    .argument('<queue>', 'a dead-letter queue (logs.clean.dlq) or its source queue (logs.clean)')
    .addOption(new Option('--limit <n>', 'how many').argParser(intArg(1, 1000)).default(10))
    .action(async (queue: string, opts: { limit: number }, cmd: Command) => {
      const view = (await deps.api().get(`/v1/dlq/${encodeURIComponent(queue)}`, { limit: opts.limit })) as DlqPeekView;
      io.out(asJson(cmd) ? json(view) : dlqShowView(view, io.paint, Math.max(40, io.columns() - 14)));
    });

  dlq
    .command('replay')
    .description('move dead letters back to their queue, each exactly once (through its retry queue), with a fresh set of attempts')
    .argument('<queue>', 'a dead-letter queue (logs.clean.dlq) or its source queue (logs.clean)')
    .option('--limit <n>', 'at most this many (default: all it holds now)', intArg(1, 10_000_000))
    .option('--yes', 'do not ask (needed when stdin is not a terminal)')
    .action(async (queue: string, opts: { limit?: number; yes?: boolean }, cmd: Command) => {
      if (!opts.yes) {
        const v = await depthOf(queue);
        if (v.messages === 0) return void io.out(asJson(cmd) ? json({ queue: v.queue, source: v.source, replayed: 0, remaining: 0 }) : `${v.queue} is empty: nothing to replay\n`);
        const n = Math.min(opts.limit ?? v.messages, v.messages);
        if (!(await confirm('replay', opts.yes, `Replay ${fmtInt(n)} message${n === 1 ? '' : 's'} of ${v.queue} back to ${v.source}?`))) return;
      }
      const { body } = (await deps.api().post(`/v1/dlq/${encodeURIComponent(queue)}/replay`, opts.limit !== undefined ? { limit: opts.limit } : {})) as { body: DlqReplayView };
      if (asJson(cmd)) return void io.out(json(body));
      io.out(
        `replayed ${fmtInt(body.replayed)} message${body.replayed === 1 ? '' : 's'} of ${body.queue} back to ${body.source} ` +
          `(through ${body.via}: they arrive in ${fmtDuration(body.arrivesAfterMs)}); ${fmtInt(body.remaining)} left in ${body.queue}\n`,
      );
    });

  dlq
    .command('purge')
    .description('drop every message of a dead-letter queue, for good')
    .argument('<queue>', 'a dead-letter queue (logs.clean.dlq) or its source queue (logs.clean)')
    .option('--yes', 'do not ask (needed when stdin is not a terminal)')
    .action(async (queue: string, opts: { yes?: boolean }, cmd: Command) => {
      if (!opts.yes) {
        const v = await depthOf(queue);
        if (!(await confirm('purge', opts.yes, `Drop all ${fmtInt(v.messages)} message${v.messages === 1 ? '' : 's'} of ${v.queue}, for good?`))) return;
      }
      const { body } = (await deps.api().post(`/v1/dlq/${encodeURIComponent(queue)}/purge`)) as { body: DlqPurgeView };
      io.out(asJson(cmd) ? json(body) : `purged ${body.queue}: ${fmtInt(body.purged)} message${body.purged === 1 ? '' : 's'} dropped\n`);
    });
}

