// npm start: the whole system on this machine, no containers.
//   1. RabbitMQ and MariaDB: started when installed but not running, installed from Debian's
//      packages when missing and we are root (scripts/services.sh); otherwise what is missing is named.
//   2. The SES emulator (aws-ses-v2-local) when nothing answers on SES_ENDPOINT.
//   3. npm run build, then the privileged migrate step (schema, topology, one MySQL and
//      one RabbitMQ user per function, infra/access.ts), then every function as its own
//      process from its bundle, with its own credentials, logs prefixed by function; a
//      crashed function is restarted, as a container would be. Node's compile cache of the
//      bundles is .sluice/compile-cache/ (NODE_COMPILE_CACHE names another).
//   4. Ctrl+C (or SIGTERM) stops every function gracefully.
// Logs: readable and coloured on a terminal, JSON lines when piped or with --json (or
// SLUICE_LOG_FORMAT=json); every function's, combined, also in .sluice/logs/sluice-<time>.log
// (scripts/start-logs.ts).
// Options: --scale <fn>=<n> (repeatable), --only <fn>[,<fn>...], --json
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { ensureSesEmulator } from './ses-emulator.ts';
import { COLOURS, createLogSink } from './start-logs.ts';
import { functionUrls, localAdmin, localPasswords, monitorApiUrl, operatorAmqpUrl } from './local-env.ts';
import type { FunctionName } from '../infra/access.ts';
import { MALLOC_ENV, nodeFlags } from '../infra/node-options.ts';

const root = path.resolve(import.meta.dirname, '..');
const functions = readdirSync(path.join(root, 'functions')).filter((f) => existsSync(path.join(root, 'functions', f, 'index.ts'))).sort();

function usage(problem: string): never {
  console.error(`start: ${problem}\nusage: npm start -- [--scale <fn>=<n>]... [--only <fn>[,<fn>...]] [--json]\nfunctions: ${functions.join(', ')}`);
  process.exit(2);
}

const scale = new Map(functions.map((f) => [f, 1]));
const args = process.argv.slice(2);
let json = process.env.SLUICE_LOG_FORMAT === 'json' || !process.stdout.isTTY;
for (let i = 0; i < args.length; i++) {
  const arg = args[i]!;
  if (arg === '--json') {
    json = true;
    continue;
  }
  const value = arg.includes('=') && arg.startsWith('--') ? arg.slice(arg.indexOf('=') + 1) : args[++i];
  const flag = arg.split('=')[0];
  if (flag === '--scale') {
    const m = /^([\w-]+)=(\d+)$/.exec(value ?? '');
    if (!m || !scale.has(m[1]!)) usage(`--scale wants <function>=<count>, got '${value ?? ''}'`);
    scale.set(m[1]!, Number(m[2]));
  } else if (flag === '--only') {
    const only = (value ?? '').split(',');
    for (const f of only) if (!scale.has(f)) usage(`unknown function '${f}'`);
    for (const f of functions) if (!only.includes(f)) scale.set(f, 0);
  } else usage(`unknown argument '${arg}'`);
}

const env: NodeJS.ProcessEnv = { ...process.env };
// LOG_DIR: the project's logs/ folder unless the user names one; without a log in it, the sample log.
const sampleLog = await import('./sample-log.ts');
env.LOG_DIR = path.resolve(root, env.LOG_DIR || 'logs');
const wroteSample = await sampleLog.ensureSampleLog(env.LOG_DIR).catch((err: Error) => void console.error(`start: LOG_DIR=${env.LOG_DIR} holds no log, and writing the sample log there failed: ${err.message}`));
if (wroteSample) console.log(`start: LOG_DIR=${env.LOG_DIR} held no log: wrote the sample access log ${wroteSample} (${sampleLog.SAMPLE_LOG_DEFAULTS.lines.toLocaleString('en')} lines; npm run sample-log -- --help)`);
const logFiles = sampleLog.findLogFiles(env.LOG_DIR);
const demoLog = logFiles.includes(sampleLog.SAMPLE_LOG_FILE) ? sampleLog.SAMPLE_LOG_FILE : (logFiles[0] ?? sampleLog.SAMPLE_LOG_FILE);
env.SES_ENDPOINT ??= 'http://127.0.0.1:8005';

