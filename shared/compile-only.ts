// The first import of every bundle (build.mjs puts it there; the sources never import it).
// With SLUICE_COMPILE_ONLY=1 the process puts the bundle's code into Node's compile cache
// (the folder NODE_COMPILE_CACHE names) and exits 0 before the function runs: no config read,
// no connection. infra/Dockerfile does it once when it builds the image, so a container starts
// with its code compiled (compiling is the largest part of a start's CPU); npm start and the
// tests fill their cache (.sluice/compile-cache) on the first start instead.
// A cache that does not match (another Node, a changed file) or cannot be read or written (a
// read-only file system) only means compiling as without one: Node checks every entry.
import { readdirSync } from 'node:fs';
import { flushCompileCache, getCompileCacheDir } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

if (process.env.SLUICE_COMPILE_ONLY === '1') {
  const cache = getCompileCacheDir();
  if (!cache) {
    process.stderr.write('SLUICE_COMPILE_ONLY=1: Node\'s compile cache is off; set NODE_COMPILE_CACHE to the folder it goes in\n');
    process.exit(1);
  }
  // ESM compiles the entry and every chunk it imports statically before running any of them; the
  // chunks the function loads later with import() (the trigger's EV simulator) are loaded here.
  // Loading one runs its top level only, which defines things and starts nothing.
  const entry = fileURLToPath(import.meta.url);
  const dir = path.dirname(entry);
  const chunks = readdirSync(dir).filter((f) => f.endsWith('.mjs') && path.join(dir, f) !== entry);
  for (const chunk of chunks.sort()) await import(pathToFileURL(path.join(dir, chunk)).href);
  flushCompileCache();
  process.stdout.write(`compile cache: ${chunks.length + 1} files of ${dir} compiled into ${cache}\n`);
  process.exit(0);
}
