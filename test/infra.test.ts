// The deployment files (infra/Dockerfile, docker-compose.yml, .env.example,
// infra/k8s) against the code: every function is built, run, probed and (for
// queue functions) scaled on exactly the queues it consumes, and each one holds
// its own credentials and no other's (least privilege: infra/access.ts), while
// the privileged migrate step alone holds the administrators'. Needs `node
// build.mjs` first (npm test builds before it runs the tests).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, globSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { EV_PARTITIONS, evAnalyticsQueue, topology } from '../infra/topology.ts';
import { FUNCTIONS, OPERATORS, passwordVariable, userOf } from '../infra/access.ts';
import { MALLOC_ENV, NODE_FLAGS_ALL, NODE_HEAP_FLAGS, nodeFlags } from '../infra/node-options.ts';
import * as logLakeConfig from '../functions/log-lake/config.ts';
import * as logCleanConfig from '../functions/log-clean/config.ts';
import * as evStoreConfig from '../functions/ev-store/config.ts';
import * as notifyEmailConfig from '../functions/notify-email/config.ts';
import * as evAnalyticsConfig from '../functions/ev-analytics/config.ts';

const root = path.resolve(import.meta.dirname, '..');
const read = (file: string) => readFileSync(path.join(root, file), 'utf8');

const functions = readdirSync(path.join(root, 'functions'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(path.join(root, 'functions', d.name, 'index.ts')))
  .map((d) => d.name)
  .sort();
/** Queue functions run through runQueueFunction; the trigger serves HTTP. */
const queueFunctions = functions.filter((fn) => read(`functions/${fn}/index.ts`).includes('runQueueFunction('));
/** Functions that do periodic work (no queue): a health port, no autoscaling on a queue. */
const periodicFunctions = ['log-alerts'];

/** What each queue function consumes, from the constants its index.ts passes to consume(). */
const consumed: Record<string, string[]> = {
  'log-lake': [logLakeConfig.QUEUE],
  'log-clean': [logCleanConfig.QUEUE],
  'ev-analytics': Array.from({ length: EV_PARTITIONS }, (_, p) => evAnalyticsQueue(p)),
  'ev-store': [evStoreConfig.READINGS_QUEUE, evStoreConfig.EVENTS_QUEUE],
  'notify-email': [notifyEmailConfig.QUEUE, notifyEmailConfig.ALERTS_QUEUE],
};
const configModules: Record<string, Record<string, unknown>> = {
  'log-lake': logLakeConfig,
  'log-clean': logCleanConfig,
  'ev-analytics': evAnalyticsConfig,
  'ev-store': evStoreConfig,
  'notify-email': notifyEmailConfig,
};
const topologyQueues = new Set(topology.queues.map((q) => q.name));

// --- parsed files ---------------------------------------------------------------

interface ComposeService {
  image?: string;
  build?: { context?: string; dockerfile?: string; target?: string; args?: Record<string, string>; additional_contexts?: Record<string, string> };
  command?: string | string[];
  entrypoint?: string | string[];
  container_name?: string;
  ports?: (string | { target: number; published?: string | number })[];
  environment?: Record<string, string>;
  env_file?: unknown;
  secrets?: unknown;
  depends_on?: Record<string, { condition?: string }>;
  restart?: string;
  stop_grace_period?: string;
  healthcheck?: { test?: string | string[]; disable?: boolean };
  volumes?: unknown[];
}
interface Compose {
  version?: unknown;
  services: Record<string, ComposeService>;
}

interface K8sProbe {
  httpGet?: { path?: string; port?: string | number };
}
interface K8sContainer {
  name: string;
  image: string;
  ports?: { name?: string; containerPort: number }[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  envFrom?: { secretRef?: { name: string }; configMapRef?: { name: string } }[];
  resources?: { requests?: { cpu?: string; memory?: string }; limits?: { cpu?: string; memory?: string } };
  livenessProbe?: K8sProbe;
  readinessProbe?: K8sProbe;
  startupProbe?: K8sProbe;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; allowPrivilegeEscalation?: boolean };
}
interface K8sDoc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec: Record<string, unknown>;
}
interface PodSpec {
  terminationGracePeriodSeconds?: number;
  restartPolicy?: string;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  containers: K8sContainer[];
  initContainers?: K8sContainer[];
  volumes?: { name: string; secret?: { secretName: string }; projected?: { sources: { secret?: { name: string } }[] } }[];
}
interface DeploymentSpec {
  selector: { matchLabels: Record<string, string> };
  template: {
    metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
    spec: PodSpec;
  };
}
interface JobSpec {
  backoffLimit?: number;
  template: { spec: PodSpec };
}
interface ScaledObjectSpec {
  scaleTargetRef: { name: string; kind?: string };
  minReplicaCount?: number;
  maxReplicaCount?: number;
  cooldownPeriod?: number;
  advanced?: { horizontalPodAutoscalerConfig?: { behavior?: { scaleDown?: { stabilizationWindowSeconds?: number } } } };
  triggers: { type: string; metadata: Record<string, string>; authenticationRef?: { name: string } }[];
}

const compose = parse(read('docker-compose.yml'), { merge: true }) as Compose;

const k8sFiles = readdirSync(path.join(root, 'infra/k8s')).filter((f) => /\.ya?ml$/.test(f)).sort();
const k8sDocs: K8sDoc[] = k8sFiles.flatMap((file) =>
  parseAllDocuments(read(`infra/k8s/${file}`)).map((doc) => {
    assert.deepEqual(doc.errors, [], `infra/k8s/${file} parses`);
    return doc.toJS() as K8sDoc;
  }),
);
const ofKind = (kind: string) => k8sDocs.filter((d) => d?.kind === kind);
const deployment = (fn: string) => {
  const found = ofKind('Deployment').filter((d) => d.metadata.name === fn);
  assert.equal(found.length, 1, `one Deployment named ${fn} in infra/k8s`);
  return found[0]!.spec as unknown as DeploymentSpec;
};

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  from: string;
  name: string | undefined;
  instructions: Instruction[];
}
/** infra/Dockerfile as stages of instructions (continuations joined, comments dropped). */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!pending && (line === '' || line.startsWith('#'))) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push(pending + line);
    pending = '';
  }
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, op = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    if (op.toUpperCase() === 'FROM') {
      const m = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      assert.ok(m, `FROM ${args}`);
      stages.push({ from: m[1]!, name: m[2], instructions: [] });
    } else if (stages.length) stages.at(-1)!.instructions.push({ op: op.toUpperCase(), args });
  }
  return stages;
}
const stages = parseDockerfile(read('infra/Dockerfile'));
const finalStage = stages.at(-1)!;
const stageNamed = (name: string) => stages.find((s) => s.name === name);
/** The WORKDIR in force at the end of a stage, following `FROM <stage>`. */
const workdirOf = (stage: Stage): string | undefined =>
  stage.instructions.findLast((i) => i.op === 'WORKDIR')?.args ?? (stageNamed(stage.from) ? workdirOf(stageNamed(stage.from)!) : undefined);
const ops = (stage: Stage, op: string) => stage.instructions.filter((i) => i.op === op);
/** The stage that runs build.mjs. */
const builderStage = () => {
  const builder = stages.find((s) => ops(s, 'RUN').some((i) => i.args.includes('build.mjs')));
  assert.ok(builder, 'a stage runs build.mjs');
  return builder;
};
/** A stage and the stages it builds on (FROM <stage>), base first. */
const chainOf = (stage: Stage): Stage[] => (stageNamed(stage.from) ? [...chainOf(stageNamed(stage.from)!), stage] : [stage]);

/** .dockerignore's patterns (no `!` exceptions, which this simulation does not model). */
const dockerignore = existsSync(path.join(root, '.dockerignore'))
  ? read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
  : [];
const ignoredByDocker = (rel: string) =>
  dockerignore.some((p) => rel === p || rel.startsWith(`${p.replace(/\/$/, '')}/`) || path.matchesGlob(rel, p));

