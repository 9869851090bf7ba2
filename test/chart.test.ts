// The Helm chart (charts/dapifs): `helm lint`; what `helm template` makes is what
// examples/kubernetes/install.yaml installs (the same objects, containers, volumes, probes and
// permissions); each value does what values.yaml says (the kubelet's root moves every path);
// and a real API server of each release accepts every object in a server-side dry run. The
// install through the chart on a real node is in kube-node-install.
import t from 'tap'
import { readFileSync } from 'node:fs'
import yaml from 'js-yaml'
import { KubeConfig, KubernetesObjectApi } from '@kubernetes/client-node'
import { run } from './fixtures/daemon.js'
import { needApiServer, startCluster } from './fixtures/kube.js'
import { RELEASES } from './fixtures/node.js'

type Obj = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

const CHART = 'charts/dapifs'

async function helm(): Promise<string | undefined> {
  const r = await run('bash', ['scripts/go-tool.sh', 'helm', 'built'])
  return r.code === 0 ? r.stdout.toString().trim() : undefined
}

async function template(bin: string, ...sets: string[]): Promise<Obj[]> {
  // `kube-version=X`: the cluster's version, as helm install would read it.
  const version = sets.filter((s) => s.startsWith('kube-version=')).flatMap((s) => ['--kube-version', s.slice('kube-version='.length)])
  const r = await run(bin, ['template', 'dapifs', CHART, '--namespace', 'dapifs', ...version, ...sets.filter((s) => !s.startsWith('kube-version=')).flatMap((s) => ['--set', s])])
  if (r.code !== 0) throw new Error(`helm template: ${r.stderr}`)
  return yaml.loadAll(r.stdout.toString()).filter(Boolean) as Obj[]
}

const find = (objs: Obj[], kind: string, name?: string): Obj => {
  const o = objs.find((x) => x.kind === kind && (name === undefined || x.metadata.name === name))
  if (!o) throw new Error(`no ${kind} ${name ?? ''}`)
  return o
}

/** What must be the same in the chart's objects and the manifests': labels the chart adds aside. */
function essence(o: Obj): Obj {
  const pod = o.spec?.template?.spec
  if (o.kind === 'DaemonSet') {
    const c = pod.containers[0]
    // The chart always passes the kubelet's root (its value); the manifests use the default.
    const args: string[] = [...(c.args ?? [])]
    const k = args.indexOf('--kubelet-dir')
    if (k >= 0) args.splice(k, 2)
    return {
      name: o.metadata.name, selector: o.spec.selector, strategy: o.spec.updateStrategy,
      pod: { ...pod, containers: [{ ...c, args, imagePullPolicy: undefined, resources: undefined }], nodeSelector: undefined },
    }
  }
  if (o.kind === 'ClusterRole') return { name: o.metadata.name, rules: o.rules }
  if (o.kind === 'ClusterRoleBinding') return { name: o.metadata.name, roleRef: o.roleRef, subjects: o.subjects }
  if (o.kind === 'CSIDriver') return { name: o.metadata.name, spec: o.spec }
  return { kind: o.kind, name: o.metadata.name }
}

/** A JSON copy without undefined fields. */
const plain = (o: unknown): unknown => JSON.parse(JSON.stringify(o))

