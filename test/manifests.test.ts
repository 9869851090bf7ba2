// The Kubernetes manifests in examples/kubernetes/: what they say (parsed as kubectl reads YAML),
// that install.yaml is the kustomization's files concatenated, and that a real kube-apiserver
// (1.20.2) accepts every object in a server-side dry run and keeps the fields as written.
import t from 'tap'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { KubeConfig, KubernetesObjectApi, PatchStrategy, type KubernetesObject } from '@kubernetes/client-node'
import { readVolumeContext } from '../lib/csi/attributes.js'
import { parseManifest } from '../lib/volume/manifest.js'
import { readDownwardAPISource } from '../lib/volume/pod.js'
import { checkVolume } from '../lib/volume/projection.js'
import { Shape, type Json } from '../lib/volume/shape.js'
import { needApiServer, startCluster } from './fixtures/kube.js'

const DIR = 'examples/kubernetes'
const DRIVER = 'csi.dapifs.dev'

const BEFORE_1_22 = 'examples/kubernetes-before-1.22'
const text = (file: string): string => readFileSync(path.join(DIR, file), 'utf8')
// parseManifest resolves integers as kubectl does (YAML 1.1: `defaultMode: 0644` is 420).
const docs = (file: string): Obj[] => parseManifest(text(file), file) as Obj[]

type Obj = KubernetesObject & Record<string, any>

const kinds = (objs: Obj[]): string[] => objs.map((o) => `${o.kind}/${o.metadata?.name}`)
const one = (objs: Obj[], kind: string): Obj => {
  const found = objs.filter((o) => o.kind === kind)
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`)
  return found[0]!
}

t.test('install.yaml is the kustomization\'s files, concatenated in its order', async (t) => {
  const resources = (docs('kustomization.yaml')[0] as { resources: string[] }).resources
  t.same(resources, ['rbac.yaml', 'csidriver.yaml', 'daemonset.yaml', 'keeper.yaml'])
  const install = text('install.yaml')
  const header = install.slice(0, install.indexOf('\n---\n') + 1)
  t.match(header, /^(#.*\n)+$/, 'install.yaml starts with comment lines only')
  const want = header + resources.map((f) => `---\n# ${f}\n${text(f)}`).join('')
  t.equal(install, want, 'install.yaml matches its parts: regenerate it (the command is in its header)')
  t.same(kinds(docs('install.yaml')), [
    'Namespace/dapifs', 'ServiceAccount/dapifs-node', 'ClusterRole/dapifs-node', 'ClusterRoleBinding/dapifs-node',
    `CSIDriver/${DRIVER}`, 'DaemonSet/dapifs-node', 'DaemonSet/dapifs-keeper',
  ], 'the Namespace comes first')
})

t.test('the install for 1.20 and 1.21 is install.yaml without maxSurge', async (t) => {
  const install = text('install.yaml')
  const before = readFileSync(path.join(BEFORE_1_22, 'install.yaml'), 'utf8')
  const header = before.slice(0, before.indexOf('\n---\n') + 1)
  t.match(header, /^(#.*\n)+$/, 'it starts with comment lines only')
  const want = header + install.slice(install.indexOf('\n---\n') + 1).replace('      maxSurge: 1\n      maxUnavailable: 0\n', '      maxUnavailable: 1\n')
  t.equal(before, want, `${BEFORE_1_22}/install.yaml matches install.yaml: regenerate it (the command is in its header)`)
  const strategy = (objs: Obj[]): unknown => objs.find((o) => o.kind === 'DaemonSet' && o.metadata?.name === 'dapifs-node')!.spec.updateStrategy
  t.same(strategy(docs('install.yaml')), { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } }, 'install.yaml: the new pod beside the old one')
  t.same(strategy(parseManifest(before, 'install.yaml') as Obj[]), { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } }, 'before 1.22: the old pod stops first')
  const k = parseManifest(readFileSync(path.join(BEFORE_1_22, 'kustomization.yaml'), 'utf8'), 'kustomization.yaml')[0] as Obj
  t.same(k.resources, ['../kubernetes'], 'its kustomization is examples/kubernetes...')
  t.match(k.patches[0].patch, /path: \/spec\/updateStrategy\/rollingUpdate\n\s+value:\n\s+maxUnavailable: 1/, '...with the same strategy')
})

