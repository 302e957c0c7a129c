// Every bundle starts with nothing but node: its dist/<name>/ folder copied alone into an
// empty directory (as infra/Dockerfile copies it; no node_modules, no sources), a bad config
// stops it with the config error naming the variable, not with a module-not-found. What a
// start loads (the entry and the chunks it imports) is under 1.5 MB (issue 11), and
// SLUICE_COMPILE_ONLY=1 fills Node's compile cache that a later start then reads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const functions = readdirSync(path.join(root, 'functions')).filter((f) => existsSync(path.join(root, 'functions', f, 'index.ts')));
const MAX_START_BYTES = 1_500_000;

interface Manifest {
  entry: string;
  size: number;
  total: number;
  hash: string;
  files: { name: string; size: number; lazy?: true }[];
}

const sha256 = (buf: Buffer | string) => createHash('sha256').update(buf).digest('hex');
const badConfig = { AMQP_URL: 'not-a-url', MYSQL_URL: 'mysql://u:p@127.0.0.1:1/x' };

/** dist/<fn>/ copied into a fresh directory, its manifest checked against the files. */
function copied(fn: string): { dir: string; manifest: Manifest } {
  const from = path.join(root, 'dist', fn);
  assert.ok(existsSync(path.join(from, 'index.mjs')), `${from}/index.mjs exists (npm run build)`);
  const manifest = JSON.parse(readFileSync(path.join(from, 'manifest.json'), 'utf8')) as Manifest;
  assert.equal(manifest.entry, 'index.mjs');
  assert.equal(manifest.files[0]?.name, 'index.mjs', 'the entry is the first file');
  const code = readdirSync(from).filter((f) => f.endsWith('.mjs')).sort();
  assert.deepEqual(manifest.files.map((f) => f.name).sort(), code, 'the manifest lists every .mjs file of the folder');
  const bodies = manifest.files.map((f) => readFileSync(path.join(from, f.name)));
  manifest.files.forEach((f, i) => assert.equal(f.size, bodies[i]!.length, `${f.name}: size`));
  assert.equal(manifest.hash, `sha256:${sha256(manifest.files.map((f, i) => `${f.name} ${sha256(bodies[i]!)}\n`).join(''))}`);
  assert.equal(manifest.size, manifest.files.filter((f) => !f.lazy).reduce((n, f) => n + f.size, 0), 'size: the files loaded at start');
  assert.equal(manifest.total, bodies.reduce((n, b) => n + b.length, 0), 'total: every file');
  const dir = mkdtempSync(path.join(tmpdir(), `sluice-${fn}-`));
  cpSync(from, dir, { recursive: true });
  return { dir, manifest };
}

const run = (dir: string, env: Record<string, string>) =>
  spawnSync(process.execPath, ['--enable-source-maps', 'index.mjs'], { cwd: dir, env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 20_000 });

for (const fn of functions) {
  test(`${fn}: the bundle runs alone and names a bad variable; a start loads under 1.5 MB`, () => {
    const { dir, manifest } = copied(fn);
    try {
      assert.ok(manifest.size < MAX_START_BYTES, `${fn} loads ${manifest.size} bytes at start (${manifest.files.filter((f) => !f.lazy).map((f) => f.name).join(', ')}), over ${MAX_START_BYTES}`);
      const r = run(dir, badConfig);
      assert.equal(r.status, 78, r.stderr);
      assert.match(r.stderr, /invalid configuration/);
      assert.match(r.stderr, /AMQP_URL="not-a-url": must be a URL starting with amqp:\/\//);
      assert.doesNotMatch(r.stderr, /Cannot find (module|package)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('trigger: the EV simulator and faker are a chunk loaded with the first EV run, not at start', () => {
  const manifest = JSON.parse(readFileSync(path.join(root, 'dist/trigger/manifest.json'), 'utf8')) as Manifest;
  const lazy = manifest.files.filter((f) => f.lazy);
  assert.ok(lazy.length >= 1, 'a lazy chunk');
  // faker's English first names are in the chunk and nowhere in what a start loads.
  const loaded = manifest.files.filter((f) => !f.lazy).map((f) => readFileSync(path.join(root, 'dist/trigger', f.name), 'utf8'));
  const later = lazy.map((f) => readFileSync(path.join(root, 'dist/trigger', f.name), 'utf8'));
  assert.ok(later.some((code) => code.includes('Zachariah')), 'faker is in a lazy chunk');
  assert.ok(loaded.every((code) => !code.includes('Zachariah')), 'faker is not in the files a start loads');
});

for (const fn of ['log-lake', 'trigger']) {
  test(`${fn}: SLUICE_COMPILE_ONLY=1 fills the compile cache without running the function; a start then reads it`, () => {
    const { dir, manifest } = copied(fn);
    const cache = path.join(dir, '.compile-cache');
    try {
      const off = run(dir, { SLUICE_COMPILE_ONLY: '1' });
      assert.equal(off.status, 1, off.stderr);
      assert.match(off.stderr, /compile cache is off; set NODE_COMPILE_CACHE/);
      // No configuration at all: the function would stop with exit 78; compile-only exits before it.
      const warm = run(dir, { SLUICE_COMPILE_ONLY: '1', NODE_COMPILE_CACHE: cache });
      assert.equal(warm.status, 0, warm.stderr);
      assert.match(warm.stdout, new RegExp(`compile cache: ${manifest.files.length} files of `));
      assert.equal(warm.stderr, '');
      // Node's own diagnostics (NODE_DEBUG_NATIVE) say whether it used each file's cached code.
      const start = run(dir, { ...badConfig, NODE_COMPILE_CACHE: cache, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' });
      assert.equal(start.status, 78, start.stderr);
      for (const f of manifest.files.filter((file) => !file.lazy)) {
        assert.match(start.stderr, new RegExp(`code cache for ESM \\S+/${f.name.replace('.', '\\.')} was accepted`), `${f.name} compiled from the cache`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
