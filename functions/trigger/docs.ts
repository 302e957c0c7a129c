// The API reader at GET /docs: Scalar's page and its script (~5 MB), as Scalar's own Fastify
// plugin serves them, asked once from a throwaway Fastify instance. Not in the trigger's bundle:
// build.mjs calls renderDocs() and writes the files to dist/trigger/docs/ (served from there by
// openapi.ts on the first request; the image copies dist/trigger/ whole). Run from the sources
// (tests, `node functions/trigger/index.ts`), openapi.ts imports this module when /docs is first asked for.
// Imports nothing of the project: build.mjs loads it with Node's own TypeScript support.
import Fastify from 'fastify';
import scalar from '@scalar/fastify-api-reference';

export const DOCS_PATH = '/docs';
/** The reader's files, under DOCS_PATH/ (the page loads its script as js/scalar.js, relative). */
export const DOCS_FILES = ['index.html', 'js/scalar.js'] as const;

/** The reader's page and script, by their name under DOCS_PATH/. The page reads the document from `openApiPath`. */
export async function renderDocs(openApiPath: string): Promise<Map<string, Buffer>> {
  const app = Fastify({ logger: false });
  await app.register(scalar, {
    routePrefix: DOCS_PATH,
    configuration: {
      url: openApiPath,
      pageTitle: 'sluice API',
      // Nothing fetched from third parties: no web fonts, no telemetry.
      withDefaultFonts: false,
      telemetry: false,
    },
  });
  try {
    const files = new Map<string, Buffer>();
    for (const name of DOCS_FILES) {
      const res = await app.inject({ url: `${DOCS_PATH}/${name === 'index.html' ? '' : name}` });
      if (res.statusCode !== 200) throw new Error(`Scalar's plugin answered ${res.statusCode} for ${name}`);
      files.set(name, res.rawPayload);
    }
    return files;
  } finally {
    await app.close();
  }
}
