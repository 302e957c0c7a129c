// Entry point of the `sluice` command (bin/sluice.mjs checks the Node version, then calls main).
import { createInterface } from 'node:readline/promises';
import pkg from '../package.json' with { type: 'json' };
import { createApi, targetFromEnv } from './client.ts';
import { colorEnabled, painter } from './format.ts';
import { run, type Io } from './program.ts';
import type { ExitCode } from './errors.ts';

export function processIo(env: NodeJS.ProcessEnv = process.env): Io {
  return {
    out: (s) => void process.stdout.write(s),
    err: (s) => void process.stderr.write(s),
    stdoutTty: process.stdout.isTTY === true,
    stderrTty: process.stderr.isTTY === true,
    columns: () => process.stdout.columns || process.stderr.columns || 100,
    paint: painter(colorEnabled(process.stdout, env)),
    paintErr: painter(colorEnabled(process.stderr, env)),
    now: () => Date.now(),
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    stdinTty: process.stdin.isTTY === true,
    async ask(question) {
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      try {
        return await rl.question(question);
      } finally {
        rl.close();
      }
    },
  };
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<ExitCode> {
  const io = processIo(env);
  // Ctrl+C in a watch: leave the terminal on a fresh line (the run itself goes on).
  process.once('SIGINT', () => {
    if (io.stdoutTty || io.stderrTty) process.stderr.write('\r\x1b[K');
    process.exit(130);
  });
  let api: ReturnType<typeof createApi> | undefined;
  return run(argv, { api: () => (api ??= createApi(targetFromEnv(env))), io, version: pkg.version });
}