async function main(): Promise<void> {
  const bin = await helm()
  if (!bin) {
    if (process.env.CI) t.fail('helm is not built in CI (.ci/run builds it: scripts/go-tool.sh helm build)')
    else t.test('the chart', { skip: 'helm is not built: scripts/go-tool.sh helm build' }, async () => {})
    return
  }

  t.test('helm lint', async (t) => {
    const r = await run(bin, ['lint', CHART])
    t.equal(r.code, 0, `${r.stdout}${r.stderr}`)
    t.match(r.stdout.toString(), /1 chart\(s\) linted, 0 chart\(s\) failed/)
  })

  t.test('the chart makes what install.yaml installs', async (t) => {
    const chart = await template(bin, 'image.tag=0.1.0')
    const manifests = (yaml.loadAll(readFileSync('examples/kubernetes/install.yaml', 'utf8')).filter(Boolean) as Obj[]).filter((o) => o.kind !== 'Namespace')
    const key = (o: Obj): string => `${o.kind}/${o.metadata.name}`
    t.same(chart.map(key).sort(), manifests.map(key).sort(), 'the same objects (the namespace is the release\'s)')
    for (const m of manifests) {
      const c = find(chart, m.kind, m.metadata.name)
      t.same(plain(essence(c)), plain(essence(m)), `${key(m)}: the same`)
      if (m.kind === 'DaemonSet') {
        t.same(c.spec.template.spec.containers[0].resources, m.spec.template.spec.containers[0].resources, `${key(m)}: the same resources`)
        t.match(c.metadata.labels, { 'app.kubernetes.io/instance': 'dapifs', 'app.kubernetes.io/managed-by': 'Helm', 'helm.sh/chart': 'dapifs-0.1.0' }, 'and the chart\'s labels')
      }
    }
  })

  t.test('before Kubernetes 1.22, and with surgeUpgrades=false, the chart makes examples/kubernetes-before-1.22', async (t) => {
    const before = (yaml.loadAll(readFileSync('examples/kubernetes-before-1.22/install.yaml', 'utf8')).filter(Boolean) as Obj[]).find((o) => o.kind === 'DaemonSet' && o.metadata.name === 'dapifs-node')!
    for (const sets of [['kube-version=1.20.2'], ['kube-version=1.21.14'], ['surgeUpgrades=false']]) {
      const c = find(await template(bin, 'image.tag=0.1.0', ...sets), 'DaemonSet', 'dapifs-node')
      t.same(plain(essence(c)), plain(essence(before)), `${sets.join(' ')}: the agent without maxSurge`)
    }
    const surge = find(await template(bin, 'image.tag=0.1.0', 'kube-version=1.22.0'), 'DaemonSet', 'dapifs-node')
    t.same(surge.spec.updateStrategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 }, '1.22: with maxSurge')
  })

  t.test('each value does what values.yaml says', async (t) => {
    const root = '/var/snap/microk8s/common/var/lib/kubelet'
    const moved = await template(bin, `kubeletDir=${root}/`)
    const text = JSON.stringify(moved)
    t.notOk(text.includes('"/var/lib/kubelet'), 'kubeletDir: no path is left at /var/lib/kubelet')
    const agent = find(moved, 'DaemonSet', 'dapifs-node').spec.template.spec
    t.same(agent.volumes.filter((v: Obj) => v.hostPath).map((v: Obj) => v.hostPath.path),
      [`${root}/pods`, `${root}/plugins/csi.dapifs.dev`, `${root}/plugins_registry`, '/dev/fuse'], 'every hostPath under the new root')
    t.same(agent.containers[0].args.slice(0, 8), ['csi', '--endpoint', `unix://${root}/plugins/csi.dapifs.dev/csi.sock`, '--node-name', '$(NODE_NAME)', '--kubelet-dir', root, '--registration-dir'])
    t.equal(find(moved, 'DaemonSet', 'dapifs-keeper').spec.template.spec.containers[0].command[2], `${root}/plugins/csi.dapifs.dev/keeper.sock`, 'and the keeper\'s socket')

    const digest = 'sha256:' + 'a'.repeat(64)
    const byDigest = await template(bin, 'image.repository=registry.example/dapifs', `image.digest=${digest}`, 'image.tag=9.9.9')
    for (const name of ['dapifs-node', 'dapifs-keeper']) {
      t.equal(find(byDigest, 'DaemonSet', name).spec.template.spec.containers[0].image, `registry.example/dapifs@${digest}`, `image.digest: ${name} by digest`)
    }
    t.equal(find(await template(bin), 'DaemonSet', 'dapifs-node').spec.template.spec.containers[0].image, 'ghcr.io/dapifs/dapifs:0.1.0', 'no tag: the appVersion')

    const args = async (...sets: string[]): Promise<string[]> => find(await template(bin, ...sets), 'DaemonSet', 'dapifs-node').spec.template.spec.containers[0].args
    t.ok((await args('extensions.enabled=false')).includes('--no-extensions'), 'extensions.enabled=false: --no-extensions')
    t.match((await args('logging.format=json', 'logging.debug=true')).join(' '), /--log-format json --debug/, 'logging: --log-format json --debug')
    t.match((await args('extensions.nodeLabelKeys={topology.kubernetes.io/zone,kubernetes.io/hostname}')).join(' '), /--node-label-keys topology\.kubernetes\.io\/zone,kubernetes\.io\/hostname/, 'extensions.nodeLabelKeys')
    t.match((await args('budget.volume=4Mi', 'budget.pod-volumes=32')).join(' '), /--budget pod-volumes=32,volume=4Mi/, 'budget')
    const noHttp = find(await template(bin, 'httpEndpoint.enabled=false'), 'DaemonSet', 'dapifs-node').spec.template.spec.containers[0]
    t.notOk(noHttp.args.includes('--http-endpoint') || noHttp.ports || noHttp.readinessProbe || noHttp.livenessProbe, 'httpEndpoint.enabled=false: no port, no probes')
    const placed = find(await template(bin, 'priorityClassName=', 'nodeSelector.pool=infra', 'tolerations=null', 'agent.resources.limits.memory=1Gi', 'hostNetwork=false'), 'DaemonSet', 'dapifs-node').spec.template.spec
    t.notOk(placed.priorityClassName, 'priorityClassName empty: none')
    t.same(placed.nodeSelector, { 'kubernetes.io/os': 'linux', pool: 'infra' }, 'nodeSelector')
    t.notOk(placed.tolerations, 'tolerations')
    t.equal(placed.containers[0].resources.limits.memory, '1Gi', 'agent.resources')
    t.equal(placed.hostNetwork, false, 'hostNetwork')
  })

  if (!(await needApiServer('the chart against a real API server'))) return
  for (const release of RELEASES) {
    t.test(`a real API server (${release}) accepts every object of the chart`, async (t) => {
      const k = await startCluster(t, { release, privileged: true })
      const kc = new KubeConfig()
      kc.loadFromFile(k.kubeconfig)
      const client = KubernetesObjectApi.makeApiClient(kc)
      await k.core.createNamespace({ body: { metadata: { name: 'dapifs' } } })
      for (const obj of await template(bin, 'image.tag=0.1.0', `kube-version=${release}`)) {
        const name = `${obj.kind}/${obj.metadata.name}`
        try {
          const got = await client.create(obj, undefined, 'All') as Obj
          t.ok(got.metadata?.uid, `${name} accepted`)
        } catch (e) {
          const x = e as { code?: number; body?: unknown }
          t.fail(`dry run of ${name}: ${x.code} ${typeof x.body === 'string' ? x.body : JSON.stringify(x.body)}`)
        }
      }
    })
  }
}

void main()
