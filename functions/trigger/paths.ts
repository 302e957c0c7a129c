// Runs may read files under LOG_DIR only: no absolute paths, no "..", and no
// symlink that leads out of it. The same rules hold for a glob (`files`) and
// for every file it matches, at the start of a run and whenever a follow run
// looks for new files.
import { glob, readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';

export type ResolvedFile = { ok: true; path: string; defaultSource: string } | { ok: false; status: 400 | 404; message: string };
export type ResolvedGlob = { ok: true; root: string; matches: MatchedFile[]; defaultSource: string } | { ok: false; status: 400 | 404; message: string };

/** A regular file under LOG_DIR: its path relative to LOG_DIR (as named) and its real path. */
export interface MatchedFile {
  rel: string;
  real: string;
}

/** Why `file` may not name a file under LOG_DIR (NUL, absolute, `..`), or null. */
export function relativePathProblem(what: 'file' | 'files', file: string): string | null {
  if (file.includes('\0')) return `${what} must not contain NUL bytes`;
  if (path.isAbsolute(file) || /^[A-Za-z]:/.test(file)) return `${what} '${file}' must be a path relative to LOG_DIR, not absolute`;
  if (file.split(/[\\/]+/).includes('..')) return `${what} '${file}' must not contain '..'`;
  return null;
}

/** A source name derived from a file name or glob: its letters, digits, _ and -. */
function sourceOf(name: string, fallback: string): string {
  return name.replace(/[^A-Za-z0-9_-]+/g, '-').replace(/^[-_]+/, '').slice(0, 64) || fallback;
}

export async function resolveLogFile(logDir: string, file: string): Promise<ResolvedFile> {
  const problem = relativePathProblem('file', file);
  if (problem) return { ok: false, status: 400, message: problem };
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
  return { ok: true, path: real, defaultSource: sourceOf(path.basename(file), 'file') };
}

/** `files`: a glob under LOG_DIR that matches at least one regular file now. */
export async function resolveLogGlob(logDir: string, pattern: string): Promise<ResolvedGlob> {
  const problem = relativePathProblem('files', pattern);
  if (problem) return { ok: false, status: 400, message: problem };
  const root = await realpath(logDir);
  const matches = await matchLogFiles(root, pattern, true);
  if (matches.length === 0) return { ok: false, status: 404, message: `files '${pattern}' matches no regular file in LOG_DIR` };
  return { ok: true, root, matches, defaultSource: sourceOf(pattern.replace(/[^A-Za-z0-9_-]+$/, ''), 'files') };
}

/** The real path of `rel` when it is a regular file under `root` (a real path) reached without leaving it; otherwise null. */
export async function confinedFile(root: string, rel: string): Promise<string | null> {
  if (relativePathProblem('file', rel)) return null;
  try {
    const real = await realpath(path.resolve(root, rel));
    if (!real.startsWith(root + path.sep)) return null;
    return (await stat(real)).isFile() ? real : null;
  } catch {
    return null; // gone, or not readable: not a match
  }
}

/**
 * The regular files under `root` (a real path) that `pattern` names: the file itself, or, for
 * a glob, every match (sorted), each confined to root (a symlink out of it is no match).
 */
export async function matchLogFiles(root: string, pattern: string, isGlob: boolean): Promise<MatchedFile[]> {
  const rels: string[] = [];
  if (!isGlob) rels.push(path.normalize(pattern));
  else for await (const rel of glob(pattern, { cwd: root })) rels.push(rel);
  const out: MatchedFile[] = [];
  for (const rel of rels.sort()) {
    const real = await confinedFile(root, rel);
    if (real) out.push({ rel, real });
  }
  return out;
}

/**
 * Files in the directory of `rel` whose name starts with its name: where logrotate puts a
 * rotated file (`access.log.1`, `access.log-20240101`, `access.log.1.gz`), `rel` included.
 */
export async function rotatedSiblings(root: string, rel: string): Promise<MatchedFile[]> {
  const dir = path.dirname(rel);
  const base = path.basename(rel);
  let names: string[];
  try {
    names = await readdir(path.resolve(root, dir));
  } catch {
    return [];
  }
  const out: MatchedFile[] = [];
  for (const name of names.filter((n) => n.startsWith(base)).sort()) {
    const sibling = path.join(dir, name);
    const real = await confinedFile(root, sibling);
    if (real) out.push({ rel: sibling, real });
  }
  return out;
}
