// Every bundle starts with nothing but node: copied alone into an empty
// directory (no node_modules, no sources), a bad config stops it with the
// config error naming the variable, not with a module-not-found.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const functions = readdirSync(path.join(root, 'functions')).filter((f) => existsSync(path.join(root, 'functions', f, 'index.ts')));

for (const fn of functions) {
  test(`${fn}: the bundle runs alone and names a bad variable`, () => {
    const bundle = path.join(root, 'dist', fn, 'index.mjs');
    assert.ok(existsSync(bundle), `${bundle} exists (npm run build)`);
    const manifest = JSON.parse(readFileSync(path.join(root, 'dist', fn, 'manifest.json'), 'utf8'));
    assert.equal(manifest.hash, `sha256:${createHash('sha256').update(readFileSync(bundle)).digest('hex')}`);
    const dir = mkdtempSync(path.join(tmpdir(), `sluice-${fn}-`));
    try {
      copyFileSync(bundle, path.join(dir, 'index.mjs'));
      const r = spawnSync(process.execPath, ['index.mjs'], { cwd: dir, env: { PATH: process.env.PATH, AMQP_URL: 'not-a-url', MYSQL_URL: 'mysql://u:p@127.0.0.1:1/x' }, encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 78, r.stderr);
      assert.match(r.stderr, /invalid configuration/);
      assert.match(r.stderr, /AMQP_URL="not-a-url": must be a URL starting with amqp:\/\//);
      assert.doesNotMatch(r.stderr, /Cannot find (module|package)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
