// Starts the aws-ses-v2-local SES emulator from node_modules when nothing
// answers at `endpoint` yet. Used by npm start and by the tests.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

export async function sesAnswers(endpoint: string): Promise<boolean> {
  try {
    return (await fetch(new URL('/store', endpoint), { signal: AbortSignal.timeout(1_000) })).ok;
  } catch {
    return false;
  }
}

export async function ensureSesEmulator(endpoint: string): Promise<{ stop(): Promise<void> } | null> {
  if (await sesAnswers(endpoint)) return null;
  const url = new URL(endpoint);
  if (!['127.0.0.1', 'localhost'].includes(url.hostname)) throw new Error(`SES endpoint ${endpoint} does not answer and is not local`);
  const cli = path.join(path.dirname(createRequire(import.meta.url).resolve('aws-ses-v2-local/package.json')), 'dist/cli.js');
  const child = spawn(process.execPath, [cli, '--host', '127.0.0.1', '--port', url.port || '8005'], { stdio: 'ignore', detached: false });
  for (let i = 0; i < 100; i++) {
    if (await sesAnswers(endpoint)) {
      return {
        stop: () => new Promise<void>((resolve) => (child.exitCode !== null ? resolve() : (child.once('exit', () => resolve()), child.kill('SIGTERM')))),
      };
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`the SES emulator did not start on ${endpoint}`);
}
