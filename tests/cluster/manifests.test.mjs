// The Kubernetes manifests (deploy/k8s) render with `kubectl kustomize` (Debian's
// kubernetes-client, or $IRIS_KUBECTL), and the rendered objects keep the invariants a rolling
// update relies on: probes on paths `iris serve` answers, on the ports it listens on; a grace
// period longer than preStop + --drain-timeout; container arguments that `iris serve --help`
// lists; Services and the PDB selecting the pods; tensor-parallel size equal to the GPUs asked
// for, with shared memory for NCCL. The Dockerfiles and the local cluster script use the same
// flags and ports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const IRIS = process.env.IRIS_BIN;
const KUBECTL = process.env.IRIS_KUBECTL ?? 'kubectl';
if (!IRIS) throw new Error('IRIS_BIN must be set');

const help = execFileSync(IRIS, ['serve', '--help'], { encoding: 'utf8' });
const FLAGS = new Set(help.match(/--[a-z0-9][a-z0-9-]*/g));
// Paths `iris serve` answers on its HTTP port with 200 while it runs (docs/api.md).
const HTTP_PATHS = new Set(['/health', '/version']);

function render(dir) {
  const out = execFileSync(KUBECTL, ['kustomize', path.join(REPO, dir)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return YAML.parseAllDocuments(out).map((d) => d.toJS()).filter(Boolean);
}

function argValue(args, flag) {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

function checkArgs(args, where) {
  assert.equal(args[0], 'serve', `${where}: runs iris serve`);
  for (const a of args.slice(1)) {
    if (a.startsWith('--')) assert.ok(FLAGS.has(a.split('=')[0]), `${where}: ${a} is not an iris serve flag`);
  }
}

const matches = (selector, labels) => Object.entries(selector).every(([k, v]) => labels[k] === v);

function checkDeployment(objs, where) {
  const deps = objs.filter((o) => o.kind === 'Deployment');
  assert.equal(deps.length, 1, `${where}: one Deployment`);
  const dep = deps[0];
  const pod = dep.spec.template;
  assert.ok(matches(dep.spec.selector.matchLabels, pod.metadata.labels), `${where}: the Deployment selects its pods`);
  const c = pod.spec.containers.find((x) => x.name === 'iris');
  checkArgs(c.args, where);
  const grpcPort = Number(argValue(c.args, '--port'));
  const httpPort = Number(argValue(c.args, '--http-port'));
  assert.equal(argValue(c.args, '--host'), '0.0.0.0', `${where}: listens on the pod's addresses`);
  const ports = Object.fromEntries(c.ports.map((p) => [p.name, p.containerPort]));
  assert.deepEqual(ports, { grpc: grpcPort, http: httpPort }, `${where}: container ports are the listening ports`);
  const portOf = (p) => (typeof p === 'number' ? p : ports[p]);
  for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const probe = c[kind];
    assert.ok(probe?.httpGet, `${where}: ${kind} over HTTP`);
    assert.ok(HTTP_PATHS.has(probe.httpGet.path), `${where}: ${kind} path ${probe.httpGet.path}`);
    assert.equal(portOf(probe.httpGet.port), httpPort, `${where}: ${kind} port`);
  }
  // Readiness must fail during a drain (/health is 503 then); liveness must not (a draining
  // replica would be killed before its streams finish).
  assert.equal(c.readinessProbe.httpGet.path, '/health');
  assert.equal(c.livenessProbe.httpGet.path, '/version');
  const drain = Number(argValue(c.args, '--drain-timeout') ?? 30);
  const pre = c.lifecycle?.preStop?.exec?.command;
  assert.equal(pre?.[0], 'sleep', `${where}: preStop sleeps while endpoints catch up`);
  const grace = pod.spec.terminationGracePeriodSeconds;
  assert.ok(grace > Number(pre[1]) + drain, `${where}: grace ${grace} s <= preStop ${pre[1]} s + drain ${drain} s`);
  const model = argValue(c.args, '--model');
  const mount = c.volumeMounts.find((m) => m.mountPath === model);
  assert.ok(mount?.readOnly, `${where}: the model directory is a read-only mount`);
  assert.ok(pod.spec.volumes.find((v) => v.name === mount.name)?.persistentVolumeClaim, `${where}: model on a volume`);
  assert.ok(pod.spec.securityContext.runAsNonRoot, `${where}: non-root`);
  const gpus = Number(c.resources.limits['nvidia.com/gpu']);
  const tp = Number(argValue(c.args, '--tensor-parallel-size') ?? 1);
  assert.equal(argValue(c.args, '--device'), 'cuda');
  assert.equal(gpus, tp, `${where}: ${gpus} GPUs for tensor-parallel size ${tp}`);
  if (tp > 1) {
    const shm = c.volumeMounts.find((m) => m.mountPath === '/dev/shm');
    assert.equal(pod.spec.volumes.find((v) => v.name === shm?.name)?.emptyDir?.medium, 'Memory', `${where}: /dev/shm in memory`);
  }
  return { dep, pod, grpcPort, httpPort, ports };
}

function checkRest(objs, { dep, pod, grpcPort, httpPort }, where) {
  const labels = pod.metadata.labels;
  const services = objs.filter((o) => o.kind === 'Service');
  for (const s of services) assert.ok(matches(s.spec.selector, labels), `${where}: Service ${s.metadata.name} selects the pods`);
  const headless = services.find((s) => s.spec.clusterIP === 'None');
  assert.ok(headless, `${where}: a headless Service for client-side gRPC balancing`);
  assert.deepEqual(headless.spec.ports.map((p) => p.targetPort), ['grpc']);
  assert.equal(headless.spec.ports[0].port, grpcPort);
  const regular = services.find((s) => s.spec.clusterIP !== 'None');
  assert.equal(regular.spec.ports.find((p) => p.name === 'http').targetPort, 'http');
  assert.equal(regular.spec.ports.find((p) => p.name === 'http').port, httpPort);
  const pdb = objs.find((o) => o.kind === 'PodDisruptionBudget');
  assert.ok(matches(pdb.spec.selector.matchLabels, labels), `${where}: the PDB selects the pods`);
  const hpa = objs.find((o) => o.kind === 'HorizontalPodAutoscaler');
  assert.equal(hpa.spec.scaleTargetRef.kind, 'Deployment');
  assert.equal(hpa.spec.scaleTargetRef.name, dep.metadata.name);
  assert.equal(hpa.spec.metrics[0].pods.metric.name, 'iris_num_requests_waiting');
  const pvc = objs.find((o) => o.kind === 'PersistentVolumeClaim');
  const claim = pod.spec.volumes.find((v) => v.persistentVolumeClaim).persistentVolumeClaim.claimName;
  assert.equal(claim, pvc.metadata.name, `${where}: the model volume claims the PVC that is rendered`);
  assert.equal(pod.metadata.annotations['prometheus.io/port'], String(httpPort));
}

test('base renders; probes, ports, grace period and flags hold', () => {
  const objs = render('deploy/k8s/base');
  assert.deepEqual(objs.map((o) => o.kind).sort(),
    ['Deployment', 'HorizontalPodAutoscaler', 'PersistentVolumeClaim', 'PodDisruptionBudget', 'Service', 'Service']);
  const d = checkDeployment(objs, 'base');
  checkRest(objs, d, 'base');
});

test('tensor-parallel overlay renders: 4 GPUs, --tensor-parallel-size 4, /dev/shm, own names and selectors', () => {
  const base = render('deploy/k8s/base');
  const objs = render('deploy/k8s/overlays/tensor-parallel');
  const d = checkDeployment(objs, 'tensor-parallel');
  checkRest(objs, d, 'tensor-parallel');
  assert.equal(argValue(d.pod.spec.containers[0].args, '--tensor-parallel-size'), '4');
  const baseDep = base.find((o) => o.kind === 'Deployment');
  assert.notEqual(d.dep.metadata.name, baseDep.metadata.name);
  assert.ok(!matches(d.dep.spec.selector.matchLabels, baseDep.spec.template.metadata.labels),
    'the overlay must not select the base pods');
});

test('monitoring renders: a ServiceMonitor on the http port, the adapter rule for the HPA metric', () => {
  const objs = render('deploy/k8s/monitoring');
  const sm = objs.find((o) => o.kind === 'ServiceMonitor');
  const svc = render('deploy/k8s/base').find((o) => o.kind === 'Service' && o.spec.clusterIP !== 'None');
  assert.ok(matches(sm.spec.selector.matchLabels, svc.metadata.labels), 'the ServiceMonitor selects the Service');
  assert.deepEqual(sm.spec.endpoints.map((e) => [e.port, e.path]), [['http', '/metrics']]);
  const rules = YAML.parse(objs.find((o) => o.kind === 'ConfigMap').data['config.yaml']).rules;
  assert.equal(rules[0].name.as, 'iris_num_requests_waiting');
});

// Dockerfile CMD/EXPOSE/HEALTHCHECK, and the flags deploy/local sets, against the same facts.
test('Dockerfiles and the local cluster script use iris serve flags and the manifests\' ports', () => {
  const d = checkDeployment(render('deploy/k8s/base'), 'base');
  for (const file of ['deploy/Dockerfile', 'deploy/Dockerfile.cpu']) {
    const text = readFileSync(path.join(REPO, file), 'utf8').replace(/\\\n/g, ' ');
    const cmd = JSON.parse(text.match(/^CMD (\[.*\])$/m)[1]);
    checkArgs(cmd, file);
    assert.equal(Number(argValue(cmd, '--port')), d.grpcPort, `${file}: gRPC port`);
    assert.equal(Number(argValue(cmd, '--http-port')), d.httpPort, `${file}: HTTP port`);
    assert.equal(argValue(cmd, '--model'), '/models/model', `${file}: model path as mounted in the manifests`);
    assert.deepEqual(text.match(/^EXPOSE (.*)$/m)[1].split(/\s+/).map(Number), [d.grpcPort, d.httpPort], `${file}: EXPOSE`);
    assert.match(text, new RegExp(`HEALTHCHECK .*http://127\\.0\\.0\\.1:${d.httpPort}/health`), `${file}: HEALTHCHECK`);
    assert.match(text, /^ENTRYPOINT \["iris"\]$/m);
    assert.match(text, /^USER 10001:10001$/m, `${file}: the manifests' non-root uid`);
  }
  const script = readFileSync(path.join(REPO, 'deploy/local/cluster-lib.sh'), 'utf8');
  const line = script.split('\n').find((l) => l.includes('"$IRIS" serve'));
  for (const f of line.match(/--[a-z-]+/g)) assert.ok(FLAGS.has(f), `run-cluster.sh: ${f}`);
});
