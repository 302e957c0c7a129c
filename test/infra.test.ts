// The deployment files (infra/Dockerfile, docker-compose.yml, .env.example,
// infra/k8s) against the code: every function is built, run, probed and (for
// queue functions) scaled on exactly the queues it consumes. Needs `node
// build.mjs` first (npm test builds before it runs the tests).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { EV_PARTITIONS, evAnalyticsQueue, topology } from '../infra/topology.ts';
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

/** What each queue function consumes, from the constants its index.ts passes to consume(). */
const consumed: Record<string, string[]> = {
  'log-lake': [logLakeConfig.QUEUE],
  'log-clean': [logCleanConfig.QUEUE],
  'ev-analytics': Array.from({ length: EV_PARTITIONS }, (_, p) => evAnalyticsQueue(p)),
  'ev-store': [evStoreConfig.READINGS_QUEUE, evStoreConfig.EVENTS_QUEUE],
  'notify-email': [notifyEmailConfig.QUEUE],
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
  depends_on?: Record<string, { condition?: string }>;
  restart?: string;
  stop_grace_period?: string;
  healthcheck?: { test?: string | string[] };
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
  resources?: { requests?: { cpu?: string; memory?: string }; limits?: { cpu?: string; memory?: string } };
  livenessProbe?: K8sProbe;
  readinessProbe?: K8sProbe;
  startupProbe?: K8sProbe;
  securityContext?: { runAsNonRoot?: boolean; allowPrivilegeEscalation?: boolean };
}
interface K8sDoc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec: Record<string, unknown>;
}
interface DeploymentSpec {
  selector: { matchLabels: Record<string, string> };
  template: {
    metadata: { labels: Record<string, string> };
    spec: { terminationGracePeriodSeconds?: number; securityContext?: { runAsNonRoot?: boolean; runAsUser?: number }; containers: K8sContainer[] };
  };
}
interface ScaledObjectSpec {
  scaleTargetRef: { name: string; kind?: string };
  minReplicaCount?: number;
  maxReplicaCount?: number;
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

// --- tests -------------------------------------------------------------------------

test('scripts/check-infra.sh passes (yamllint, compose-spec validation)', { timeout: 600_000 }, () => {
  const r = spawnSync('bash', ['scripts/check-infra.sh'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, `scripts/check-infra.sh exited ${r.status ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
});

test('every queue function has a known list of consumed queues, all declared in infra/topology.ts', () => {
  assert.ok(functions.includes('trigger'));
  assert.deepEqual(queueFunctions, functions.filter((fn) => fn !== 'trigger'), 'every function but the trigger consumes queues');
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
  assert.deepEqual(argv, ['node', '--enable-source-maps', 'index.mjs']);
  assert.equal(ops(finalStage, 'ENTRYPOINT').length, 0, 'no ENTRYPOINT wraps node');

  // Only built output reaches the final stage: no node_modules, no sources.
  for (const copy of [...ops(finalStage, 'COPY'), ...ops(finalStage, 'ADD')]) {
    assert.doesNotMatch(copy.args, /node_modules/, `final stage: ${copy.op} ${copy.args}`);
    assert.match(copy.args, /--from=\S+/, `final stage copies from a build stage only: ${copy.op} ${copy.args}`);
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
    assert.match(service.environment?.AMQP_URL ?? '', /^amqp:\/\/\$\{RABBITMQ_DEFAULT_USER[^}]*\}:\$\{RABBITMQ_DEFAULT_PASS[^}]*\}@rabbitmq:5672/, `${fn} AMQP_URL`);
    assert.match(service.environment?.MYSQL_URL ?? '', /^mysql:\/\/\$\{MYSQL_USER[^}]*\}:\$\{MYSQL_PASSWORD[^}]*\}@mysql:3306\/\$\{MYSQL_DATABASE/, `${fn} MYSQL_URL`);
  }
  for (const fn of queueFunctions) {
    const service = compose.services[fn]!;
    assert.equal(service.container_name, undefined, `${fn} has no container_name (it scales)`);
    assert.equal(service.ports, undefined, `${fn} publishes no host port (it scales)`);
  }
  const trigger = compose.services.trigger!;
  assert.ok(trigger.ports?.some((p) => (typeof p === 'string' ? /:3000$/.test(p) : p.target === 3000)), 'trigger publishes port 3000');
  assert.ok(trigger.environment?.TRIGGER_TOKEN, 'trigger gets TRIGGER_TOKEN');
  assert.ok(trigger.environment?.LOG_DIR, 'trigger gets LOG_DIR');
  assert.ok(compose.services['notify-email']?.environment?.SES_ENDPOINT?.includes('ses:8005'), 'notify-email sends to the SES emulator');
  assert.equal(compose.services['notify-email']?.depends_on?.ses?.condition, 'service_healthy');
});

test('compose infrastructure: RabbitMQ with the consistent-hash plugin, MySQL 8.4, the SES emulator, all health-checked', () => {
  const { rabbitmq, mysql, ses } = compose.services;
  assert.ok(rabbitmq && mysql && ses);
  assert.match(rabbitmq.image ?? '', /^rabbitmq:(3\.13|4\.\d+)-management/);
  assert.match([rabbitmq.command ?? []].flat().join(' '), /rabbitmq-plugins enable .*rabbitmq_consistent_hash_exchange.*exec docker-entrypoint\.sh rabbitmq-server/);
  assert.match(rabbitmq.environment?.RABBITMQ_DEFAULT_USER ?? '', /^\$\{RABBITMQ_DEFAULT_USER/, 'RabbitMQ user from .env');
  assert.match(rabbitmq.environment?.RABBITMQ_DEFAULT_PASS ?? '', /^\$\{RABBITMQ_DEFAULT_PASS/, 'RabbitMQ password from .env');
  assert.match([rabbitmq.healthcheck?.test ?? []].flat().join(' '), /rabbitmq-diagnostics -q ping/);
  assert.equal(mysql.image, 'mysql:8.4');
  for (const v of ['MYSQL_DATABASE', 'MYSQL_USER', 'MYSQL_PASSWORD']) assert.match(mysql.environment?.[v] ?? '', new RegExp(`^\\$\\{${v}`), `${v} from .env`);
  assert.match([mysql.healthcheck?.test ?? []].flat().join(' '), /mysqladmin ping/);
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
    const secrets = fn === 'trigger' ? ['AMQP_URL', 'MYSQL_URL', 'TRIGGER_TOKEN'] : ['AMQP_URL', 'MYSQL_URL'];
    for (const key of secrets) assert.deepEqual(env.get(key)?.valueFrom?.secretKeyRef, { name: 'sluice-secrets', key }, `${fn} ${key} from the secret sluice-secrets`);
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
    const env = new Set((deployment(fn).template.spec.containers[0]!.env ?? []).map((e) => e.name));
    const queues = spec.triggers.map((t) => {
      assert.equal(t.type, 'rabbitmq', `${fn} trigger type`);
      assert.equal(t.metadata.mode, 'QueueLength', `${fn} trigger mode`);
      assert.match(t.metadata.value ?? '', /^\d+$/, `${fn} trigger value`);
      assert.ok(topologyQueues.has(t.metadata.queueName ?? ''), `${fn} scales on ${t.metadata.queueName}, declared in infra/topology.ts`);
      assert.ok((t.metadata.hostFromEnv && env.has(t.metadata.hostFromEnv)) || t.authenticationRef, `${fn}: the trigger reaches RabbitMQ (hostFromEnv or authenticationRef)`);
      return t.metadata.queueName;
    });
    assert.equal(new Set(queues).size, queues.length, `${fn}: no queue twice`);
    assert.deepEqual([...queues].sort(), [...consumed[fn]!].sort(), `${fn} scales on exactly the queues it consumes`);
  }
  const analytics = scaled.find((so) => (so.spec as unknown as ScaledObjectSpec).scaleTargetRef.name === 'ev-analytics')!.spec as unknown as ScaledObjectSpec;
  assert.ok(analytics.maxReplicaCount! <= EV_PARTITIONS, 'no more ev-analytics replicas than partitions (single active consumer)');
});

test('infra/k8s/kustomization.yaml applies every manifest', () => {
  const kustomization = parse(read('infra/k8s/kustomization.yaml')) as { resources: string[] };
  assert.deepEqual([...kustomization.resources].sort(), k8sFiles.filter((f) => f !== 'kustomization.yaml'));
});
