// The commands: arguments in, one API call (or a watch) each, the answer out as text or JSON.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { Argument, Command, InvalidArgumentError, Option } from 'commander';
import type { Api, Query } from './client.ts';
import { ApiError, EXIT, UsageError, exitCodeOf, type ExitCode } from './errors.ts';
import { fmtBytes, fmtDuration, fmtInt, fmtRate, truncate, type Paint } from './format.ts';
import { bar, ENDED, etaMs, RateMeter, watchRun, type WatchIO } from './watch.ts';
import { describeRun, runDetails, runsTable, statsView, topView, type RunView, type StatsView, type TopView } from './views.ts';
import { addDlqCommands } from './dlq.ts';

/** GET /v1/stats/top's dimensions (functions/trigger/stats.ts DIMENSIONS; a unit test keeps them equal). */
export const DIMENSIONS = ['path', 'not_found', 'referrer', 'client_ip', 'user_agent'] as const;
export const BUCKETS = ['minute', 'hour', 'day'] as const;

export interface Io {
  /** stdout */
  out(s: string): void;
  /** stderr */
  err(s: string): void;
  stdoutTty: boolean;
  stderrTty: boolean;
  columns(): number;
  paint: Paint;
  /** stderr's painter (upload progress, errors). */
  paintErr: Paint;
  now(): number;
  sleep(ms: number): Promise<void>;
  /** stdin is a terminal: `dlq replay` and `dlq purge` may ask there (otherwise they need --yes). */
  stdinTty?: boolean;
  /** Asks a question on the terminal and returns the answer line. */
  ask?(question: string): Promise<string>;
}

export interface Deps {
  /** Made on first use, so that --help and usage errors need no API. */
  api: () => Api;
  io: Io;
  version?: string;
}

// Value parsers: a bad value is a usage error (exit 2), said the way commander says its own.
export function intArg(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\s*-?\d+\s*$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('must be a whole number.');
    if (n < min || n > max) throw new InvalidArgumentError(`must be between ${fmtInt(min)} and ${fmtInt(max)}.`);
    return n;
  };
}
export function numberArg(min: number, max: number, exclusiveMin = false) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('must be a number.');
    if ((exclusiveMin ? n <= min : n < min) || n > max) throw new InvalidArgumentError(`must be ${exclusiveMin ? 'more than' : 'at least'} ${min} and at most ${max}.`);
    return n;
  };
}
/** An instant for the API (ISO 8601 with an offset): "2015-05-17", "2015-05-17T10:05:00Z" or with +02:00; a time without offset is local time. */
export function instantArg(value: string): string {
  const t = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(t)) throw new InvalidArgumentError('must be a date or an ISO 8601 time, e.g. 2015-05-17 or 2015-05-17T10:05:00Z.');
  return new Date(t).toISOString();
}

const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

interface GlobalOpts {
  json?: boolean;
}