const run = (cmd: string, cmdArgs: string[]) => spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit', env }).status === 0;
if (!run('bash', ['scripts/services.sh', '--install'])) {
  console.error('start: RabbitMQ and MySQL are needed (see above); as root, `bash scripts/services.sh --install` installs them.');
  process.exit(1);
}
const ses = await ensureSesEmulator(env.SES_ENDPOINT);
if (!run(process.execPath, ['build.mjs'])) process.exit(1);
// The privileged step; the functions below get nothing but their own users.
if (!run(process.execPath, [path.join(root, 'infra', 'migrate', 'index.ts'), '--local'])) {
  console.error('start: the migrate step failed (see above)');
  process.exit(1);
}
const admin = localAdmin(env);
const passwords = localPasswords();
// No administrator credential reaches a function.
for (const name of ['MYSQL_ADMIN_URL', 'AMQP_ADMIN_URL', 'RABBITMQ_API_URL']) delete env[name];

// Colour on a terminal unless NO_COLOR says otherwise (https://no-color.org).
const logs = createLogSink({ dir: path.join(root, '.sluice', 'logs'), pretty: !json, colour: !json && !process.env.NO_COLOR });
// What start itself says goes to stderr when stdout carries JSON lines.
const say = (text: string) => (json ? console.error(text) : console.log(text));
say(`start: every function's log, combined (JSON lines): ${path.relative(process.cwd(), logs.file) || logs.file}`);
const children = new Set<ChildProcess>();
let stopping = false;

function launch(fn: string, instance: number, colour: (typeof COLOURS)[number]): void {
  const name = scale.get(fn)! > 1 ? `${fn}#${instance}` : fn;
  const own: Record<string, string> = functionUrls(fn as FunctionName, passwords[fn as FunctionName], admin);
  // The trigger runs the dead-letter routes as the operator's role sluice_dlq, not as itself, and
  // reads the dashboard's queue figures as sluice_monitor, not as the administrator.
  if (fn === 'trigger') {
    own.DLQ_AMQP_URL = operatorAmqpUrl('dlq', passwords.dlq, admin);
    own.RABBITMQ_MONITOR_URL = monitorApiUrl(passwords.monitor, admin);
  }
  // Node's flags and malloc settings as in the image (infra/node-options.ts).
  const child = spawn(process.execPath, ['--enable-source-maps', ...nodeFlags(fn), path.join(root, 'dist', fn, 'index.mjs')], {
    cwd: root,
    env: { ...env, ...MALLOC_ENV, NODE_COMPILE_CACHE: compileCache, ...own },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on('line', (line) => logs.line(name, colour, line));
  child.on('exit', (code, signal) => {
    children.delete(child);
    if (stopping) return;
    logs.line(name, colour, JSON.stringify({ level: 50, time: Date.now(), msg: `exited (${signal ?? code}); restarting in 2 s` }));
    setTimeout(() => !stopping && launch(fn, instance, colour), 2_000);
  });
}

// Node's compile cache of the bundles: the first start of a build compiles and fills it, every
// later one (a restart, --scale) reads its code compiled (shared/compile-only.ts).
const compileCache = env.NODE_COMPILE_CACHE || path.join(root, '.sluice', 'compile-cache');
let n = 0;
for (const fn of functions) for (let i = 1; i <= scale.get(fn)!; i++) launch(fn, i, COLOURS[n++ % COLOURS.length]!);

const port = env.HTTP_PORT ?? '3000';
say(`\nsluice is starting: trigger on http://127.0.0.1:${port}, LOG_DIR=${env.LOG_DIR}, SES at ${env.SES_ENDPOINT}.
Replay a log:  curl -s -XPOST localhost:${port}/v1/runs -H 'authorization: Bearer ${env.TRIGGER_TOKEN ? '$TRIGGER_TOKEN' : 'dev-token'}' -H 'content-type: application/json' -d '${JSON.stringify({ kind: 'logs', file: demoLog })}'
Ctrl+C stops everything.\n`);

async function stop(signal: NodeJS.Signals) {
  if (stopping) return;
  stopping = true;
  say(`\nstart: ${signal}: stopping ${children.size} processes`);
  await Promise.all([...children].map((c) => new Promise((r) => (c.once('exit', r), c.kill('SIGTERM')))));
  await ses?.stop();
  await logs.close();
  say(`start: all stopped (RabbitMQ and MariaDB keep running); the combined log is ${logs.file}`);
  process.exit(0);
}
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));
