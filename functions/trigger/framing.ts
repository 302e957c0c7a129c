// How a log run's lines become messages. Line framing: one message per line (the line message
// of shared/contracts/logs.ts). Batch framing: consecutive lines of one file packed into one
// message, up to `maxLines` lines or `maxBytes` of body, and held at most `lingerMs` after the
// first of them was read, so a followed log is never held back; the batch message names its
// first line number and each line's byte offset, and the consumers store it line by line under
// the same keys. Either way the runner's checkpoint is per message: a batch message's position
// is its first line's, so a resumed run publishes the whole message again (keyed writes: no-ops).
import { LOGS_EXCHANGE, LOG_BATCH_ENTRY_BYTES, encodeLogBatch, logBatchMessage, logLineMessage, logRoutingKey } from '../../shared/contracts/logs.ts';
import type { Position, RunPublisher } from './runner.ts';

export const FRAMINGS = ['line', 'batch'] as const;
export type Framing = (typeof FRAMINGS)[number];

export interface FramingOptions {
  framing: Framing;
  /** Batch framing: lines in one message at most (FRAMING_BATCH_LINES). */
  maxLines: number;
  /** Batch framing: bytes of body in one message at most, unless one line alone is longer (FRAMING_BATCH_BYTES). */
  maxBytes: number;
  /** Batch framing: how long a line may wait for more before its message goes out (FRAMING_LINGER_MS). */
  lingerMs: number;
}

/** The trigger's framing settings: the framing of runs that name none, and the limits of batch framing. */
export interface FramingSettings extends Omit<FramingOptions, 'framing'> {
  default: Framing;
}

/** A run's framing options: its own choice, else the default. */
export const framingFor = (settings: FramingSettings | undefined, chosen?: Framing): FramingOptions => {
  const { default: fallback, ...limits } = settings ?? { default: 'line' as const, ...BATCH_LIMITS };
  return { framing: chosen ?? fallback, ...limits };
};

/**
 * Limits of batch framing when none are configured (the trigger's config has the same defaults).
 * 64 KiB of body: the log consumers hold up to their prefetch (256 messages) of bodies, 16 MiB
 * of these; 256 KiB messages made it 64 MiB and were no faster (docs/benchmarks.md).
 */
export const BATCH_LIMITS = { maxLines: 1_000, maxBytes: 64 * 1024, lingerMs: 50 } as const;
export const LINE_FRAMING: FramingOptions = { framing: 'line', ...BATCH_LIMITS };

/** What a log run records of its framing in its params: nothing for line framing (runs from before the option), `framing` otherwise. */
export const framingParams = (framing: Framing): { framing?: Framing } => (framing === 'line' ? {} : { framing });

/** The framing a run recorded in its params (a resumed run keeps it). */
export const framingOf = (params: Record<string, unknown> | null | undefined): Framing => (params?.framing === 'batch' ? 'batch' : 'line');

export interface FramedLine {
  line: Buffer;
  lineNo: number;
  byteOffset: number;
  truncatedFrom?: number | undefined;
}

/**
 * Publishes a run's lines in its framing. add() lines in order (awaiting each: it waits when the
 * runner's window is full), flush() at the end; close() always. A message holds lines of one file
 * name, numbered consecutively, each starting after the previous one ends (a rotated file's successor
 * under the same name starts again at 0: a new message).
 */
export class LineFramer {
  private readonly routingKey: string;
  private pending: FramedLine[] = [];
  private pendingBytes = 0;
  private pendingFile: string | undefined;
  /** The lines of the message being handed to the runner (until it has them). */
  private sending: FramedLine[] | null = null;
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<void> = Promise.resolve();
  private failure: unknown = null;

  private readonly out: RunPublisher;
  private readonly meta: { runId: string; source: string; alerts?: boolean | undefined };
  private readonly opts: FramingOptions;

  constructor(out: RunPublisher, meta: { runId: string; source: string; alerts?: boolean | undefined }, opts: FramingOptions = LINE_FRAMING) {
    this.out = out;
    this.meta = meta;
    this.opts = opts;
    this.routingKey = logRoutingKey(meta.source);
  }

  /**
   * Where the first line given to add() and not yet to the runner starts (null: none). A
   * checkpoint must not pass it: the runner does not know these lines yet.
   */
  get firstPending(): Position | null {
    const l = this.sending?.[0] ?? this.pending[0];
    return l ? { item: l.lineNo - 1, offset: l.byteOffset } : null;
  }

  async add(l: FramedLine, file?: string): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.opts.framing === 'line') {
      const { runId, source } = this.meta;
      const alerts = this.meta.alerts === false ? false : undefined;
      const options = logLineMessage({ runId, source, lineNo: l.lineNo, byteOffset: l.byteOffset, file, truncatedFrom: l.truncatedFrom, alerts });
      return this.out.publish(LOGS_EXCHANGE, this.routingKey, l.line, options, { item: l.lineNo - 1, offset: l.byteOffset });
    }
    const size = l.line.length + LOG_BATCH_ENTRY_BYTES;
    const last = this.pending.at(-1);
    if (last && (file !== this.pendingFile || l.lineNo !== last.lineNo + 1 || !startsAfter(l, last) || this.pendingBytes + size > this.opts.maxBytes)) await this.flush();
    if (this.pending.length === 0) {
      this.pendingFile = file;
      this.timer ??= setTimeout(() => {
        this.timer = null;
        this.flush().catch(() => {}); // kept in `failure`, thrown by the next add() or flush()
      }, this.opts.lingerMs);
    }
    this.pending.push(l);
    this.pendingBytes += size;
    if (this.pending.length >= this.opts.maxLines || this.pendingBytes >= this.opts.maxBytes) await this.flush();
  }

  /** Publishes the lines held (batch framing); resolves once the runner has them. */
  flush(): Promise<void> {
    const p = this.chain.then(() => this.send());
    this.chain = p.catch((err) => void (this.failure ??= err));
    return p;
  }

  /** Stops the linger timer: lines still held are not published (the checkpoint is before them). */
  close(): void {
    if (this.timer) clearTimeout(this.timer), (this.timer = null);
  }

  private async send(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.timer) clearTimeout(this.timer), (this.timer = null);
    if (this.pending.length === 0) return;
    const lines = (this.sending = this.pending);
    const file = this.pendingFile;
    this.pending = [];
    this.pendingBytes = 0;
    try {
      const first = lines[0]!;
      const { runId, source } = this.meta;
      const options = logBatchMessage({ runId, source, file, alerts: this.meta.alerts === false ? false : undefined }, first.lineNo, lines.length);
      await this.out.publish(LOGS_EXCHANGE, this.routingKey, encodeLogBatch(lines), options, { item: first.lineNo - 1, offset: first.byteOffset }, lines.length);
    } finally {
      this.sending = null;
    }
  }
}

/** `l` starts after `prev` ends in the file: what a batch message requires of consecutive lines (decodeLogBatch). */
const startsAfter = (l: FramedLine, prev: FramedLine) => l.byteOffset > prev.byteOffset + (prev.truncatedFrom ?? prev.line.length);