export function createProgram(deps: Deps): { program: Command; exitCode: () => ExitCode } {
  const { io } = deps;
  let exitCode: ExitCode = EXIT.ok;
  const program = new Command('sluice');
  program
    .description(
      'Drive and read sluice through its HTTP API.\n' +
        'SLUICE_URL: the trigger (default http://127.0.0.1:3000); SLUICE_TOKEN: its TRIGGER_TOKEN (default: TRIGGER_TOKEN, else the development token).',
    )
    .version(deps.version ?? '0.0.0', '-V, --version')
    .option('--json', "print the API's JSON as is, for scripts")
    .showSuggestionAfterError()
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s), outputError: (s, write) => write(io.paintErr('red', s)) })
    .exitOverride()
    .addHelpText(
      'after',
      '\nExit codes: 0 ok; 1 the API refused the request, or the watched run failed; 2 usage error; 3 the API cannot be reached.\nMore: docs/cli.md',
    );

  const globals = (cmd: Command): GlobalOpts => cmd.optsWithGlobals();

  function watchIo(): WatchIO {
    return { write: io.out, warn: (s) => io.err(`${s}\n`), tty: io.stdoutTty, columns: io.columns, paint: io.paint, now: io.now, sleep: io.sleep };
  }

  /** Watches a run and sets the exit code from how it ended. */
  async function watch(id: string, asJson: boolean, stored: boolean): Promise<void> {
    const run = await watchRun(deps.api(), id, watchIo(), { json: asJson, stored });
    exitCode = run.state === 'failed' ? EXIT.failed : EXIT.ok;
  }

  /** POST /v1/runs; prints the run (or watches it). */
  async function startRun(cmd: Command, body: Record<string, unknown>, watchIt: boolean, stored = false): Promise<void> {
    const g = globals(cmd);
    const { body: run } = (await deps.api().post('/v1/runs', body)) as { body: RunView };
    if (g.json) io.out(watchIt ? `${JSON.stringify(run)}\n` : json(run));
    else io.out(`started run ${io.paint('bold', run.id)} (${run.kind}: ${describeRun(run)}${run.source ? `, source ${run.source}` : ''})\n`);
    if (watchIt) await watch(run.id, g.json === true, stored);
    else if (!g.json) io.out(`follow it: sluice runs ${run.id} --watch\n`);
  }

  // ---- logs ----
  const logs = program.command('logs').description('replay, follow or upload web-server access logs');
  logs
    .command('replay')
    .description("publish a log file under the trigger's LOG_DIR, line by line (or follow it, like tail -F)")
    .argument('[file]', 'the file, relative to LOG_DIR')
    .option('--files <glob>', 'every file a glob under LOG_DIR matches (e.g. "nginx/*.log"), instead of FILE')
    .option('--source <name>', 'the source name (default: from the file name)')
    .option('--follow', 'keep following the file(s) after their end, through rotations, until `sluice runs stop ID`')
    .option('--no-alerts', 'raise no alerts for this run (sends "alerts": false)')
    .option('--framing <framing>', 'line (a message per line) or batch (many lines per message); default: the trigger\'s LOG_FRAMING')
    .option('--watch', 'then watch the run until it ends (see `sluice runs --help`)')
    .option('--stored', 'with --watch: then wait until the consumers stored every published line')
    .action(async (file: string | undefined, opts: { files?: string; source?: string; follow?: boolean; alerts: boolean; framing?: string; watch?: boolean; stored?: boolean }, cmd: Command) => {
      if (opts.stored && !opts.watch) throw new UsageError('--stored goes with --watch');
      if ((file === undefined) === (opts.files === undefined)) {
        throw new UsageError(file === undefined ? 'logs replay needs FILE (a file under LOG_DIR) or --files GLOB' : 'give FILE or --files GLOB, not both');
      }
      const body: Record<string, unknown> = { kind: 'logs', ...(file !== undefined ? { file } : { files: opts.files }) };
      if (opts.source !== undefined) body.source = opts.source;
      if (opts.follow) body.follow = true;
      if (!opts.alerts) body.alerts = false;
      if (opts.framing !== undefined) body.framing = framingOption(opts.framing);
      await startRun(cmd, body, opts.watch === true, opts.stored === true);
    });

  logs
    .command('upload')
    .description('stream a local log file to the API (POST /v1/logs): it is never read whole')
    .argument('<file>', 'a local file of newline-delimited log lines')
    .option('--source <name>', 'the source name', 'upload')
    .option('--no-alerts', 'raise no alerts for these lines (sends alerts=false)')
    .option('--framing <framing>', 'line (a message per line) or batch (many lines per message); default: the trigger\'s LOG_FRAMING')
    .action(async (file: string, opts: { source: string; alerts: boolean; framing?: string }, cmd: Command) => {
      const g = globals(cmd);
      const framing = opts.framing === undefined ? {} : { framing: framingOption(opts.framing) };
      const info = await stat(file).catch((err: NodeJS.ErrnoException) => {
        throw new UsageError(`cannot read ${file}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
      });
      if (!info.isFile()) throw new UsageError(`${file} is not a file`);
      const showProgress = io.stderrTty && !g.json;
      const meter = new RateMeter(5_000);
      const started = io.now();
      let lastDraw = 0;
      const draw = (sent: number, total: number, force = false) => {
        const now = io.now();
        meter.add(now, sent);
        if (!force && now - lastDraw < 100) return;
        lastDraw = now;
        const rate = meter.perSecond;
        const eta = etaMs(sent, total, rate);
        const line = `uploading ${path.basename(file)} ${bar(sent, total, 24)} ${fmtBytes(sent)}/${fmtBytes(total)}  ${Number.isFinite(rate) ? `${fmtBytes(rate)}/s` : ''}  ${Number.isFinite(eta) ? `ETA ${fmtDuration(eta)}` : ''}`;
        io.err(`\r\x1b[K${truncate(line.trimEnd(), io.columns() - 1)}`);
      };
      let result: { id: string; lines: number };
      try {
        result = (await deps.api().upload('/v1/logs', file, { source: opts.source, ...(opts.alerts ? {} : { alerts: 'false' }), ...framing }, showProgress ? ({ sent, total }) => draw(sent, total) : undefined)) as { id: string; lines: number };
      } finally {
        if (showProgress) io.err('\r\x1b[K');
      }
      if (g.json) return io.out(json(result));
      const took = io.now() - started;
      io.out(
        `uploaded ${file} (${fmtBytes(info.size)}): ${fmtInt(result.lines)} lines published as run ${io.paint('bold', result.id)}, source ${opts.source}, in ${fmtDuration(took)} (${fmtRate((result.lines / Math.max(took, 1)) * 1000)})\n`,
      );
    });

  // ---- ev ----
  const ev = program.command('ev').description('EV charging simulation');
  ev.command('run')
    .description('simulate charging sessions and publish their readings (POST /v1/runs, kind "ev")')
    .requiredOption('--sessions <n>', 'charging sessions to simulate (1-100,000)', intArg(1, 100_000))
    .option('--seed <s>', 'seed of the simulation: the same seed plays the same sessions (default: random)', intArg(0, 2 ** 32 - 1))
    .option('--speed <x>', 'simulated seconds per real second (API default 3600)', numberArg(0, 1e9, true))
    .option('--fault-rate <f>', 'share of sessions given a fault, 0-1 (API default 0)', numberArg(0, 1))
    .option('--sample-interval <s>', 'seconds between readings of a session (API default 30)', intArg(1, 3600))
    .option('--watch', 'then watch the run until it ends')
    .action(async (opts: { sessions: number; seed?: number; speed?: number; faultRate?: number; sampleInterval?: number; watch?: boolean }, cmd: Command) => {
      const body: Record<string, unknown> = { kind: 'ev', sessions: opts.sessions };
      if (opts.seed !== undefined) body.seed = opts.seed;
      if (opts.speed !== undefined) body.speed = opts.speed;
      if (opts.faultRate !== undefined) body.faultRate = opts.faultRate;
      if (opts.sampleInterval !== undefined) body.sampleIntervalS = opts.sampleInterval;
      await startRun(cmd, body, opts.watch === true);
    });

  // ---- runs ----
  const runs = program
    .command('runs')
    .description('recent runs; with ID, that run; with --watch, follow it until it ends')
    .argument('[id]', 'a run id')
    .option('--watch', 'follow the run until it ends: exit 0 when it ends done or stopped, 1 when it fails')
    .option('--stored', 'with --watch, for a log run: then wait until the consumers stored every published line')
    .addOption(new Option('--limit <n>', 'how many runs to list').argParser(intArg(1, 500)).default(20))
    .action(async (id: string | undefined, opts: { watch?: boolean; stored?: boolean; limit: number }, cmd: Command) => {
      const g = globals(cmd);
      if (id === undefined) {
        if (opts.watch || opts.stored) throw new UsageError('--watch and --stored need a run ID: sluice runs ID --watch');
        const { runs: list } = (await deps.api().get('/v1/runs', { limit: opts.limit })) as { runs: RunView[] };
        return io.out(g.json ? json({ runs: list }) : runsTable(list, io.paint, io.now()));
      }
      if (opts.stored && !opts.watch) throw new UsageError('--stored goes with --watch');
      if (opts.watch) return watch(id, g.json === true, opts.stored === true);
      const run = (await deps.api().get(`/v1/runs/${encodeURIComponent(id)}`)) as RunView;
      io.out(g.json ? json(run) : runDetails(run, io.paint, io.now()));
    });
  runs
    .command('stop')
    .description('stop a running run (a follow, a replay, an EV run); its checkpoint is kept')
    .argument('<id>', 'the run id')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const { status, body } = (await deps.api().post(`/v1/runs/${encodeURIComponent(id)}/stop`)) as { status: number; body: RunView };
      if (g.json) return io.out(json(body));
      if (status === 202 || !ENDED.has(body.state)) io.out(`stop requested: run ${id} is ${body.state} (another trigger executes it and stops it at its next progress save)\n`);
      else io.out(`run ${id} ${body.state}: ${fmtInt(body.published)} ${body.kind === 'ev' ? 'messages' : 'lines'} published\n`);
    });

  // ---- stats, top ----
  const rangeOptions = (cmd: Command) =>
    cmd
      .option('--source <name>', 'one source (default: all)')
      .option('--from <time>', 'start, ISO 8601 (default: an hour before --to)', instantArg)
      .option('--to <time>', 'end, ISO 8601 (default: now)', instantArg);

  rangeOptions(program.command('stats').description('requests, visitors, bytes and status classes over time (GET /v1/stats)'))
    .addOption(new Option('--bucket <size>', 'one point per').choices(BUCKETS).default('minute'))
    .action(async (opts: { source?: string; from?: string; to?: string; bucket: string }, cmd: Command) => {
      const query: Query = { source: opts.source, from: opts.from, to: opts.to, bucket: opts.bucket };
      const stats = (await deps.api().get('/v1/stats', query)) as StatsView;
      io.out(globals(cmd).json ? json(stats) : statsView(stats, io.paint));
    });

  rangeOptions(
    program
      .command('top')
      .description('the most requested values of a dimension, by requests (GET /v1/stats/top)')
      .addArgument(new Argument('<dimension>', 'what to rank').choices(DIMENSIONS)),
  )
    .addOption(new Option('--limit <n>', 'how many').argParser(intArg(1, 1000)).default(10))
    .action(async (dimension: string, opts: { source?: string; from?: string; to?: string; limit: number }, cmd: Command) => {
      const query: Query = { dimension, source: opts.source, from: opts.from, to: opts.to, limit: opts.limit };
      const top = (await deps.api().get('/v1/stats/top', query)) as TopView;
      io.out(globals(cmd).json ? json(top) : topView(top, io.paint, Math.max(30, io.columns() - 40)));
    });

  // ---- dlq ----
  addDlqCommands(program, deps, (code) => void (exitCode = code));

  return { program, exitCode: () => exitCode };
}

/** Runs one command line; returns the exit code (never exits the process). */
export async function run(argv: string[], deps: Deps): Promise<ExitCode> {
  const { program, exitCode } = createProgram(deps);
  const { io } = deps;
  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode();
  } catch (err) {
    const e = err as { code?: unknown };
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) {
      // Help and version asked for are not errors; anything else commander refuses (help shown for a
      // missing command included) is a usage error, and commander has printed why.
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return EXIT.ok;
      if (e.code !== 'commander.help') io.err('(sluice --help for usage)\n');
      return EXIT.usage;
    }
    if (err instanceof UsageError) {
      io.err(`${io.paintErr('red', `error: ${err.message}`)}\n(sluice --help for usage)\n`);
      return EXIT.usage;
    }
    // The API's refusal (its own message), an unreachable API (what to check), or a local failure: no stack.
    const status = err instanceof ApiError ? ` (HTTP ${err.status})` : '';
    io.err(`${io.paintErr('red', `sluice: ${err instanceof Error ? err.message : String(err)}`)}${status}\n`);
    return exitCodeOf(err);
  }
}

/** --framing: line or batch. */
function framingOption(value: string): 'line' | 'batch' {
  if (value !== 'line' && value !== 'batch') throw new UsageError(`--framing must be line or batch, not ${JSON.stringify(value)}`);
  return value;
}