/**
 * What `docker build` puts in a stage from the build context: runs the WORKDIR and COPY
 * (not --from) instructions of the stage and those it builds on into `dir`, honouring
 * .dockerignore. Returns the stage's WORKDIR.
 */
function copyBuildContext(stage: Stage, dir: string): string {
  assert.ok(!dockerignore.some((p) => p.startsWith('!')), '.dockerignore has no ! exceptions (not modelled here)');
  let workdir = '/';
  for (const s of chainOf(stage)) {
    for (const i of s.instructions) {
      if (i.op === 'WORKDIR') workdir = path.posix.resolve(workdir, i.args);
      if (i.op !== 'COPY' || /--from=/.test(i.args)) continue;
      assert.ok(!i.args.trim().startsWith('['), `COPY ${i.args}: the shell form (this test reads no JSON form)`);
      const words = i.args.split(/\s+/).filter((w) => w && !w.startsWith('--'));
      const dest = words.pop()!;
      const sources = words.flatMap((w) => {
        const found = /[*?[]/.test(w) ? globSync(w, { cwd: root }).sort() : [w];
        assert.ok(found.length, `COPY ${i.args}: ${w} matches files of the repository`);
        return found;
      });
      const target = path.posix.resolve(workdir, dest);
      const intoDir = dest.endsWith('/') || sources.length > 1 || words.some((w) => /[*?[]/.test(w));
      for (const src of sources) {
        assert.ok(existsSync(path.join(root, src)) && !ignoredByDocker(src), `COPY ${i.args}: ${src} is in the build context`);
        // A directory's contents land in dest; a file lands at dest, or in it when dest is a directory.
        const to = statSync(path.join(root, src)).isDirectory() ? target : intoDir ? path.posix.join(target, path.posix.basename(src)) : target;
        cpSync(path.join(root, src), path.join(dir, to), { recursive: true, filter: (f) => !ignoredByDocker(path.relative(root, f)) });
      }
    }
  }
  return workdir;
}

// --- credentials ------------------------------------------------------------------

/** Variables docker-compose.yml interpolates (`${NAME...}`; `$${...}` is the container's own). */
const interpolated = (value: unknown): Set<string> => new Set([...JSON.stringify(value ?? null).matchAll(/(?<!\$)\$\{(\w+)/g)].map((m) => m[1]!));
/** Names of secrets (passwords, tokens); user names, hosts and databases are not. */
const isSecretVariable = (name: string) => /PASS|TOKEN|SECRET/i.test(name);
/** Who may see each secret variable of docker-compose.yml: the service that owns it, migrate for the administrators' and the functions' passwords. */
const secretReaders: Record<string, string[]> = {
  ...Object.fromEntries(FUNCTIONS.map((fn) => [passwordVariable(fn), [fn, 'migrate']])),
  // The dead-letter operator's password: migrate makes the user, the trigger runs /v1/dlq as it
  // (DLQ_AMQP_URL) on an operator's behalf; no queue function sees it.
  [passwordVariable('dlq')]: ['trigger', 'migrate'],
  // The monitoring operator's: migrate makes the user, the trigger's dashboard reads the management
  // API as it (RABBITMQ_MONITOR_URL); no queue function sees it.
  [passwordVariable('monitor')]: ['trigger', 'migrate'],
  TRIGGER_TOKEN: ['trigger'],
  RABBITMQ_DEFAULT_PASS: ['rabbitmq', 'migrate'],
  MYSQL_ROOT_PASSWORD: ['mysql', 'migrate'],
};
/** The trigger's variables that carry an operator role's credential (infra/access.ts OPERATORS), and the role. */
const OPERATOR_URLS = { DLQ_AMQP_URL: 'dlq', RABBITMQ_MONITOR_URL: 'monitor' } as const;
/** The variables of the migrate step (infra/migrate/index.ts) that hold administrator credentials. */
const ADMIN_VARIABLES = ['MYSQL_ADMIN_URL', 'AMQP_ADMIN_URL', 'RABBITMQ_API_URL'];
/** Environment names only the migrate step may have. */
const isPrivilegedName = (name: string) => ADMIN_VARIABLES.includes(name) || /ADMIN|ROOT|SLUICE_PASSWORD_/.test(name);

/** The pod spec of every workload in infra/k8s (Deployments, Jobs, ...), as `Kind/name`. */
const workloads = () =>
  k8sDocs
    .filter((d) => (d?.spec as { template?: { spec?: PodSpec } } | undefined)?.template?.spec?.containers)
    .map((d) => ({ id: `${d.kind}/${d.metadata.name}`, pod: (d.spec as unknown as { template: { spec: PodSpec } }).template.spec }));
/** The Secrets a pod reads, with the keys it reads from each ('*': all of them, envFrom or a volume). */
function secretsReadBy(pod: PodSpec): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const add = (name: string, key: string) => out.set(name, (out.get(name) ?? new Set()).add(key));
  for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) {
    for (const e of c.env ?? []) if (e.valueFrom?.secretKeyRef) add(e.valueFrom.secretKeyRef.name, e.valueFrom.secretKeyRef.key);
    for (const e of c.envFrom ?? []) if (e.secretRef) add(e.secretRef.name, '*');
  }
  for (const v of pod.volumes ?? []) {
    if (v.secret) add(v.secret.secretName, '*');
    for (const src of v.projected?.sources ?? []) if (src.secret) add(src.secret.name, '*');
  }
  return out;
}

// --- tests -------------------------------------------------------------------------

test('scripts/check-infra.sh passes (yamllint, compose-spec validation)', { timeout: 600_000 }, () => {
  const r = spawnSync('bash', ['scripts/check-infra.sh'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, `scripts/check-infra.sh exited ${r.status ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
});

test('every queue function has a known list of consumed queues, all declared in infra/topology.ts', () => {
  assert.ok(functions.includes('trigger'));
  assert.deepEqual(queueFunctions, functions.filter((fn) => fn !== 'trigger' && !periodicFunctions.includes(fn)), 'every function but the trigger and the periodic ones consumes queues');
  for (const fn of periodicFunctions) assert.match(read(`functions/${fn}/index.ts`), /serveHealth\(/, `${fn} serves /healthz and /metrics`);
  assert.deepEqual(Object.keys(consumed).sort(), queueFunctions, 'the test knows what every queue function consumes');
  for (const [fn, queues] of Object.entries(consumed)) {
    for (const q of queues) assert.ok(topologyQueues.has(q), `${fn} consumes ${q}, which infra/topology.ts declares`);
    // Every queue name a function's config.ts exports is one it consumes.
    const exported = Object.values(configModules[fn]!).filter((v): v is string => typeof v === 'string' && topologyQueues.has(v));
    for (const q of exported) assert.ok(queues.includes(q), `${fn}/config.ts exports queue ${q}, so ${fn} consumes it`);
  }
  // A queue nobody consumes grows without bound.
  assert.deepEqual([...new Set(Object.values(consumed).flat())].sort(), [...topologyQueues].sort(), 'every declared queue has a consumer');
});

test('infra/Dockerfile: builder bundles one function; the final stage is a non-root, bundle-only runtime', () => {
  const builder = stages.find((s) => ops(s, 'RUN').some((i) => i.args.includes('build.mjs')));
  assert.ok(builder, 'a stage runs build.mjs');
  assert.match(ops(builder, 'RUN').map((i) => i.args).join('\n'), /node build\.mjs --no-check "?\$\{?FUNCTION\}?"?/, 'builds only $FUNCTION, without the type-check');
  const chain = [builder];
  while (stageNamed(chain.at(-1)!.from)) chain.push(stageNamed(chain.at(-1)!.from)!);
  assert.ok(chain.some((s) => ops(s, 'RUN').some((i) => /\bnpm ci\b/.test(i.args))), 'the builder installs with npm ci');
  assert.match(chain.at(-1)!.from, /^(\$\{\w+\}|node:24[-\w.]*)$/, 'the builder starts from a Node 24 image');
  assert.ok(ops(builder, 'ARG').some((i) => i.args.startsWith('FUNCTION')), 'builder takes ARG FUNCTION');

  assert.notEqual(finalStage, builder, 'the final stage is not the builder');
  const baseArg = /^\$\{(\w+)\}$/.exec(finalStage.from)?.[1];
  const base = baseArg ? /ARG\s+\w+=(\S+)/.exec(read('infra/Dockerfile').split('\n').find((l) => l.startsWith(`ARG ${baseArg}=`)) ?? '')?.[1] : finalStage.from;
  assert.match(base ?? '', /^node:24[-\w.]*$/, 'the runtime is a Node 24 image');

  const users = ops(finalStage, 'USER');
  assert.ok(users.length, 'final stage sets USER');
  assert.doesNotMatch(users.at(-1)!.args, /^(root|0)(:|$)/, 'final USER is not root');
  const healthcheck = ops(finalStage, 'HEALTHCHECK');
  assert.equal(healthcheck.length, 1, 'final stage has a HEALTHCHECK');
  assert.doesNotMatch(healthcheck[0]!.args, /^NONE/i);
  assert.match(healthcheck[0]!.args, /\/healthz/);
  assert.doesNotMatch(healthcheck[0]!.args, /\b(curl|wget)\b/, 'the healthcheck needs no curl or wget');

  const env = ops(finalStage, 'ENV').map((i) => i.args).join(' ');
  assert.match(env, /\bNODE_ENV=production\b/);
  assert.match(env, /\bHEALTH_PORT=\d+/, 'queue functions get a fixed HEALTH_PORT');

  const cmd = ops(finalStage, 'CMD');
  assert.equal(cmd.length, 1, 'final stage has one CMD');
  const argv = JSON.parse(cmd[0]!.args) as unknown;
  assert.ok(Array.isArray(argv) && argv.every((a) => typeof a === 'string'), 'CMD is exec form (JSON array)');
  // A shell that expands the function's heap flags and hands over to node (exec: node is PID 1, gets SIGTERM).
  assert.deepEqual(argv, ['/bin/sh', '-c', 'exec node $NODE_HEAP_FLAGS --enable-source-maps index.mjs']);
  assert.equal(ops(finalStage, 'ENTRYPOINT').length, 0, 'no ENTRYPOINT wraps node');

  // Only built output reaches the final stage: no node_modules, no sources.
  for (const copy of [...ops(finalStage, 'COPY'), ...ops(finalStage, 'ADD')]) {
    assert.doesNotMatch(copy.args, /node_modules/, `final stage: ${copy.op} ${copy.args}`);
    assert.match(copy.args, /--from=\S+/, `final stage copies from a build stage only: ${copy.op} ${copy.args}`);
  }
});

test('Node\'s memory settings: the image and compose follow infra/node-options.ts', () => {
  const env = ops(finalStage, 'ENV').map((i) => i.args).join(' ');
  assert.ok(ops(finalStage, 'ARG').some((i) => /^NODE_HEAP_FLAGS(=|$)/.test(i.args)), 'the runtime stage takes ARG NODE_HEAP_FLAGS');
  assert.ok(env.includes(`NODE_OPTIONS="${NODE_FLAGS_ALL.join(' ')}"`), `ENV NODE_OPTIONS is ${NODE_FLAGS_ALL.join(' ')}: ${env}`);
  // A function's own flags go on the command line (Node refuses --heap-growing-percent in NODE_OPTIONS).
  assert.ok(env.includes('NODE_HEAP_FLAGS="${NODE_HEAP_FLAGS}"'), `ENV NODE_HEAP_FLAGS from the build argument: ${env}`);
  for (const flags of Object.values(NODE_HEAP_FLAGS)) {
    const refused = spawnSync(process.execPath, ['-e', '0'], { env: { ...process.env, NODE_OPTIONS: flags!.join(' ') }, encoding: 'utf8' });
    if (refused.status !== 0) assert.match(refused.stderr, /not allowed in NODE_OPTIONS/, 'why they are not in NODE_OPTIONS');
    assert.equal(spawnSync(process.execPath, [...flags!, '-e', '0']).status, 0, `node accepts ${flags!.join(' ')} on the command line`);
  }
  for (const [k, v] of Object.entries(MALLOC_ENV)) assert.match(env, new RegExp(`\\b${k}=${v}\\b`), k);
  // Set before the compile cache is filled, so that it is filled with the flags the function runs with.
  const order = finalStage.instructions.map((i) => `${i.op} ${i.args}`);
  assert.ok(order.findIndex((l) => l.includes('NODE_OPTIONS=')) < order.findIndex((l) => l.includes('SLUICE_COMPILE_ONLY=1')));
  for (const fn of FUNCTIONS) {
    const want = (NODE_HEAP_FLAGS[fn] ?? []).join(' ');
    assert.equal(compose.services[fn]!.build?.args?.['NODE_HEAP_FLAGS'] ?? '', want, `compose ${fn}: build arg NODE_HEAP_FLAGS`);
    assert.deepEqual(nodeFlags(fn), [...NODE_FLAGS_ALL, ...(NODE_HEAP_FLAGS[fn] ?? [])]);
  }
});

test('infra/Dockerfile: the image carries Node\'s compile cache of its bundle, filled as the user it runs as, with CMD\'s flags', () => {
  const workdir = workdirOf(finalStage)!;
  const env = ops(finalStage, 'ENV').map((i) => i.args).join(' ');
  const cacheDir = /\bNODE_COMPILE_CACHE=(\S+)/.exec(env)?.[1];
  assert.ok(cacheDir, 'the final stage sets NODE_COMPILE_CACHE');
  assert.ok(!path.posix.relative(workdir, path.posix.resolve(workdir, cacheDir)).startsWith('..'), `NODE_COMPILE_CACHE=${cacheDir} is in the image's WORKDIR ${workdir}`);
  const at = finalStage.instructions.findIndex((i) => i.op === 'RUN' && /\bSLUICE_COMPILE_ONLY=1\b/.test(i.args));
  assert.ok(at >= 0, 'a RUN fills the cache (SLUICE_COMPILE_ONLY=1, shared/compile-only.ts)');
  const [cmd] = ops(finalStage, 'CMD');
  const warm = finalStage.instructions[at]!.args.replace(/^(\w+=\S*\s+)+/, '');
  const run = (JSON.parse(cmd!.args) as string[]).at(-1)!.replace(/^exec /, '');
  assert.equal(warm, run, 'the same command line as CMD (Node keeps a cache per set of flags)');
  // Node keeps a folder per user id: the cache is filled by the user the container runs as.
  const userThen = finalStage.instructions.slice(0, at).findLast((i) => i.op === 'USER')?.args;
  assert.equal(userThen, ops(finalStage, 'USER').at(-1)!.args, 'filled as the final USER');
  const uid = Number(userThen!.split(':')[0]);
  for (const fn of functions) {
    const pod = deployment(fn).template.spec;
    const runAs = pod.containers[0]!.securityContext?.runAsUser ?? pod.securityContext?.runAsUser;
    assert.ok(runAs === undefined || runAs === uid, `${fn}: runAsUser ${runAs} is the image's user ${uid}, whose compile cache the image holds`);
  }
});

test('infra/Dockerfile: every target (each function and migrate) bundles from what the builder stage copies, and migrate runs alone', { timeout: 180_000 }, () => {
  assert.deepEqual([...FUNCTIONS].sort(), functions, 'infra/access.ts lists every function of functions/');
  // The build context as the builder stage sees it; node_modules stands in for its `npm ci`.
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-image-'));
  try {
    const workdir = path.join(dir, copyBuildContext(builderStage(), dir));
    assert.ok(!existsSync(path.join(workdir, 'node_modules')), 'the build context holds no node_modules (.dockerignore)');
    symlinkSync(path.join(root, 'node_modules'), path.join(workdir, 'node_modules'), 'dir');
    const targets = [...functions, 'migrate'];
    // One run for all targets: the builder copies the same files whatever FUNCTION is.
    const built = spawnSync(process.execPath, ['build.mjs', '--no-check', ...targets], { cwd: workdir, encoding: 'utf8' });
    assert.equal(built.status, 0, `node build.mjs in the builder stage's files alone (a file the bundles import is not copied?):\n${built.stdout}\n${built.stderr}`);
    for (const t of targets) assert.ok(existsSync(path.join(workdir, 'dist', t, 'index.mjs')), `dist/${t}/index.mjs`);
    // The trigger's image carries its dashboard page: dist/trigger/ is copied whole.
    const page = JSON.parse(readFileSync(path.join(workdir, 'dist/trigger/dashboard/assets.json'), 'utf8')) as { files: { name: string }[] };
    for (const f of page.files) assert.ok(existsSync(path.join(workdir, 'dist/trigger/dashboard', f.name)), `dist/trigger/dashboard/${f.name}`);
    assert.ok(page.files.some((f) => /^assets\/main-\w+\.js$/.test(f.name)), 'the page\'s script, under a hashed name');

    // The final stage holds dist/migrate/ alone, as its WORKDIR: it starts there and names every missing variable.
    const image = path.join(dir, 'image');
    cpSync(path.join(workdir, 'dist/migrate'), image, { recursive: true });
    const run = spawnSync(process.execPath, ['--enable-source-maps', 'index.mjs'], { cwd: image, env: { PATH: process.env.PATH ?? '' }, encoding: 'utf8', timeout: 30_000 });
    assert.equal(run.status, 78, `the migrate image without its environment exits 78 (EX_CONFIG):\n${run.stdout}\n${run.stderr}`);
    for (const v of [...ADMIN_VARIABLES, ...FUNCTIONS.map(passwordVariable)]) assert.match(run.stderr, new RegExp(`\\b${v}\\b`), `names ${v}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every function has a compose service built from infra/Dockerfile that runs dist/<name>/index.mjs', () => {
  assert.equal(compose.version, undefined, 'no `version:` key (compose spec)');
  // The final stage's CMD runs index.mjs in its WORKDIR, where dist/${FUNCTION}/ of the builder lands.
  const workdir = workdirOf(finalStage);
  assert.ok(workdir, 'final stage has a WORKDIR');
  const bundleCopy = ops(finalStage, 'COPY').find((i) => /dist\/\$\{?FUNCTION\}?\/?\s/.test(i.args));
  assert.ok(bundleCopy, 'final stage copies dist/${FUNCTION}/');
  const [, from, src, dest] = /--from=(\S+)\s+(?:--\S+\s+)*(\S+)\s+(\S+)$/.exec(bundleCopy.args) ?? [];
  const source = stageNamed(from ?? '');
  assert.ok(source, `COPY --from=${from} names a stage`);
  assert.equal(path.posix.resolve(workdirOf(source) ?? '/', src!), path.posix.resolve(workdirOf(source) ?? '/', 'dist/${FUNCTION}'), 'copies the build output dir');
  assert.equal(path.posix.resolve(workdir, dest!), workdir, 'into the WORKDIR, where CMD runs index.mjs');

  // The images build from the repository alone: COPY --from names a build stage, never another build context.
  for (const stage of stages) {
    for (const copy of ops(stage, 'COPY')) {
      const from = /--from=(\S+)/.exec(copy.args)?.[1];
      if (from !== undefined) assert.ok(stageNamed(from), `infra/Dockerfile: COPY --from=${from} names a build stage`);
    }
  }
  for (const fn of functions) {
    const service = compose.services[fn];
    assert.ok(service, `compose service ${fn}`);
    const build = service.build;
    assert.ok(build, `${fn} is built`);
    assert.equal(path.resolve(root, build.context ?? '.', build.dockerfile ?? 'Dockerfile'), path.join(root, 'infra/Dockerfile'), `${fn} builds infra/Dockerfile`);
    assert.equal(build.args?.FUNCTION, fn, `${fn} builds with FUNCTION=${fn}`);
    assert.ok(build.target === undefined || build.target === finalStage.name, `${fn} builds the final stage`);
    assert.equal(build.additional_contexts, undefined, `${fn} builds from the repository alone (no additional build context)`);
    const command = [service.entrypoint ?? [], service.command ?? []].flat().join(' ');
    assert.ok(command === '' || /\bindex\.mjs\b/.test(command), `${fn}: command runs index.mjs (or is the image's CMD)`);
    assert.ok(existsSync(path.join(root, 'dist', fn, 'index.mjs')), `dist/${fn}/index.mjs exists (node build.mjs)`);
    const manifest = JSON.parse(read(`dist/${fn}/manifest.json`)) as { function: string; entry: string };
    assert.deepEqual([manifest.function, manifest.entry], [fn, 'index.mjs']);

    assert.equal(service.restart, 'unless-stopped', `${fn} restart`);
    assert.equal(service.stop_grace_period, '30s', `${fn} stop_grace_period`);
    for (const dep of ['rabbitmq', 'mysql']) assert.equal(service.depends_on?.[dep]?.condition, 'service_healthy', `${fn} waits for ${dep}`);
    assert.equal(service.depends_on?.migrate?.condition, 'service_completed_successfully', `${fn} starts once migrate completed`);
  }
  for (const fn of [...queueFunctions, ...periodicFunctions]) {
    const service = compose.services[fn]!;
    assert.equal(service.container_name, undefined, `${fn} has no container_name (it scales)`);
    assert.equal(service.ports, undefined, `${fn} publishes no host port (it scales)`);
  }
  const trigger = compose.services.trigger!;
  assert.ok(trigger.ports?.some((p) => (typeof p === 'string' ? /:3000$/.test(p) : p.target === 3000)), 'trigger publishes port 3000');
  assert.match(trigger.environment?.TRIGGER_TOKEN ?? '', /^\$\{TRIGGER_TOKEN:\?/, 'trigger gets TRIGGER_TOKEN, required, from .env');
  assert.equal(trigger.environment?.HTTP_HOST, '0.0.0.0', 'trigger listens on all interfaces (its default is loopback)');
  assert.ok(trigger.environment?.LOG_DIR, 'trigger gets LOG_DIR');
  assert.ok(compose.services['notify-email']?.environment?.SES_ENDPOINT?.includes('ses:8005'), 'notify-email sends to the SES emulator');
  assert.equal(compose.services['notify-email']?.depends_on?.ses?.condition, 'service_healthy');
});

test('compose least privilege: each function has its own users and password and no other secret; migrate alone has the administrators', () => {
  const escape = (v: string) => v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  for (const fn of FUNCTIONS) {
    const service = compose.services[fn];
    assert.ok(service, `compose service ${fn}`);
    const env = service.environment ?? {};
    const [user, password] = [userOf(fn), passwordVariable(fn)];
    const own = `\\$\\{${password}:\\?[^}]+\\}`;
    assert.match(env.AMQP_URL ?? '', new RegExp(`^amqp://${escape(user)}:${own}@rabbitmq:5672/?$`), `${fn} AMQP_URL: user ${user}, password \${${password}:?...} (required)`);
    assert.match(env.MYSQL_URL ?? '', new RegExp(`^mysql://${escape(user)}:${own}@mysql:3306/\\$\\{MYSQL_DATABASE:\\?[^}]+\\}$`), `${fn} MYSQL_URL: user ${user}, password \${${password}:?...}`);
    for (const name of Object.keys(env)) assert.ok(!isPrivilegedName(name), `${fn} has no administrator variable or password variable (${name})`);
    assert.equal(service.env_file, undefined, `${fn}: no env_file (it would hand every .env password to the function)`);
    assert.equal(service.secrets, undefined, `${fn}: no compose secrets`);
  }
  // Every secret variable reaches only the services allowed to see it.
  for (const [name, service] of Object.entries(compose.services)) {
    for (const v of interpolated(service)) {
      if (!isSecretVariable(v)) continue;
      assert.ok(secretReaders[v], `${name} uses \${${v}}, a secret this test does not know: add it to secretReaders`);
      assert.ok(secretReaders[v].includes(name), `${name} may not see \${${v}} (only ${secretReaders[v].join(', ')})`);
    }
  }
  // The operator roles' URLs: the trigger's only, each its role's own user and password.
  assert.deepEqual(Object.keys(OPERATOR_URLS).map((k) => OPERATOR_URLS[k as keyof typeof OPERATOR_URLS]).sort(), [...OPERATORS].sort(), 'the test knows every operator role\'s URL');
  const triggerEnv = compose.services.trigger?.environment ?? {};
  const opPassword = (op: (typeof OPERATORS)[number]) => `\\$\\{${passwordVariable(op)}:\\?[^}]+\\}`;
  assert.match(triggerEnv.DLQ_AMQP_URL ?? '', new RegExp(`^amqp://${escape(userOf('dlq'))}:${opPassword('dlq')}@rabbitmq:5672/?$`), 'trigger DLQ_AMQP_URL: sluice_dlq');
  assert.match(triggerEnv.RABBITMQ_MONITOR_URL ?? '', new RegExp(`^http://${escape(userOf('monitor'))}:${opPassword('monitor')}@rabbitmq:15672/?$`), 'trigger RABBITMQ_MONITOR_URL: the management API as sluice_monitor');
  for (const [name, service] of Object.entries(compose.services)) {
    if (name === 'trigger') continue;
    for (const key of Object.keys(OPERATOR_URLS)) assert.equal(service.environment?.[key], undefined, `${name} has no ${key}`);
  }

  const migrate = compose.services.migrate;
  assert.ok(migrate, 'a compose service migrate');
  assert.equal(path.resolve(root, migrate.build?.context ?? '.', migrate.build?.dockerfile ?? 'Dockerfile'), path.join(root, 'infra/Dockerfile'), 'migrate builds infra/Dockerfile');
  assert.equal(migrate.build?.args?.FUNCTION, 'migrate', 'migrate builds with FUNCTION=migrate');
  assert.ok(migrate.build?.target === undefined || migrate.build.target === finalStage.name, 'migrate builds the final stage');
  assert.ok(existsSync(path.join(root, 'dist/migrate/index.mjs')), 'dist/migrate/index.mjs exists (node build.mjs)');
  assert.equal(migrate.restart, 'no', 'migrate runs once (restart: "no")');
  for (const dep of ['rabbitmq', 'mysql']) assert.equal(migrate.depends_on?.[dep]?.condition, 'service_healthy', `migrate waits for ${dep}`);
  assert.equal(migrate.ports, undefined, 'migrate publishes no port');
  assert.equal(migrate.env_file, undefined, 'migrate: no env_file');
  assert.ok(migrate.healthcheck?.disable === true, "migrate disables the image's HEALTHCHECK (it serves no /healthz)");
  const env = migrate.environment ?? {};
  assert.match(env.MYSQL_ADMIN_URL ?? '', /^mysql:\/\/root:\$\{MYSQL_ROOT_PASSWORD:\?[^}]+\}@mysql:3306\/\$\{MYSQL_DATABASE:\?[^}]+\}$/, 'MYSQL_ADMIN_URL: root on the functions\' database');
  assert.match(env.AMQP_ADMIN_URL ?? '', /^amqp:\/\/\$\{RABBITMQ_DEFAULT_USER:\?[^}]+\}:\$\{RABBITMQ_DEFAULT_PASS:\?[^}]+\}@rabbitmq:5672\/?$/, 'AMQP_ADMIN_URL: the broker\'s administrator, on the functions\' vhost');
  assert.match(env.RABBITMQ_API_URL ?? '', /^http:\/\/\$\{RABBITMQ_DEFAULT_USER:\?[^}]+\}:\$\{RABBITMQ_DEFAULT_PASS:\?[^}]+\}@rabbitmq:15672\/?$/, 'RABBITMQ_API_URL: the management API as the administrator');
  for (const fn of FUNCTIONS) assert.match(env[passwordVariable(fn)] ?? '', new RegExp(`^\\$\\{${passwordVariable(fn)}:\\?[^}]+\\}$`), `migrate gets ${passwordVariable(fn)}, the password in ${fn}'s URLs`);
  for (const op of OPERATORS) assert.match(env[passwordVariable(op)] ?? '', new RegExp(`^\\$\\{${passwordVariable(op)}:\\?[^}]+\\}$`), `migrate gets ${passwordVariable(op)}, the operator role ${userOf(op)}'s password`);
  for (const name of ['AMQP_URL', 'MYSQL_URL', 'TRIGGER_TOKEN']) assert.equal(env[name], undefined, `migrate has no ${name}`);
  assert.match(compose.services.rabbitmq?.image ?? '', /-management/, 'the broker has the management API migrate uses');
  // Only migrate, and the services that own them, see the administrators' credentials.
  for (const [name, service] of Object.entries(compose.services)) {
    if (name === 'migrate') continue;
    for (const key of Object.keys(service.environment ?? {})) assert.ok(!ADMIN_VARIABLES.includes(key), `${name} has no ${key}`);
  }
});

