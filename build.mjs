// Type-checks, then bundles every functions/<name>/index.ts (and the migrate
// step, infra/migrate/index.ts) into dist/<name>/index.mjs: one file with every dependency inside, so a bundle
// runs with nothing but `node`. Each bundle gets dist/<name>/manifest.json
// with its content hash, so a deploy can skip functions that did not change.
//   npm run build               all functions
//   npm run build -- log-clean  one (or several) by name
//   npm run build -- --no-check skip the type-check (used by scripts that just built)
// The trigger also gets its dashboard page (functions/trigger/dashboard/, browser code):
// dist/trigger/dashboard/index.html and assets/<name>-<hash>.{js,css}, each with .gz and .br
// siblings, listed in assets.json; the image copies dist/trigger/ whole, so they ship with it.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { brotliCompressSync, constants as zlib, gzipSync } from 'node:zlib';
import path from 'node:path';
import * as esbuild from 'esbuild';

const root = path.dirname(new URL(import.meta.url).pathname);
const args = process.argv.slice(2);
const check = !args.includes('--no-check');
// Bundles that are not functions: the privileged migrate step (its own image, a one-shot job).
const tools = { migrate: 'infra/migrate/index.ts' };
const entryOf = (name) => tools[name] ?? path.join('functions', name, 'index.ts');
const all = readdirSync(path.join(root, 'functions'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(path.join(root, 'functions', d.name, 'index.ts')))
  .map((d) => d.name)
  .sort()
  .concat(Object.keys(tools));
const wanted = args.filter((a) => !a.startsWith('--'));
for (const name of wanted) {
  if (!all.includes(name)) {
    console.error(`build: no function '${name}' (have: ${all.join(', ')})`);
    process.exit(2);
  }
}
const names = wanted.length ? wanted : all;

if (check) {
  try {
    execFileSync(path.join(root, 'node_modules/.bin/tsc'), ['-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
    // The dashboard page: DOM types, no Node (the root tsconfig leaves its folder out).
    execFileSync(path.join(root, 'node_modules/.bin/tsc'), ['-p', path.join(root, 'functions/trigger/dashboard/tsconfig.json')], { stdio: 'inherit' });
  } catch {
    console.error('build: type-check failed');
    process.exit(1);
  }
}

// infra/migrations.ts reads the .sql files from disk; in a bundle the files are
// inlined instead, so the bundle carries its schema.
const inlineMigrations = {
  name: 'inline-migrations',
  setup(build) {
    build.onLoad({ filter: /[\\/]infra[\\/]migrations\.ts$/ }, () => {
      const dir = path.join(root, 'infra/migrations');
      const migrations = readdirSync(dir)
        .filter((f) => /^\d{3}_[\w-]+\.sql$/.test(f))
        .sort()
        .map((file) => ({ version: Number(file.slice(0, 3)), name: file.slice(4, -4), sql: readFileSync(path.join(dir, file), 'utf8') }));
      return { contents: `export function loadMigrations() { return ${JSON.stringify(migrations)}; }`, loader: 'js', watchFiles: [dir] };
    });
  },
};

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/** The trigger's dashboard page into `outdir`: hashed asset names (cached for a year), index.html naming them (revalidated). */
async function buildDashboard(outdir) {
  const src = path.join(root, 'functions/trigger/dashboard');
  rmSync(outdir, { recursive: true, force: true }); // no stale hashed files
  const result = await esbuild.build({
    entryPoints: [path.join(src, 'main.ts'), path.join(src, 'style.css')],
    outdir: path.join(outdir, 'assets'),
    entryNames: '[name]-[hash]',
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: ['chrome120', 'firefox121', 'safari17'],
    sourcemap: 'linked',
    minify: true,
    legalComments: 'eof', // Chart.js' MIT notice stays in the file that carries it
    logLevel: 'warning',
    metafile: true,
  });
  if (result.warnings.length) process.exitCode = 1;
  const outputs = Object.keys(result.metafile.outputs).map((f) => path.relative(outdir, path.resolve(root, f)).split(path.sep).join('/'));
  const js = outputs.find((f) => f.endsWith('.js'));
  const css = outputs.find((f) => f.endsWith('.css'));
  const html = readFileSync(path.join(src, 'index.html'), 'utf8').replace('{{js}}', `/${js}`).replace('{{css}}', `/${css}`);
  writeFileSync(path.join(outdir, 'index.html'), html);
  const files = [];
  for (const name of ['index.html', ...outputs].sort()) {
    const body = readFileSync(path.join(outdir, name));
    files.push({ name, size: body.length, hash: sha256(body) });
    // Compressed once here rather than on every request (the server picks by Accept-Encoding); source maps are for devtools only.
    if (name.endsWith('.map')) continue;
    writeFileSync(path.join(outdir, `${name}.gz`), gzipSync(body, { level: 9 }));
    writeFileSync(path.join(outdir, `${name}.br`), brotliCompressSync(body, { params: { [zlib.BROTLI_PARAM_QUALITY]: 11 } }));
  }
  const listing = `${JSON.stringify({ files }, null, 2)}\n`;
  writeFileSync(path.join(outdir, 'assets.json'), listing);
  return { hash: `sha256:${sha256(listing)}`, js: files.find((f) => f.name === js) };
}

const rows = [];
for (const name of names) {
  const outdir = path.join(root, 'dist', name);
  mkdirSync(outdir, { recursive: true });
  const result = await esbuild.build({
    entryPoints: [path.join(root, entryOf(name))],
    outfile: path.join(outdir, 'index.mjs'),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    sourcemap: true,
    minify: true,
    keepNames: true,
    legalComments: 'linked',
    logLevel: 'warning',
    plugins: [inlineMigrations],
    // CommonJS dependencies call require() for Node's built-ins; give the ESM bundle one.
    banner: { js: "import { createRequire as __sluiceCreateRequire } from 'node:module'; const require = __sluiceCreateRequire(import.meta.url);" },
    metafile: true,
  });
  if (result.warnings.length) process.exitCode = 1;
  const code = readFileSync(path.join(outdir, 'index.mjs'));
  const manifest = { function: name, entry: 'index.mjs', size: code.length, hash: `sha256:${createHash('sha256').update(code).digest('hex')}` };
  if (name === 'trigger') {
    const dashboard = await buildDashboard(path.join(outdir, 'dashboard'));
    manifest.dashboard = dashboard.hash; // a change of the page alone is a change of the trigger's image too
    const gz = readFileSync(path.join(outdir, 'dashboard', `${dashboard.js.name}.gz`)).length;
    rows.push([`trigger/dashboard/${dashboard.js.name}`, `${(dashboard.js.size / 1024).toFixed(1)} KiB`, `gzip ${(gz / 1024).toFixed(1)} KiB`]);
  }
  writeFileSync(path.join(outdir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  rows.push([name, `${(code.length / 1024).toFixed(1)} KiB`, manifest.hash.slice(7, 19)]);
}
const width = Math.max(...rows.map((r) => r[0].length));
for (const [name, size, hash] of rows) console.log(`  ${(name.includes('/') ? `dist/${name}` : `dist/${name}/index.mjs`).padEnd(width + 15)} ${size.padStart(10)}  ${hash}`);
