// npm start's logs. Every function writes JSON lines (pino, shared/log.ts); this turns them
// into what a person reads on a terminal, and keeps all of them, combined, in one file:
//   - terminal (stdout is a TTY, and not --json): one line per record, time, function, level
//     and message in colour, then the record's other fields (pino-pretty);
//   - otherwise (piped, or --json, or SLUICE_LOG_FORMAT=json): the JSON line itself, with a
//     `fn` field naming the process it came from, for jq and log shippers;
//   - the file: always the JSON lines with `fn`, every process interleaved in arrival order.
// A line that is not JSON (a crash's stack trace) is passed on as it is, with its function.
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import { styleText } from 'node:util';
import { prettyFactory } from 'pino-pretty';

export interface LogSink {
  /** The combined log file (JSON lines). */
  readonly file: string;
  /** One line a process wrote, on its stdout or stderr. */
  line(fn: string, colour: Colour, text: string): void;
  close(): Promise<void>;
}

export type Colour = 'cyan' | 'yellow' | 'magenta' | 'green' | 'blue' | 'redBright' | 'greenBright' | 'yellowBright' | 'blueBright' | 'magentaBright';
export const COLOURS: readonly Colour[] = ['cyan', 'yellow', 'magenta', 'green', 'blue', 'redBright', 'greenBright', 'yellowBright', 'blueBright', 'magentaBright'];

/** `pretty`: human lines (a terminal); `colour`: with ANSI colours (a terminal that wants them). */
export function createLogSink(opts: { dir: string; pretty: boolean; colour: boolean; out?: (s: string) => void; now?: Date }): LogSink {
  mkdirSync(opts.dir, { recursive: true });
  const stamp = (opts.now ?? new Date()).toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const file = path.join(opts.dir, `sluice-${stamp}.log`);
  const stream: WriteStream = createWriteStream(file, { flags: 'a' });
  const out = opts.out ?? ((s: string) => void process.stdout.write(s));
  const pretty = prettyFactory({
    colorize: opts.colour,
    translateTime: 'SYS:HH:MM:ss.l',
    // The function is in the label; pid and hostname are the same for every line of a process.
    ignore: 'pid,hostname,name,fn',
    singleLine: true,
  });
  const label = (fn: string, colour: Colour) => {
    const padded = fn.padEnd(16);
    return opts.colour ? styleText(colour, padded) : padded;
  };
  return {
    file,
    line(fn, colour, text) {
      let record: Record<string, unknown> | null = null;
      if (text.startsWith('{')) {
        try {
          const parsed: unknown = JSON.parse(text);
          if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) record = parsed as Record<string, unknown>;
        } catch {
          record = null;
        }
      }
      const json = record ? JSON.stringify({ fn, ...record }) : JSON.stringify({ fn, level: 30, time: Date.now(), msg: text, raw: true });
      stream.write(`${json}\n`);
      if (!opts.pretty) return out(`${json}\n`);
      out(`${label(fn, colour)} ${record ? pretty(record).trimEnd() : text}\n`);
    },
    close: () => new Promise((resolve) => stream.end(resolve)),
  };
}
