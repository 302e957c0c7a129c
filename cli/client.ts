// The CLI's only way to the system: the trigger's HTTP API.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ApiError, UnreachableError, describeCause } from './errors.ts';

/** Where the API is and how to authenticate (never printed). */
export interface Target {
  url: string;
  token: string;
}

/** The trigger's defaults (functions/trigger/config.ts): HTTP_PORT 3000 on 127.0.0.1, and the development token it accepts on loopback only. */
export const DEFAULT_URL = 'http://127.0.0.1:3000';
export const DEV_TOKEN = 'dev-token';

/**
 * SLUICE_URL and SLUICE_TOKEN; without them, the local system as `npm start` runs it: the
 * trigger on 127.0.0.1 at HTTP_PORT (3000), with TRIGGER_TOKEN when it is set in this shell
 * (`npm start` hands it to the trigger), else the development token.
 */
export function targetFromEnv(env: NodeJS.ProcessEnv = process.env): Target {
  const url = env.SLUICE_URL?.trim() || (env.HTTP_PORT?.trim() ? `http://127.0.0.1:${env.HTTP_PORT.trim()}` : DEFAULT_URL);
  const token = env.SLUICE_TOKEN || env.TRIGGER_TOKEN || DEV_TOKEN;
  return { url: url.replace(/\/+$/, ''), token };
}

export type Query = Record<string, string | number | undefined>;

export interface UploadProgress {
  sent: number;
  total: number;
}

/** The port the commands use (tests give a fake). */
export interface Api {
  readonly url: string;
  get(path: string, query?: Query): Promise<unknown>;
  /** The answer's status too: a stop answers 200 or 202. */
  post(path: string, body?: unknown): Promise<{ status: number; body: unknown }>;
  /** Streams a file as the request body (never read whole); `onProgress` as bytes leave. */
  upload(path: string, file: string, query: Query, onProgress?: (p: UploadProgress) => void): Promise<unknown>;
}

function withQuery(path: string, query: Query = {}): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/** The API's error message (`{"statusCode","error","message"}`), or what the answer was when it is not that. */
function errorOf(status: number, statusText: string, text: string): ApiError {
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: a proxy's page, say
  }
  const message =
    body && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string'
      ? (body as { message: string }).message
      : `HTTP ${status} ${statusText}${text ? `: ${text.slice(0, 200).trim()}` : ''}`;
  return new ApiError(status, status === 401 ? `${message} (set SLUICE_TOKEN to the trigger's TRIGGER_TOKEN)` : message, body);
}

function parseBody(text: string, url: string): unknown {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new UnreachableError(url, `the answer is not JSON (${JSON.stringify(text.slice(0, 80))}…): is this the sluice trigger?`);
  }
}

export function createApi(target: Target, opts: { timeoutMs?: number } = {}): Api {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const auth = `Bearer ${target.token}`;

  async function call(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    const url = `${target.url}${path}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { authorization: auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? null : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new UnreachableError(target.url, describeCause(err));
    }
    const text = await res.text();
    if (!res.ok) throw errorOf(res.status, res.statusText, text);
    return { status: res.status, body: parseBody(text, target.url) };
  }

  return {
    url: target.url,
    async get(path, query) {
      return (await call('GET', withQuery(path, query))).body;
    },
    post(path, body) {
      return call('POST', path, body ?? {});
    },
    async upload(path, file, query, onProgress) {
      const { size } = await stat(file);
      const url = new URL(`${target.url}${withQuery(path, query)}`);
      const lib = url.protocol === 'https:' ? https : http;
      return new Promise((resolve, reject) => {
        let settled = false;
        const settle = (fn: () => void) => {
          if (!settled) (settled = true), fn();
        };
        // Content-Length lets the trigger refuse a file over BODY_LIMIT_MB before a byte is sent.
        const req = lib.request(url, {
          method: 'POST',
          headers: { authorization: auth, 'content-type': 'text/plain', 'content-length': String(size) },
        });
        req.on('response', (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => settle(() => reject(new UnreachableError(target.url, describeCause(err)))));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            settle(() => {
              if (status >= 400) return reject(errorOf(status, res.statusMessage ?? '', text));
              try {
                resolve(parseBody(text, target.url));
              } catch (err) {
                reject(err);
              }
            });
          });
        });
        // A refused upload may close the connection while the body is still going: the answer, when it came, wins.
        req.on('error', (err) => setTimeout(() => settle(() => reject(new UnreachableError(target.url, describeCause(err)))), 200));
        let sent = 0;
        const count = new Transform({
          transform(chunk: Buffer, _enc, done) {
            sent += chunk.length;
            onProgress?.({ sent, total: size });
            done(null, chunk);
          },
        });
        pipeline(createReadStream(file, { highWaterMark: 256 * 1024 }), count, req).catch((err: NodeJS.ErrnoException) => {
          // Reading the file failed: that is the error. Otherwise the request's own error or answer settles the promise.
          if (err.syscall === 'open' || err.syscall === 'read') {
            req.destroy();
            settle(() => reject(err));
          }
        });
      });
    },
  };
}
