// Files build.mjs writes beside the trigger's bundle and the trigger serves as they are: the
// dashboard page (dist/trigger/dashboard/) and the API reader (dist/trigger/docs/). Each folder
// has an assets.json listing its files, so a request can only ever name one of them; no path
// reaches the file system. A folder is read on its first request, not at start: the trigger
// listens without them, and the reader's script alone is megabytes.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';

export interface Asset { body: Buffer; gzip?: Buffer; br?: Buffer; type: string; etag: string; cache: string; csp?: string }

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8', '.txt': 'text/plain; charset=utf-8',
};
export const typeOf = (name: string): string => TYPES[path.extname(name)] ?? 'application/octet-stream';

export interface AssetPolicy {
  /** Files whose name changes with their content (cached for a year); the others are revalidated on every load. */
  immutable: (name: string) => boolean;
  /** Content-Security-Policy of the HTML pages. */
  csp?: string;
}

/** The folder's files in memory, with their .gz and .br siblings; null when the folder was not built. */
export function loadAssets(dir: string, policy: AssetPolicy): Map<string, Asset> | null {
  const listing = path.join(dir, 'assets.json');
  if (!existsSync(listing)) return null;
  const { files } = JSON.parse(readFileSync(listing, 'utf8')) as { files: { name: string; hash: string }[] };
  const assets = new Map<string, Asset>();
  for (const { name, hash } of files) {
    const file = path.join(dir, name);
    const optional = (ext: string) => (existsSync(file + ext) ? readFileSync(file + ext) : undefined);
    const asset = makeAsset(name, readFileSync(file), hash, policy);
    const gzip = optional('.gz');
    const br = optional('.br');
    if (gzip) asset.gzip = gzip;
    if (br) asset.br = br;
    assets.set(name, asset);
  }
  return assets;
}

export function makeAsset(name: string, body: Buffer, hash: string, policy: AssetPolicy): Asset {
  const type = typeOf(name);
  const asset: Asset = {
    body,
    type,
    etag: `"${hash.slice(0, 32)}"`,
    cache: policy.immutable(name) ? 'public, max-age=31536000, immutable' : 'no-cache',
  };
  if (policy.csp && type.startsWith('text/html')) asset.csp = policy.csp;
  return asset;
}

/** `load` once, on first use (null included: a folder that was not built stays so until restart). */
export function lazily<T>(load: () => T): () => T {
  let loaded = false;
  let value: T;
  return () => {
    if (!loaded) (value = load()), (loaded = true);
    return value;
  };
}

export function sendAsset(req: FastifyRequest, reply: FastifyReply, asset: Asset) {
  reply.header('cache-control', asset.cache).header('etag', asset.etag).header('vary', 'accept-encoding').header('x-content-type-options', 'nosniff');
  if (asset.csp) reply.header('content-security-policy', asset.csp).header('referrer-policy', 'no-referrer');
  if (req.headers['if-none-match'] === asset.etag) return reply.code(304).send();
  const accept = String(req.headers['accept-encoding'] ?? '');
  let body = asset.body;
  if (asset.br && /\bbr\b/.test(accept)) (body = asset.br), reply.header('content-encoding', 'br');
  else if (asset.gzip && /\bgzip\b/.test(accept)) (body = asset.gzip), reply.header('content-encoding', 'gzip');
  return reply.type(asset.type).send(body);
}