test('compose infrastructure: RabbitMQ with the consistent-hash plugin, MySQL 8.4, the SES emulator, all health-checked', () => {
  const { rabbitmq, mysql, ses } = compose.services;
  assert.ok(rabbitmq && mysql && ses);
  assert.match(rabbitmq.image ?? '', /^rabbitmq:(3\.13|4\.\d+)-management/);
  assert.match([rabbitmq.command ?? []].flat().join(' '), /rabbitmq-plugins enable .*rabbitmq_consistent_hash_exchange.*exec docker-entrypoint\.sh rabbitmq-server/);
  assert.match(rabbitmq.environment?.RABBITMQ_DEFAULT_USER ?? '', /^\$\{RABBITMQ_DEFAULT_USER/, 'RabbitMQ user from .env');
  assert.match(rabbitmq.environment?.RABBITMQ_DEFAULT_PASS ?? '', /^\$\{RABBITMQ_DEFAULT_PASS/, 'RabbitMQ password from .env');
  // Healthy when migrate can work: the AMQP listener and the management API are both up.
  const rabbitCheck = [rabbitmq.healthcheck?.test ?? []].flat().join(' ');
  for (const port of [5672, 15672]) assert.match(rabbitCheck, new RegExp(`rabbitmq-diagnostics -q check_port_listener ${port}\\b`), `the RabbitMQ healthcheck waits for port ${port}`);
  assert.equal(mysql.image, 'mysql:8.4');
  for (const v of ['MYSQL_DATABASE', 'MYSQL_ROOT_PASSWORD']) assert.match(mysql.environment?.[v] ?? '', new RegExp(`^\\$\\{${v}`), `${v} from .env`);
  // The image's MYSQL_USER would own the whole database: no function needs such a user any more.
  for (const v of ['MYSQL_USER', 'MYSQL_PASSWORD']) assert.equal(mysql.environment?.[v], undefined, `mysql: no ${v} (an all-powerful application user)`);
  assert.match([mysql.healthcheck?.test ?? []].flat().join(' '), /mysqladmin ping .*-u root/);
  // InnoDB's memory as scripts/services.sh gives the local MariaDB, in MySQL 8.4's own option names.
  const mysqlArgs = [mysql.command ?? []].flat().join(' ');
  assert.match(mysqlArgs, /--innodb-buffer-pool-size=2G\b/, 'mysql: a 2 GiB buffer pool');
  assert.match(mysqlArgs, /--innodb-redo-log-capacity=1G\b/, 'mysql: a redo log of 1 GiB (innodb_log_file_size is deprecated in 8.4)');
  assert.match([ses.healthcheck?.test ?? []].flat().join(' '), /:8005\/health-check/);
  assert.equal(ses.build?.target, 'ses-emulator');
  assert.ok(stageNamed('ses-emulator'), 'infra/Dockerfile has the ses-emulator stage');
});

test('.env.example names and explains every variable docker-compose.yml uses', () => {
  const used = new Set([...read('docker-compose.yml').matchAll(/(?<!\$)\$\{(\w+)/g)].map((m) => m[1]!));
  const lines = read('.env.example').split('\n');
  const defined = new Map<string, number>();
  lines.forEach((line, i) => {
    const m = /^(\w+)=/.exec(line);
    if (m) defined.set(m[1]!, i);
  });
  assert.ok(used.has('TRIGGER_TOKEN'));
  for (const name of used) {
    assert.ok(defined.has(name), `.env.example sets ${name}`);
    assert.match(lines[defined.get(name)! - 1] ?? '', /^#\s*\S/, `.env.example explains ${name} in a comment above it`);
  }
  for (const name of defined.keys()) assert.ok(used.has(name), `.env.example's ${name} is used by docker-compose.yml`);
  assert.doesNotMatch(read('.env.example'), /=guest$/m, 'no guest credentials');
});

test('every function has a Kubernetes Deployment: probes, resources, secrets, graceful stop, non-root', () => {
  for (const fn of functions) {
    const spec = deployment(fn);
    const pod = spec.template.spec;
    assert.deepEqual(spec.template.metadata.labels, { ...spec.template.metadata.labels, ...spec.selector.matchLabels }, `${fn}: selector matches the pod labels`);
    assert.equal(pod.terminationGracePeriodSeconds, 30, `${fn} terminationGracePeriodSeconds`);
    assert.equal(pod.containers.length, 1);
    const c = pod.containers[0]!;
    assert.match(c.image, new RegExp(`(^|/)sluice/${fn}:`), `${fn} image name`);
    assert.ok(pod.securityContext?.runAsNonRoot === true || c.securityContext?.runAsNonRoot === true, `${fn} runAsNonRoot`);
    for (const kind of ['requests', 'limits'] as const) {
      assert.ok(c.resources?.[kind]?.cpu && c.resources[kind].memory, `${fn} resources.${kind} cpu and memory`);
    }
    const env = new Map((c.env ?? []).map((e) => [e.name, e]));
    const secrets = fn === 'trigger' ? ['AMQP_URL', 'MYSQL_URL', 'TRIGGER_TOKEN', ...Object.keys(OPERATOR_URLS)] : ['AMQP_URL', 'MYSQL_URL'];
    for (const key of secrets) assert.deepEqual(env.get(key)?.valueFrom?.secretKeyRef, { name: `sluice-${fn}`, key }, `${fn} ${key} from its own Secret sluice-${fn}`);
    if (fn !== 'trigger') for (const key of ['TRIGGER_TOKEN', ...Object.keys(OPERATOR_URLS)]) assert.ok(!env.has(key), `${fn} has no ${key}`);
    for (const name of env.keys()) assert.ok(!isPrivilegedName(name), `${fn} has no administrator variable or password variable (${name})`);
    assert.deepEqual(c.envFrom ?? [], [], `${fn}: no envFrom (every variable named)`);
    const port = fn === 'trigger' ? Number(env.get('HTTP_PORT')?.value ?? 3000) : Number(env.get('HEALTH_PORT')?.value);
    assert.ok(port > 0, `${fn} has a fixed health port`);
    for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe'] as const) {
      if (probe === 'startupProbe' && !c[probe]) continue; // optional
      const get = c[probe]?.httpGet;
      assert.equal(get?.path, '/healthz', `${fn} ${probe} on /healthz`);
      const probePort = typeof get?.port === 'string' ? c.ports?.find((p) => p.name === get.port)?.containerPort : get?.port;
      assert.equal(probePort, port, `${fn} ${probe} on the port it serves /healthz on`);
    }
  }
  const trigger = deployment('trigger');
  const triggerEnv = new Map((trigger.template.spec.containers[0]!.env ?? []).map((e) => [e.name, e.value]));
  assert.equal(triggerEnv.get('HTTP_HOST'), '0.0.0.0', 'the trigger listens on all interfaces (its default is loopback), so the Service reaches it');
  // Annotation-based scraping sends no bearer token, and the trigger's /metrics requires one.
  assert.notEqual(trigger.template.metadata.annotations?.['prometheus.io/scrape'], 'true', 'no prometheus.io/scrape on the trigger: its /metrics needs the bearer token');
  const services = ofKind('Service').filter((s) => s.metadata.name === 'trigger');
  assert.equal(services.length, 1, 'a Service for the trigger');
  const selector = services[0]!.spec.selector as Record<string, string>;
  const labels = deployment('trigger').template.metadata.labels;
  for (const [k, v] of Object.entries(selector)) assert.equal(labels[k], v, 'the Service selects the trigger pods');
});

test('every queue function has a KEDA ScaledObject on exactly the queues it consumes', () => {
  const scaled = ofKind('ScaledObject');
  for (const so of scaled) assert.equal(so.apiVersion, 'keda.sh/v1alpha1');
  assert.ok(!scaled.some((so) => (so.spec as unknown as ScaledObjectSpec).scaleTargetRef.name === 'trigger'), 'the trigger is not queue-scaled');
  for (const fn of queueFunctions) {
    const mine = scaled.filter((so) => (so.spec as unknown as ScaledObjectSpec).scaleTargetRef.name === fn);
    assert.equal(mine.length, 1, `one ScaledObject for ${fn}`);
    const spec = mine[0]!.spec as unknown as ScaledObjectSpec;
    assert.ok(spec.scaleTargetRef.kind === undefined || spec.scaleTargetRef.kind === 'Deployment');
    assert.ok(Number.isInteger(spec.minReplicaCount) && Number.isInteger(spec.maxReplicaCount), `${fn} min/max replicas`);
    assert.ok(spec.minReplicaCount! >= 1 && spec.minReplicaCount! <= spec.maxReplicaCount!, `${fn} 1 <= min <= max`);
    // A scale-in never comes sooner than a batch can end: the pod drains within SHUTDOWN_TIMEOUT_S,
    // inside its grace period, and the HPA waits longer than that before it scales in.
    const pod = deployment(fn).template.spec;
    const shutdown = Number(pod.containers[0]!.env?.find((e) => e.name === 'SHUTDOWN_TIMEOUT_S')?.value);
    assert.ok(shutdown > 0 && shutdown < pod.terminationGracePeriodSeconds!, `${fn}: SHUTDOWN_TIMEOUT_S (${shutdown}) < terminationGracePeriodSeconds`);
    const window = spec.advanced?.horizontalPodAutoscalerConfig?.behavior?.scaleDown?.stabilizationWindowSeconds;
    assert.ok(window !== undefined && window > shutdown && (spec.cooldownPeriod ?? 300) > shutdown, `${fn}: scale-down stabilization window and cooldownPeriod exceed the longest batch`);
    const queues = spec.triggers.map((t) => {
      assert.equal(t.type, 'rabbitmq', `${fn} trigger type`);
      assert.equal(t.metadata.mode, 'QueueLength', `${fn} trigger mode`);
      assert.match(t.metadata.value ?? '', /^\d+$/, `${fn} trigger value`);
      assert.ok(topologyQueues.has(t.metadata.queueName ?? ''), `${fn} scales on ${t.metadata.queueName}, declared in infra/topology.ts`);
      // Over http, QueueLength counts ready + unacknowledged messages (over amqp: ready only), so a
      // batch held by a consumer keeps its replica; it reads as sluice_monitor (figures only).
      assert.equal(t.metadata.protocol, 'http', `${fn}: protocol http (counts unacknowledged messages too)`);
      assert.notEqual(t.metadata.excludeUnacknowledged, 'true', `${fn}: unacknowledged messages counted`);
      assert.equal(t.metadata.hostFromEnv, undefined, `${fn}: not the function's own AMQP user`);
      assert.equal(t.authenticationRef?.name, 'sluice-rabbitmq-monitor', `${fn}: KEDA reads the management API as sluice_monitor`);
      return t.metadata.queueName;
    });
    assert.equal(new Set(queues).size, queues.length, `${fn}: no queue twice`);
    assert.deepEqual([...queues].sort(), [...consumed[fn]!].sort(), `${fn} scales on exactly the queues it consumes`);
  }
  for (const fn of periodicFunctions) {
    assert.ok(!scaled.some((so) => (so.spec as unknown as ScaledObjectSpec).scaleTargetRef.name === fn), `${fn} consumes no queue: no ScaledObject`);
    assert.ok(Number.isInteger((deployment(fn) as unknown as { replicas?: number }).replicas), `${fn} has a fixed replica count`);
  }
  const auths = ofKind('TriggerAuthentication');
  assert.deepEqual(auths.map((a) => [a.apiVersion, a.metadata.name]), [['keda.sh/v1alpha1', 'sluice-rabbitmq-monitor']], 'one TriggerAuthentication');
  assert.deepEqual(auths[0]!.spec, { secretTargetRef: [{ parameter: 'host', name: 'sluice-keda', key: 'host' }] }, 'its host from Secret sluice-keda, nothing else');
  const analytics = scaled.find((so) => (so.spec as unknown as ScaledObjectSpec).scaleTargetRef.name === 'ev-analytics')!.spec as unknown as ScaledObjectSpec;
  assert.ok(analytics.maxReplicaCount! <= EV_PARTITIONS, 'no more ev-analytics replicas than partitions (single active consumer)');
});

test('infra/k8s/kustomization.yaml applies every manifest and names every image', () => {
  const kustomization = parse(read('infra/k8s/kustomization.yaml')) as { resources: string[]; images?: { name: string }[] };
  assert.deepEqual([...kustomization.resources].sort(), k8sFiles.filter((f) => f !== 'kustomization.yaml'));
  const jobFiles = k8sFiles.filter((f) => parseAllDocuments(read(`infra/k8s/${f}`)).some((d) => (d.toJS() as K8sDoc | null)?.kind === 'Job'));
  assert.ok(jobFiles.length && jobFiles.every((f) => kustomization.resources.includes(f)), 'the Job sluice-migrate is applied');
  const named = new Set((kustomization.images ?? []).map((i) => i.name));
  for (const { id, pod } of workloads()) {
    for (const c of pod.containers) assert.ok(named.has(c.image.replace(/[:@].*$/, '')), `${id}: image ${c.image} has an entry in kustomization.yaml's images`);
  }
  assert.ok(named.has('sluice/migrate'), 'kustomization.yaml names the image sluice/migrate');
});

test('Kubernetes least privilege: one Secret per function, read only by its Deployment; the Job sluice-migrate alone reads the administrators\'', () => {
  // Secret -> the workloads that read it.
  const readers = new Map<string, string[]>();
  for (const { id, pod } of workloads()) {
    for (const name of secretsReadBy(pod).keys()) readers.set(name, [...(readers.get(name) ?? []), id].sort());
  }
  const expected = new Map<string, string[]>([
    ...FUNCTIONS.map((fn) => [`sluice-${fn}`, [`Deployment/${fn}`]] as [string, string[]]),
    ['sluice-migrate', ['Job/sluice-migrate']],
  ]);
  assert.deepEqual(new Map([...readers].sort()), new Map([...expected].sort()), 'each Secret is read by exactly its own workload');

  const jobs = ofKind('Job');
  assert.deepEqual(jobs.map((j) => j.metadata.name), ['sluice-migrate'], 'one Job, sluice-migrate');
  const job = jobs[0]!.spec as unknown as JobSpec;
  const pod = job.template.spec;
  assert.ok(['Never', 'OnFailure'].includes(pod.restartPolicy ?? ''), 'the Job\'s pods run to completion (restartPolicy Never or OnFailure)');
  assert.ok((job.backoffLimit ?? 6) >= 1, 'a failed attempt is retried (the database or broker may still be starting)');
  assert.equal(pod.containers.length, 1);
  const c = pod.containers[0]!;
  assert.match(c.image, /(^|\/)sluice\/migrate:/, 'the Job runs the image sluice/migrate');
  assert.ok(pod.securityContext?.runAsNonRoot === true || c.securityContext?.runAsNonRoot === true, 'the Job runs as non-root');
  for (const kind of ['requests', 'limits'] as const) assert.ok(c.resources?.[kind]?.cpu && c.resources[kind].memory, `the Job's resources.${kind}`);
  const env = new Map((c.env ?? []).map((e) => [e.name, e]));
  for (const name of [...ADMIN_VARIABLES, ...FUNCTIONS.map(passwordVariable), ...OPERATORS.map(passwordVariable)]) {
    assert.deepEqual(env.get(name)?.valueFrom?.secretKeyRef, { name: 'sluice-migrate', key: name }, `the Job's ${name} from the Secret sluice-migrate`);
  }
  for (const name of ['AMQP_URL', 'MYSQL_URL', 'TRIGGER_TOKEN']) assert.ok(!env.has(name), `the Job has no ${name}`);

  // The old shared Secret, which handed every function every credential, is gone.
  for (const file of [...k8sFiles.map((f) => `infra/k8s/${f}`), 'infra/k8s/README.md', 'docker-compose.yml', '.env.example']) {
    assert.doesNotMatch(read(file), /sluice-secrets/, `${file} mentions no sluice-secrets`);
  }
});

test('infra/k8s/create-secrets.sh: the Secrets the manifests and KEDA read, own users and passwords, kept on a re-run', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sluice-secrets-'));
  try {
    // A stand-in for kubectl: `create --dry-run=client` prints, `apply -f -` stores, `get` reads back.
    mkdirSync(path.join(dir, 'bin'));
    writeFileSync(
      path.join(dir, 'bin/kubectl'),
      `#!/usr/bin/env bash
set -euo pipefail
state=$KUBECTL_STUB
printf '%s\\n' "$*" >>"$state/argv"
ns=default; verb=; kind=; name=; file=; jsonpath=; dry=
while [ $# -gt 0 ]; do
  case $1 in
    -n) ns=$2; shift ;;
    --from-env-file=*) file=\${1#*=} ;;
    --dry-run=client) dry=1 ;;
    -o) [ "$2" = yaml ] || jsonpath=$2; shift ;;
    -f) shift ;;
    get|create|apply) verb=$1 ;;
    generic) ;;
    *) if [ -z "$kind" ] && [ "$verb" != apply ]; then kind=$1; elif [ -z "$name" ]; then name=$1; fi ;;
  esac
  shift
done
case $verb in
  get)
    key=\${jsonpath#jsonpath=\\{.data.}; key=\${key%\\}}
    [ -f "$state/$ns/$name/$key" ] || { echo "Error from server (NotFound): secrets \\"$name\\" not found" >&2; exit 1; }
    base64 <"$state/$ns/$name/$key" | tr -d '\\n' ;;
  create)
    [ -n "$dry" ] || { echo "stub: create without --dry-run=client" >&2; exit 2; }
    echo "$kind $name"
    if [ -n "$file" ]; then cat "$file"; fi ;;
  apply)
    read -r kind name
    echo "$ns $kind $name" >>"$state/applied"
    if [ "$kind" = secret ]; then
      rm -rf "\${state:?}/$ns/$name"; mkdir -p "$state/$ns/$name"
      while IFS= read -r line; do printf '%s' "\${line#*=}" >"$state/$ns/$name/\${line%%=*}"; done
    fi
    echo "$kind/$name configured" ;;
  *) echo "stub: unexpected kubectl $verb" >&2; exit 2 ;;
esac
`,
    );
    chmodSync(path.join(dir, 'bin/kubectl'), 0o755);
    const state = path.join(dir, 'state');
    mkdirSync(state);
    const admin = {
      MYSQL_ADMIN_URL: 'mysql://root:r00t%40pw@db.example:3306/sluice_prod?ssl=true',
      AMQP_ADMIN_URL: 'amqp://admin:adminpw@mq.example:5672/sluice',
      RABBITMQ_API_URL: 'http://admin:adminpw@mq.example:15672',
    };
    const run = (extra: Record<string, string> = {}) =>
      spawnSync('bash', ['infra/k8s/create-secrets.sh'], {
        cwd: root,
        encoding: 'utf8',
        env: { PATH: `${path.join(dir, 'bin')}:${process.env.PATH}`, KUBECTL_STUB: state, ...admin, ...extra },
      });
    const secrets = () => {
      const ns = path.join(state, 'sluice');
      return new Map(
        readdirSync(ns).sort().map((name) => [name, Object.fromEntries(readdirSync(path.join(ns, name)).sort().map((k) => [k, readFileSync(path.join(ns, name, k), 'utf8')]))]),
      );
    };

    const missing = spawnSync('bash', ['infra/k8s/create-secrets.sh'], { cwd: root, encoding: 'utf8', env: { PATH: `${path.join(dir, 'bin')}:${process.env.PATH}`, KUBECTL_STUB: state } });
    assert.notEqual(missing.status, 0, 'without the administrators\' URLs it stops');
    assert.match(missing.stderr, /MYSQL_ADMIN_URL is required/);

    const first = run();
    assert.equal(first.status, 0, `create-secrets.sh:\n${first.stdout}\n${first.stderr}`);
    assert.match(read(path.relative(root, path.join(state, 'applied'))), /^default namespace sluice$/m, 'it creates the namespace');
    const made = secrets();
    assert.deepEqual([...made.keys()], [...FUNCTIONS.map((fn) => `sluice-${fn}`), 'sluice-keda', 'sluice-migrate'].sort(), 'one Secret per function, KEDA\'s and the Job\'s');
    const migrate = made.get('sluice-migrate')!;
    assert.deepEqual(Object.keys(migrate).sort(), [...ADMIN_VARIABLES, ...FUNCTIONS.map(passwordVariable), ...OPERATORS.map(passwordVariable)].sort(), 'sluice-migrate: the administrators\' URLs and every password');
    for (const v of ADMIN_VARIABLES) assert.equal(migrate[v], admin[v as keyof typeof admin], `sluice-migrate ${v} as given`);
    const passwords = FUNCTIONS.map((fn) => migrate[passwordVariable(fn)]!);
    for (const p of passwords) assert.match(p, /^[A-Za-z0-9._~-]{12,128}$/, 'a password the migrate step accepts');
    assert.equal(new Set(passwords).size, passwords.length, 'one password per function');
    for (const fn of FUNCTIONS) {
      const own = made.get(`sluice-${fn}`)!;
      assert.deepEqual(Object.keys(own).sort(), fn === 'trigger' ? ['AMQP_URL', 'DLQ_AMQP_URL', 'MYSQL_URL', 'RABBITMQ_MONITOR_URL', 'TRIGGER_TOKEN'] : ['AMQP_URL', 'MYSQL_URL'], `sluice-${fn} keys`);
      for (const [key, adminKey] of [['AMQP_URL', 'AMQP_ADMIN_URL'], ['MYSQL_URL', 'MYSQL_ADMIN_URL']] as const) {
        const url = new URL(own[key]!);
        const base = new URL(admin[adminKey]);
        assert.deepEqual([url.username, url.password], [userOf(fn), migrate[passwordVariable(fn)]], `sluice-${fn} ${key}: its own user and password`);
        assert.deepEqual([url.protocol, url.host, url.pathname, url.search], [base.protocol, base.host, base.pathname, base.search], `sluice-${fn} ${key}: the administrator's host, database or vhost, options`);
      }
    }
    assert.ok((made.get('sluice-trigger')!.TRIGGER_TOKEN ?? '').length >= 24, 'a generated trigger token');
    // The dead-letter operator: its own user and password, in the trigger's Secret only.
    const dlqPassword = migrate[passwordVariable('dlq')]!;
    assert.match(dlqPassword, /^[A-Za-z0-9._~-]{12,128}$/);
    assert.ok(!passwords.includes(dlqPassword), 'not a function\'s password');
    const dlqUrl = new URL(made.get('sluice-trigger')!.DLQ_AMQP_URL!);
    assert.deepEqual([dlqUrl.username, dlqUrl.password, dlqUrl.host, dlqUrl.pathname], [userOf('dlq'), dlqPassword, 'mq.example:5672', '/sluice'], 'sluice-trigger DLQ_AMQP_URL: sluice_dlq on the administrator\'s broker and vhost');
    // The monitoring operator: the management API of RABBITMQ_API_URL as sluice_monitor, in the trigger's Secret only.
    const monitorPassword = migrate[passwordVariable('monitor')]!;
    assert.match(monitorPassword, /^[A-Za-z0-9._~-]{12,128}$/);
    assert.ok(![...passwords, dlqPassword].includes(monitorPassword), 'not another user\'s password');
    const monitorUrl = new URL(made.get('sluice-trigger')!.RABBITMQ_MONITOR_URL!);
    assert.deepEqual([monitorUrl.protocol, monitorUrl.username, monitorUrl.password, monitorUrl.host], ['http:', userOf('monitor'), monitorPassword, 'mq.example:15672'], 'sluice-trigger RABBITMQ_MONITOR_URL: sluice_monitor on the administrator\'s management API');
    // KEDA's triggers: the management API as sluice_monitor, the administrators' vhost as the path.
    assert.deepEqual(made.get('sluice-keda'), { host: `http://${userOf('monitor')}:${monitorPassword}@mq.example:15672/sluice` }, 'sluice-keda: host = the management API as sluice_monitor, on vhost sluice');
    const argv = read(path.relative(root, path.join(state, 'argv')));
    for (const secret of [...passwords, dlqPassword, monitorPassword, made.get('sluice-trigger')!.TRIGGER_TOKEN!]) assert.ok(!argv.includes(secret), 'no password or token on a command line');

    // Every Secret key the manifests read exists.
    for (const { id, pod } of workloads()) {
      for (const [name, keys] of secretsReadBy(pod)) {
        for (const key of keys) if (key !== '*') assert.ok(made.get(name)?.[key] !== undefined, `${id} reads ${name}/${key}, which create-secrets.sh makes`);
      }
    }

    for (const auth of ofKind('TriggerAuthentication')) {
      for (const ref of (auth.spec as { secretTargetRef: { name: string; key: string }[] }).secretTargetRef) assert.ok(made.get(ref.name)?.[ref.key] !== undefined, `TriggerAuthentication/${auth.metadata.name} reads ${ref.name}/${ref.key}, which create-secrets.sh makes`);
    }

    const again = run();
    assert.equal(again.status, 0, again.stderr);
    assert.deepEqual(secrets(), made, 'a re-run keeps the passwords and the token');
    const rotated = run({ ROTATE: '1' });
    assert.equal(rotated.status, 0, rotated.stderr);
    const fresh = secrets();
    for (const fn of FUNCTIONS) {
      const pw = fresh.get('sluice-migrate')![passwordVariable(fn)]!;
      assert.notEqual(pw, migrate[passwordVariable(fn)], `ROTATE=1: a new password for ${fn}`);
      assert.equal(new URL(fresh.get(`sluice-${fn}`)!.MYSQL_URL!).password, pw, `ROTATE=1: ${fn}'s URLs carry its new password`);
    }
    assert.notEqual(fresh.get('sluice-migrate')![passwordVariable('dlq')], dlqPassword, 'ROTATE=1: a new password for sluice_dlq');
    assert.equal(new URL(fresh.get('sluice-trigger')!.DLQ_AMQP_URL!).password, fresh.get('sluice-migrate')![passwordVariable('dlq')], 'ROTATE=1: DLQ_AMQP_URL carries it');
    assert.notEqual(fresh.get('sluice-migrate')![passwordVariable('monitor')], monitorPassword, 'ROTATE=1: a new password for sluice_monitor');
    assert.equal(new URL(fresh.get('sluice-trigger')!.RABBITMQ_MONITOR_URL!).password, fresh.get('sluice-migrate')![passwordVariable('monitor')], 'ROTATE=1: RABBITMQ_MONITOR_URL carries it');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
