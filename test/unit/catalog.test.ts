// The EV catalog ships with the project (functions/trigger/ev-vehicles.json) and is bundled into the code
// that uses it; EV_CATALOG (a path) still overrides it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as esbuild from 'esbuild';
import { loadCatalog, parseCatalog } from '../../functions/trigger/ev-catalog.ts';

const root = path.resolve(import.meta.dirname, '../..');
const inRepo = path.join(root, 'functions/trigger/ev-vehicles.json');
/** The reference copy beside the project, when there is one (a clone has none). */
const reference = path.resolve(root, '../shared/data/ev/vehicles.json');

test('the bundled catalog validates and needs no argument', () => {
  const catalog = loadCatalog();
  assert.equal(catalog.vehicles.length, 13);
  assert.ok(catalog.chargers.some((c) => c.type === 'AC') && catalog.chargers.some((c) => c.type === 'DC'));
  assert.match(catalog.about ?? '', /Open EV Data/, 'the catalog keeps its sources');
  assert.deepEqual(loadCatalog(''), catalog, 'an empty EV_CATALOG means the bundled catalog');
  assert.notEqual(loadCatalog(), catalog, 'every call gets its own copy (a caller may change it)');
});

test('the bundled catalog is functions/trigger/ev-vehicles.json', () => {
  assert.deepEqual(loadCatalog(), parseCatalog(JSON.parse(readFileSync(inRepo, 'utf8'))));
  assert.deepEqual(loadCatalog(inRepo), loadCatalog());
});

test('it equals the reference catalog in ../shared', { skip: existsSync(reference) ? false : `no ${reference}` }, () => {
  assert.deepEqual(JSON.parse(readFileSync(inRepo, 'utf8')), JSON.parse(readFileSync(reference, 'utf8')));
  assert.deepEqual(loadCatalog(), loadCatalog(reference));
});

test('a path (EV_CATALOG) overrides the bundled catalog, and is validated', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-catalog-'));
  try {
    const json = JSON.parse(readFileSync(inRepo, 'utf8')) as { vehicles: unknown[] };
    json.vehicles = json.vehicles.slice(0, 2);
    const file = path.join(dir, 'two.json');
    writeFileSync(file, JSON.stringify(json));
    assert.equal(loadCatalog(file).vehicles.length, 2);
    writeFileSync(file, '{');
    assert.throws(() => loadCatalog(file), /is not valid JSON/);
    assert.throws(() => loadCatalog(path.join(dir, 'missing.json')), /cannot read EV catalog/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('esbuild inlines the catalog: a bundle loads it with no file beside it', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-catalog-bundle-'));
  try {
    const entry = path.join(dir, 'entry.ts');
    writeFileSync(entry, `import { loadCatalog } from ${JSON.stringify(path.join(root, 'functions/trigger/ev-catalog.ts'))};\nconsole.log(loadCatalog().vehicles.length);\n`);
    const outfile = path.join(dir, 'out', 'index.mjs');
    await esbuild.build({ entryPoints: [entry], outfile, bundle: true, platform: 'node', format: 'esm', target: 'node24', logLevel: 'silent', absWorkingDir: root });
    const run = spawnSync(process.execPath, [outfile], { cwd: dir, encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout.trim(), '13');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