t.test('the CSIDriver', async (t) => {
  const d = one(docs('csidriver.yaml'), 'CSIDriver')
  t.equal(d.apiVersion, 'storage.k8s.io/v1')
  t.equal(d.metadata!.name, DRIVER)
  t.same(d.spec, {
    attachRequired: false, podInfoOnMount: true, volumeLifecycleModes: ['Ephemeral'],
    fsGroupPolicy: 'None', requiresRepublish: false,
  })
})

t.test('RBAC: get, list and watch on pods and nodes, create on events, nothing else', async (t) => {
  const objs = docs('rbac.yaml')
  const role = one(objs, 'ClusterRole')
  t.same(role.rules, [
    { apiGroups: [''], resources: ['pods', 'nodes'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: [''], resources: ['events'], verbs: ['create'] },
  ])
  t.notOk(role.aggregationRule, 'no aggregation')
  t.equal(objs.filter((o) => o.kind === 'Role' || o.kind === 'ClusterRole').length, 1, 'one role')
  const binding = one(objs, 'ClusterRoleBinding')
  t.same(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata!.name })
  t.same(binding.subjects, [{ kind: 'ServiceAccount', name: 'dapifs-node', namespace: 'dapifs' }])
  const sa = one(objs, 'ServiceAccount')
  t.same(sa.metadata, { name: 'dapifs-node', namespace: 'dapifs' })
  t.equal(one(docs('daemonset.yaml'), 'DaemonSet').spec.template.spec.serviceAccountName, 'dapifs-node')
})

