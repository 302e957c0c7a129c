// Runs may read files under LOG_DIR only: no absolute paths, no "..", and no
// symlink that leads out of it.
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';

export type ResolvedFile = { ok: true; path: string; defaultSource: string } | { ok: false; status: 400 | 404; message: string };

export async function resolveLogFile(logDir: string, file: string): Promise<ResolvedFile> {
  if (file.includes('\0')) return { ok: false, status: 400, message: 'file must not contain NUL bytes' };
  if (path.isAbsolute(file) || /^[A-Za-z]:/.test(file)) return { ok: false, status: 400, message: `file '${file}' must be a path relative to LOG_DIR, not absolute` };
  if (file.split(/[\\/]+/).includes('..')) return { ok: false, status: 400, message: `file '${file}' must not contain '..'` };
  const root = await realpath(logDir);
  let real: string;
  try {
    real = await realpath(path.resolve(root, file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ok: false, status: 404, message: `file '${file}' not found in LOG_DIR` };
    return { ok: false, status: 400, message: `file '${file}' cannot be read: ${(err as Error).message}` };
  }
  if (!real.startsWith(root + path.sep)) return { ok: false, status: 400, message: `file '${file}' leads outside LOG_DIR (through a symlink)` };
  if (!(await stat(real)).isFile()) return { ok: false, status: 400, message: `file '${file}' is not a regular file` };
  const base = path.basename(file).replace(/[^A-Za-z0-9_-]+/g, '-').replace(/^[-_]+/, '').slice(0, 64);
  return { ok: true, path: real, defaultSource: base || 'file' };
}
