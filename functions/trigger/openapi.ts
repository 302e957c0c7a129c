// The OpenAPI 3.1 document (GET /openapi.json) and its reader (GET /docs), generated from the
// zod schemas the routes validate with, so the document cannot drift from the code.
//
// Validation stays in the route handlers (docs/design-notes.md: one schema language, and every
// 400 names the field in our words; an upload's query is judged before its body is read, and a
// refused upload closes its connection). Fastify's own validation and serialization are therefore
// pass-through: the route schemas are what the document shows, the handlers parse with the very
// same schema objects, and test/unit/trigger-openapi.test.ts checks every route's real answers
// against the document.
//
// Both are readable without the token (README, "HTTP API"): the document holds the API's shape,
// which the README publishes anyway, and no data; a browser cannot send a bearer header when it
// opens /docs, and code generators fetch the document without one. Every route it describes
// still needs the token.
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, RawServerDefault } from 'fastify';
import type { IncomingMessage, ServerResponse } from 'node:http';
import swagger from '@fastify/swagger';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';
import pkg from '../../package.json' with { type: 'json' };
import { validatedByHandlers } from './api-schemas.ts';
import { loadAssets, makeAsset, sendAsset, type Asset, type AssetPolicy } from './static-files.ts';

export const OPENAPI_PATH = '/openapi.json';
// As in ./docs.ts, which this module imports only when it runs from the sources (see registerDocs).
export const DOCS_PATH = '/docs';

/** Paths served without the token: health, and the API's description (exact paths: no prefix that `..` could extend). */
const PUBLIC_PATHS = new Set(['/healthz', OPENAPI_PATH, DOCS_PATH, `${DOCS_PATH}/`, `${DOCS_PATH}/js/scalar.js`]);
export const isPublicPath = (path: string): boolean => PUBLIC_PATHS.has(path);

/**
 * Registers the document generator (before any route, so that it sees them all), GET /openapi.json
 * and the Scalar reader at /docs (registerDocs).
 */
export function registerOpenApi<L extends FastifyBaseLogger>(app: FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, L>): void {
  // The handlers validate (see above); Fastify passes data through untouched.
  validatedByHandlers(app as unknown as FastifyInstance);

  // Called, not registered: a registered plugin loads after createApp has declared its routes, and
  // @fastify/swagger only sees routes added after its onRoute hook. Its setup is synchronous (it
  // adds that hook and the `swagger` decorator), so calling it here sees every route that follows.
  swagger(app as unknown as FastifyInstance, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'sluice trigger API',
        version: pkg.version,
        description:
          'Starts and reads runs (log replays, follows and uploads, EV simulations), answers the web-log aggregates, ' +
          "and inspects and replays the pipeline's dead letters. Every route but `/healthz` and this description needs " +
          '`Authorization: Bearer <TRIGGER_TOKEN>`. Errors are `{"statusCode","error","message"}` with a message naming what was wrong.',
      },
      components: {
        securitySchemes: {
          bearerToken: { type: 'http', scheme: 'bearer', description: "The trigger's TRIGGER_TOKEN (the development token `dev-token` only while it listens on loopback)" },
        },
      },
      security: [{ bearerToken: [] }],
      tags: [
        { name: 'runs', description: 'Log replays, follows and uploads; EV simulations' },
        { name: 'stats', description: 'The web-log aggregates log-clean keeps' },
        { name: 'dlq', description: "Dead letters: every queue's `.dlq`, shown, replayed or purged (needs DLQ_AMQP_URL)" },
        { name: 'ops', description: 'Health and metrics' },
      ],
    },
    transform: jsonSchemaTransform,
  }, (err) => {
    if (err) throw err;
  });

  app.get(OPENAPI_PATH, { schema: { hide: true }, logLevel: 'warn' }, async () => app.swagger());
  registerDocs(app as unknown as FastifyInstance);
}

// The reader's script is not named by its content: every file revalidated (ETag).
const DOCS_POLICY: AssetPolicy = { immutable: () => false };
const defaultDocsDir = () => fileURLToPath(new URL('./docs/', import.meta.url));

/**
 * GET /docs, /docs/ and /docs/js/scalar.js: Scalar's page and script, rendered by ./docs.ts with
 * Scalar's Fastify plugin. The bundle does not carry them (5 MB of the trigger's 8): build.mjs
 * wrote them, compressed, to docs/ beside it, read on the first request. Run from the sources,
 * there is no such folder: the first request renders them (build.mjs keeps ./docs.ts out of the bundle).
 */
function registerDocs(app: FastifyInstance, dir = defaultDocsDir()): void {
  let files: Promise<Map<string, Asset> | null> | undefined;
  const load = async (): Promise<Map<string, Asset> | null> => {
    const built = loadAssets(dir, DOCS_POLICY);
    if (built) return built;
    try {
      const { renderDocs } = await import('./docs.ts');
      const rendered = await renderDocs(OPENAPI_PATH);
      const hash = (body: Buffer) => createHash('sha256').update(body).digest('hex');
      return new Map([...rendered].map(([name, body]) => [name, makeAsset(name, body, hash(body), DOCS_POLICY)]));
    } catch (err) {
      app.log.warn({ err, dir }, 'the API reader is not built (npm run build)');
      return null;
    }
  };
  const serve = (name: string) => async (req: FastifyRequest, reply: FastifyReply) => {
    files ??= load();
    const asset = (await files)?.get(name);
    if (!asset) return reply.code(503).send({ statusCode: 503, error: 'Service Unavailable', message: 'the API reader is not built: run npm run build' });
    return sendAsset(req, reply, asset);
  };
  const route = { schema: { hide: true }, logLevel: 'warn' } as const;
  // The page loads its script by a relative path: /docs must end with a slash.
  app.get(DOCS_PATH, route, async (_req, reply) => reply.redirect(`${DOCS_PATH}/`, 301));
  app.get(`${DOCS_PATH}/`, route, serve('index.html'));
  app.get(`${DOCS_PATH}/js/scalar.js`, route, serve('js/scalar.js'));
}