t.test('the DaemonSets', async (t) => {
  const plain = one(docs('daemonset.yaml'), 'DaemonSet')
  const withRegistrar = one(docs('daemonset-with-registrar.yaml'), 'DaemonSet')
  for (const [name, ds] of [['daemonset.yaml', plain], ['daemonset-with-registrar.yaml', withRegistrar]] as const) {
    const pod = ds.spec.template.spec
    const c = pod.containers.find((c: Obj) => c.name === 'dapifs')
    t.equal(c.securityContext.privileged, true, `${name}: privileged`)
    t.same(c.env, [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }], `${name}: NODE_NAME`)
    const bidirectional = c.volumeMounts.filter((m: Obj) => m.mountPropagation === 'Bidirectional').map((m: Obj) => m.mountPath)
    t.same(bidirectional, ['/var/lib/kubelet/pods'], `${name}: the pods' directories, Bidirectional`)
    const volumes = new Map<string, Obj>(pod.volumes.map((v: Obj) => [v.name, v.hostPath]))
    for (const container of pod.containers) {
      for (const m of container.volumeMounts) t.ok(volumes.has(m.name), `${name}: ${container.name} mounts ${m.name}, a volume`)
    }
    // The container sees each host path at the same path (the kubelet passes host paths).
    for (const m of c.volumeMounts) t.equal(m.mountPath, volumes.get(m.name)!.path, `${name}: ${m.name} at its host path`)
    t.same(volumes.get('dev-fuse'), { path: '/dev/fuse', type: 'CharDevice' }, `${name}: /dev/fuse`)
    const endpoint = c.args[c.args.indexOf('--endpoint') + 1]
    t.equal(endpoint, `unix:///var/lib/kubelet/plugins/${DRIVER}/csi.sock`, `${name}: the CSI socket`)
    t.equal(volumes.get('plugin-dir')!.path, path.dirname(endpoint.slice('unix://'.length)), `${name}: the socket's directory is mounted`)
    t.equal(pod.priorityClassName, 'system-node-critical')
    t.same(pod.tolerations, [{ operator: 'Exists' }])
    // Its HTTP endpoint, and the probes on it (docs/observability.md).
    t.equal(c.args[c.args.indexOf('--http-endpoint') + 1], ':9810', `${name}: --http-endpoint :9810`)
    t.notOk(c.ports, `${name}: no port declared (a hostPort would keep an upgrade's new pod off the node)`)
    t.same(c.readinessProbe.httpGet, { path: '/healthz', port: 9810 }, `${name}: ready: /healthz`)
    t.same(c.livenessProbe.httpGet, { path: '/livez', port: 9810 }, `${name}: alive: /livez`)
  }
  t.same(plain.spec.template.spec.containers[0].args, [
    'csi', '--endpoint', `unix:///var/lib/kubelet/plugins/${DRIVER}/csi.sock`, '--node-name', '$(NODE_NAME)',
    '--registration-dir', '/var/lib/kubelet/plugins_registry', '--http-endpoint', ':9810',
  ])
  const [dapifs, registrar] = withRegistrar.spec.template.spec.containers
  t.ok(dapifs.args.includes('--no-registration'), 'with the registrar, dapifs does not register itself')
  t.notOk(dapifs.args.includes('--registration-dir'))
  t.match(registrar.image, /^registry\.k8s\.io\/sig-storage\/csi-node-driver-registrar:v2\.\d+\.\d+$/)
  t.same(registrar.args, ['--csi-address=/csi/csi.sock', `--kubelet-registration-path=/var/lib/kubelet/plugins/${DRIVER}/csi.sock`])
  t.same(registrar.volumeMounts.map((m: Obj) => [m.name, m.mountPath]), [['plugin-dir', '/csi'], ['registration-dir', '/registration']])

  // Apart from the registration, the two are the same DaemonSet, but for the update strategy: with
  // the registrar, no surge (its old pod's registrar would remove the new one's socket at exit).
  t.same(withRegistrar.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } })
  const strip = (ds: Obj): Obj => {
    const o = structuredClone(ds)
    delete o.spec.updateStrategy
    const pod = o.spec.template.spec
    pod.containers = pod.containers.filter((c: Obj) => c.name === 'dapifs')
    const c = pod.containers[0]
    c.args = c.args.filter((a: string, i: number, all: string[]) => a !== '--no-registration' && a !== '--registration-dir' && all[i - 1] !== '--registration-dir')
    c.volumeMounts = c.volumeMounts.filter((m: Obj) => m.name !== 'registration-dir')
    return o
  }
  t.same(strip(withRegistrar), strip(plain))
})

t.test('the keeper: its own DaemonSet, never restarted by an upgrade, unprivileged, at the agent\'s default socket', async (t) => {
  const ds = one(docs('keeper.yaml'), 'DaemonSet')
  const agent = one(docs('daemonset.yaml'), 'DaemonSet')
  t.same(ds.spec.updateStrategy, { type: 'OnDelete' }, 'an upgrade of the agent leaves it running')
  const pod = ds.spec.template.spec
  t.equal(pod.containers.length, 1)
  const c = pod.containers[0]
  t.equal(c.image, agent.spec.template.spec.containers[0].image, 'the agent\'s image')
  const socket = c.command[c.command.indexOf('--socket') + 1]
  const endpoint = agent.spec.template.spec.containers[0].args[agent.spec.template.spec.containers[0].args.indexOf('--endpoint') + 1]
  t.equal(socket, path.join(path.dirname(endpoint.slice('unix://'.length)), 'keeper.sock'), 'keeper.sock beside csi.sock: where the agent looks by default')
  t.equal(c.command[0], '/app/dist/dapifs-keeper')
  t.notOk(c.securityContext.privileged, 'not privileged')
  t.same(c.securityContext.capabilities, { drop: ['ALL'] })
  t.same(c.volumeMounts, [{ name: 'plugin-dir', mountPath: path.dirname(socket) }])
  t.same(pod.volumes, [{ name: 'plugin-dir', hostPath: { path: path.dirname(socket), type: 'DirectoryOrCreate' } }])
  t.same(pod.tolerations, [{ operator: 'Exists' }])
  t.equal(pod.priorityClassName, 'system-node-critical')
})

