// How Node runs each function: its V8 heap flags and the C library's memory settings. One table
// for every way a function starts: infra/Dockerfile (NODE_OPTIONS, and the build argument
// NODE_HEAP_FLAGS for a function's own flags), `npm start` (scripts/start.ts), and the tests and
// benchmarks (test/integration/harness.ts), so that what is measured is what is deployed.
// test/infra.test.ts checks the Dockerfile and docker-compose.yml against it.
//
// Why (docs/benchmarks.md, "Memory of the log consumers"): on a machine with a lot of memory V8
// sizes the young generation at 64 MB per semi-space (128 MB of new space) and lets the old one
// fill with promoted garbage; the log consumers' live heap is about 30 MB. Semi-spaces of 8 MB
// cost nothing measurable and take 20-30 % off their peak RSS. An old-space cap of 192 MB held
// log-lake and log-clean under 250 MB at 10-15 % of their throughput, but log-clean ran out of
// memory under it on an upload of 8 KiB lines (issue 7's hostile sizes): so no function has a
// cap. NODE_HEAP_FLAGS below (and the image's build argument of that name) holds a function's
// own flags: a heap growing factor for the log consumers.
import type { FunctionName } from './access.ts';

/** Every function: a small young generation. */
export const NODE_FLAGS_ALL = ['--max-semi-space-size=8'] as const;

/**
 * Per function, after NODE_FLAGS_ALL. The log consumers: a heap that grows 30 % past its live size
 * before a full collection, where V8 lets it grow up to 4x when the mutator allocates fast. Their
 * batches are garbage within seconds, so an old generation left to grow is mostly dead batches:
 * with it (and 64 KiB batch messages, smaller caches in log-clean), both stay under 250 MB at
 * about 10 % of their throughput, and unlike an old-space cap nothing can run out of memory
 * (docs/benchmarks.md, "Memory of the log consumers"). Not allowed in NODE_OPTIONS: on the
 * command line (infra/Dockerfile passes the build argument NODE_HEAP_FLAGS there).
 */
export const NODE_HEAP_FLAGS: Readonly<Partial<Record<FunctionName, readonly string[]>>> = {
  'log-lake': ['--heap-growing-percent=30'],
  'log-clean': ['--heap-growing-percent=30'],
};

/**
 * glibc's malloc: buffers from 64 KiB up are mapped on their own and unmapped when freed, and
 * free memory above 128 KiB at the top of the heap goes back to the system, instead of the
 * thresholds growing with the largest buffer freed. No effect on musl (the Alpine image).
 */
export const MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '65536', MALLOC_TRIM_THRESHOLD_: '131072' } as const;

/** The flags to start `fn` with, before the script. */
export function nodeFlags(fn: string): string[] {
  return [...NODE_FLAGS_ALL, ...(NODE_HEAP_FLAGS[fn as FunctionName] ?? [])];
}
