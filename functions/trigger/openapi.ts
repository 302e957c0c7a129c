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
import type { FastifyBaseLogger, FastifyInstance, RawServerDefault } from 'fastify';
import type { IncomingMessage, ServerResponse } from 'node:http';
import swagger from '@fastify/swagger';
import scalar from '@scalar/fastify-api-reference';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';
import pkg from '../../package.json' with { type: 'json' };
import { validatedByHandlers } from './api-schemas.ts';

export const OPENAPI_PATH = '/openapi.json';
export const DOCS_PATH = '/docs';

/** Paths served without the token: health, and the API's description (exact paths: no prefix that `..` could extend). */
const PUBLIC_PATHS = new Set(['/healthz', OPENAPI_PATH, DOCS_PATH, `${DOCS_PATH}/`, `${DOCS_PATH}/js/scalar.js`]);
export const isPublicPath = (path: string): boolean => PUBLIC_PATHS.has(path);

/**
 * Registers the document generator (before any route, so that it sees them all), GET /openapi.json
 * and the Scalar reader at /docs. Scalar's plugin carries its script inside the module, so the
 * trigger's single-file bundle serves it with no static files beside it (Swagger UI reads its
 * files from node_modules at run time).
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
  void app.register(scalar, {
    routePrefix: DOCS_PATH,
    logLevel: 'warn',
    configuration: {
      // Our own /openapi.json (the plugin would otherwise add copies under /docs).
      url: OPENAPI_PATH,
      pageTitle: 'sluice API',
      // Nothing fetched from third parties: no web fonts, no telemetry.
      withDefaultFonts: false,
      telemetry: false,
    },
  });
}