t.test('the demo pod: the CSI volume\'s items are the downwardAPI volume\'s', async (t) => {
  const pod = one(docs('pod.yaml'), 'Pod')
  const csi = pod.spec.volumes.find((v: Obj) => v.csi).csi
  const dapi = pod.spec.volumes.find((v: Obj) => v.downwardAPI).downwardAPI
  t.equal(csi.driver, DRIVER)
  t.equal(csi.readOnly, true)
  t.same(Object.keys(csi.volumeAttributes).sort(), ['defaultMode', 'items'])
  for (const v of Object.values(csi.volumeAttributes)) t.type(v, 'string', 'volumeAttributes are strings')
  // The attributes are read as the driver reads them: YAML, integers as kubectl reads them.
  const [items] = parseManifest(csi.volumeAttributes.items, 'volumeAttributes.items')
  const [mode] = parseManifest(csi.volumeAttributes.defaultMode, 'volumeAttributes.defaultMode')
  t.same(items, dapi.items, 'the same items, field for field')
  t.same((items as Obj[]).map((i) => i.path), ['labels', 'annotations', 'cpu_limit', 'mem_request'])
  t.equal(mode, 0o644)
  t.equal(dapi.defaultMode, 0o644)
  // Both are volumes dapifs serves.
  const asCsi = readDownwardAPISource(new Shape({ items, defaultMode: mode } as Json, 'volumeAttributes'), 'podinfo')
  const asDapi = readDownwardAPISource(new Shape(dapi as Json, 'downwardAPI'), 'podinfo')
  t.same(asCsi, asDapi)
  checkVolume(asCsi)
  // And the driver reads the attributes, with what the kubelet adds, as that same volume.
  const request = readVolumeContext({
    ...csi.volumeAttributes,
    'csi.storage.k8s.io/pod.name': 'podinfo-demo', 'csi.storage.k8s.io/pod.namespace': 'default',
    'csi.storage.k8s.io/pod.uid': '6f4c2a8e-2b1d-4c7e-9a51-3d0f8e7b5c21',
    'csi.storage.k8s.io/serviceAccount.name': 'default', 'csi.storage.k8s.io/ephemeral': 'true',
  }, 'podinfo')
  // ... whose items may also use dapifs's extensions, which a pod's own volume never does.
  const { extensions, ...volume } = request.volume
  t.equal(extensions, 'allowed')
  t.same(volume, asDapi, 'dapifs csi reads the attributes as the downwardAPI volume')
  const main = pod.spec.containers[0]
  t.equal(main.name, 'main')
  t.ok(main.resources.limits.cpu && main.resources.requests.memory, 'the items\' resources are set')
})

async function main(): Promise<void> {
  if (!(await needApiServer('against a real API server'))) return

  t.test('a real API server (1.20.2) accepts every object', async (t) => {
    const k = await startCluster(t)
    const kc = new KubeConfig()
    kc.loadFromFile(k.kubeconfig)
    const client = KubernetesObjectApi.makeApiClient(kc)
    const why = (e: unknown): string => {
      const x = e as { code?: number; body?: unknown; message?: string }
      return `${x.code ?? ''} ${typeof x.body === 'string' ? x.body : JSON.stringify(x.body ?? x.message)}`
    }
    /**
     * A server-side dry run: the object as the server would store it. scripts/kube-apiserver.sh
     * runs without --allow-privileged=true, which real clusters set (kubeadm, kind, GKE, EKS...).
     * Such a server refuses a privileged container, after validating everything else (the
     * Bidirectional mounts included, which need privileged): a refusal for that field alone, for
     * each privileged container, passes, and there is no object to compare.
     */
    const dryRun = async (obj: Obj): Promise<Obj | undefined> => {
      const name = `${obj.kind}/${obj.metadata?.name}`
      try {
        const got = await client.create(obj, undefined, 'All') as Obj
        t.ok(got.metadata?.uid, `${name} accepted`)
        return got
      } catch (e) {
        const x = e as { code?: number; body?: unknown }
        const causes: Obj[] | undefined = typeof x.body === 'string' ? JSON.parse(x.body)?.details?.causes : undefined
        const privileged = ((obj.spec?.template?.spec?.containers ?? []) as Obj[])
          .map((c, i) => c.securityContext?.privileged ? `spec.template.spec.containers[${i}].securityContext.privileged` : '')
          .filter(Boolean)
        if (x.code === 422 && privileged.length > 0 && causes && causes.length === privileged.length &&
            causes.every((c) => privileged.includes(c.field) && /disallowed by cluster policy/.test(c.message))) {
          t.pass(`${name} accepted but for its privileged containers: this API server runs without --allow-privileged=true`)
          return undefined
        }
        t.fail(`dry run of ${name}: ${why(e)}`)
        return undefined
      }
    }

    // An API server of 1.20 has no maxSurge for DaemonSets, and refuses maxUnavailable: 0.
    const install = parseManifest(readFileSync(path.join(BEFORE_1_22, 'install.yaml'), 'utf8'), 'install.yaml') as Obj[]
    const driverWritten = one(install, 'CSIDriver')
    for (const obj of install) {
      const got = await dryRun(obj)
      if (!got) {
        if (obj.kind === 'Namespace') throw new Error('the Namespace is needed for what follows')
        continue
      }
      if (obj.kind === 'CSIDriver') {
        const { requiresRepublish, ...kept } = driverWritten.spec
        t.equal(requiresRepublish, false)
        t.same(got.spec, kept, 'the CSIDriver\'s fields come back as written, except requiresRepublish')
        t.notOk('requiresRepublish' in got.spec, '1.20 drops requiresRepublish (alpha, gate CSIServiceAccountToken off), silently')
      } else {
        t.has(got, obj, `${obj.kind}/${obj.metadata!.name} comes back as written`)
      }
      // Namespaced dry runs need the namespace to exist: create it for real.
      if (obj.kind === 'Namespace') await client.create(obj)
    }

    const surge = one(docs('daemonset.yaml'), 'DaemonSet')
    const refusal = await client.create(surge, undefined, 'All').then(() => 'accepted', (e: unknown) => why(e))
    t.match(refusal, /maxUnavailable/, `1.20 refuses install.yaml's agent, with maxSurge (examples/kubernetes-before-1.22 is for it): ${refusal.slice(0, 300)}`)

    const ds = await dryRun(one(docs('daemonset-with-registrar.yaml'), 'DaemonSet'))
    if (ds) t.has(ds, one(docs('daemonset-with-registrar.yaml'), 'DaemonSet'), 'daemonset-with-registrar.yaml comes back as written')

    const podWritten = { ...one(docs('pod.yaml'), 'Pod') }
    podWritten.metadata = { ...podWritten.metadata, namespace: 'default' }
    const pod = await dryRun(podWritten)
    if (pod) {
      t.has(pod, podWritten, 'the demo pod comes back as written')
      t.equal(pod.spec.volumes.find((v: Obj) => v.downwardAPI).downwardAPI.defaultMode, 420, 'defaultMode 0644 is 420')
    }

    t.test('the CSIDriver applied again, and its immutable spec', async (t) => {
      await client.create(driverWritten)
      // What a second `kubectl apply` sends: requiresRepublish is dropped again, the spec is unchanged.
      const again = await client.patch(driverWritten, undefined, undefined, 'kubectl', true, PatchStrategy.ServerSideApply) as Obj
      t.same(again.spec, { attachRequired: false, podInfoOnMount: true, volumeLifecycleModes: ['Ephemeral'], fsGroupPolicy: 'None' })
      const merged = await client.patch({ ...driverWritten, spec: { requiresRepublish: false } }, undefined, undefined, undefined, undefined, PatchStrategy.MergePatch) as Obj
      t.same(merged.spec, again.spec, 'a merge patch of requiresRepublish: false changes nothing either')
      await t.rejects(
        client.patch({ ...driverWritten, spec: { fsGroupPolicy: 'File' } }, undefined, undefined, undefined, undefined, PatchStrategy.MergePatch),
        { code: 422 }, 'a change to the spec is refused: an upgrade that changes it must delete and re-create the CSIDriver')
    })
  })
}

await main()
