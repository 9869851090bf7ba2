// The extensions against a real kube-apiserver (1.20.2): `dapifs mount --pod` with --items, and
// the CSI driver, serving every extension; the pod IP arriving after the mount (a status patch,
// as the kubelet makes it) and a change of the Node's labels flip the volume, and an inotify
// watcher sees the atomic writer's events; `dapifs csi --no-extensions` refuses them by name; the
// CSI driver lets pods read only their Node's topology labels unless --node-label-keys says more.
import t, { type Test } from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { cat, dataTarget, mounted, run, scratch, startDaemon, until, watchDir } from './fixtures/daemon.js'
import { startDriver } from './fixtures/csi.js'
import { needApiServer, startCluster, type Cluster } from './fixtures/kube.js'

const NS = 'shop'
const NODE = 'node-1'

const ITEMS = `- {path: node, fieldRef: {fieldPath: spec.nodeName}}
- {path: sa, fieldRef: {fieldPath: spec.serviceAccountName}}
- {path: hostIP, fieldRef: {fieldPath: status.hostIP}}
- {path: hostIPs, fieldRef: {fieldPath: status.hostIPs}}
- {path: podIP, fieldRef: {fieldPath: status.podIP}}
- {path: podIPs, fieldRef: {fieldPath: status.podIPs}}
- {path: owners, fieldRef: {fieldPath: metadata.ownerReferences}}
- {path: owners.json, format: json, fieldRef: {fieldPath: metadata.ownerReferences}}
- {path: labels.json, format: json, fieldRef: {fieldPath: metadata.labels}}
- {path: image, fieldRef: {fieldPath: "spec.containers['main'].image"}}
- {path: zone, fieldRef: {fieldPath: "node.metadata.labels['topology.kubernetes.io/zone']"}}
- {path: node-labels, fieldRef: {fieldPath: node.metadata.labels}}
- {path: node-labels.json, format: json, fieldRef: {fieldPath: node.metadata.labels}}
- {path: labels, fieldRef: {fieldPath: metadata.labels}}
`

const podBody = (name: string) => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: {
    name, namespace: NS, labels: { app: name },
    ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${name}-rs`, uid: '11111111-2222-3333-4444-555555555555', controller: true }],
  },
  spec: { nodeName: NODE, serviceAccountName: 'shop-sa', containers: [{ name: 'main', image: 'nginx:1.25' }] },
})

/**
 * What each file holds, once the pod has its addresses (before: podIP and podIPs are empty). The
 * Node's labels are all of them through `dapifs mount --pod` (the user's own credentials), and
 * only its topology labels through the CSI driver by default.
 */
function want(name: string, zone: string, nodeLabels: 'all' | 'topology' = 'all'): Record<string, string> {
  const owner = { apiVersion: 'apps/v1', controller: true, kind: 'ReplicaSet', name: `${name}-rs`, uid: '11111111-2222-3333-4444-555555555555' }
  return {
    node: NODE,
    sa: 'shop-sa',
    hostIP: '10.0.0.5',
    hostIPs: '10.0.0.5', // 1.20 has no status.hostIPs: the one address
    podIP: '10.244.0.7',
    podIPs: '10.244.0.7\nfd00::7',
    owners: `apiVersion="apps/v1" controller=true kind="ReplicaSet" name="${name}-rs" uid="${owner.uid}"`,
    'owners.json': JSON.stringify([owner]),
    'labels.json': `{"app":"${name}"}`,
    image: 'nginx:1.25',
    zone,
    'node-labels': nodeLabels === 'all' ? `kubernetes.io/hostname="node-1"\ntopology.kubernetes.io/zone="${zone}"` : `topology.kubernetes.io/zone="${zone}"`,
    'node-labels.json': nodeLabels === 'all' ? `{"kubernetes.io/hostname":"node-1","topology.kubernetes.io/zone":"${zone}"}` : `{"topology.kubernetes.io/zone":"${zone}"}`,
  }
}

/** The kubelet's status update once the pod runs: host and pod addresses. */
const assignIPs = (k: Cluster, name: string) => k.core.patchNamespacedPodStatus({
  name, namespace: NS, body: [
    { op: 'add', path: '/status/hostIP', value: '10.0.0.5' },
    { op: 'add', path: '/status/podIP', value: '10.244.0.7' },
    { op: 'add', path: '/status/podIPs', value: [{ ip: '10.244.0.7' }, { ip: 'fd00::7' }] },
  ],
})

const FLIP = ['CREATE ..data_tmp', 'MOVED_FROM ..data_tmp', 'MOVED_TO ..data']

/** Reads every file; the pod IP files are empty until the IPs are assigned. */
async function checkFiles(t: Test, dir: string, name: string, zone: string, ips: boolean, nodeLabels: 'all' | 'topology' = 'all'): Promise<void> {
  for (const [p, w] of Object.entries(want(name, zone, nodeLabels))) {
    const empty = !ips && (p === 'podIP' || p === 'podIPs' || p === 'hostIP' || p === 'hostIPs')
    t.equal(await cat(path.join(dir, p)), empty ? '' : w, `${p}${empty ? ': empty until assigned' : ''}`)
  }
}

/** The pod IP arrives after the mount: one flip, seen by inotify; then a Node label changes. */
async function ipsArrive(t: Test, k: Cluster, dir: string, name: string, nodeLabels: 'all' | 'topology' = 'all'): Promise<void> {
  await checkFiles(t, dir, name, 'eu-1a', false, nodeLabels)
  const before = await dataTarget(dir)
  const w = await watchDir(t, dir)
  await assignIPs(k, name)
  t.ok(await until(async () => (await cat(path.join(dir, 'podIP'))) === '10.244.0.7'), 'the pod IP, once the status has it')
  await checkFiles(t, dir, name, 'eu-1a', true, nodeLabels)
  t.not(await dataTarget(dir), before, '..data flipped')
  t.ok(await until(async () => w.events().length >= 3, 5000))
  t.same(w.events(), FLIP, 'an inotify watcher sees the flip')
  w.stop()
}

async function main(): Promise<void> {
  if (!(await needApiServer('the extensions against a real API server'))) return

  t.test('the extensions against a real API server', async (t) => {
    const k = await startCluster(t)
    await k.core.createNamespace({ body: { metadata: { name: NS } } })
    await k.core.createNode({ body: { metadata: { name: NODE, labels: { 'topology.kubernetes.io/zone': 'eu-1a', 'kubernetes.io/hostname': NODE } }, status: { allocatable: { cpu: '4', memory: '8Gi' } } } })
    const dir = scratch(t)
    const items = path.join(dir, 'items.yaml')
    writeFileSync(items, 'items:\n' + ITEMS.replace(/^/gm, '  '))

    await t.test('dapifs mount --pod: every extension; the pod IP after the mount; a Node label change', async (t) => {
      await k.core.createNamespacedPod({ namespace: NS, body: podBody('web') })
      const env = { KUBECONFIG: k.kubeconfig }
      const r = await run('env', [`KUBECONFIG=${k.kubeconfig}`, process.execPath, 'dist/main.js', 'render', '--pod', `${NS}/web`, '--items', items])
      t.equal(r.code, 0, r.stderr)
      t.equal(JSON.parse(r.stdout.toString()).files.zone.content, 'eu-1a', 'render --pod reads the Node\'s labels')
      const d = await startDaemon(t, ['--pod', `${NS}/web`, '--items', items], { env })
      await ipsArrive(t, k, d.mnt, 'web')

      const w = await watchDir(t, d.mnt)
      const mark = d.lines.length
      await k.core.patchNode({ name: NODE, body: [{ op: 'replace', path: '/metadata/labels/topology.kubernetes.io~1zone', value: 'eu-1b' }] })
      t.ok(await until(async () => (await cat(path.join(d.mnt, 'zone'))) === 'eu-1b'), 'a Node label change arrives')
      await checkFiles(t, d.mnt, 'web', 'eu-1b', true)
      t.match(await d.waitFor(/flipped/, mark), /: "node-labels", "node-labels\.json", "zone" changed$/)
      t.ok(await until(async () => w.events().length >= 3, 5000))
      t.same(w.events(), FLIP)
      w.stop()
      await k.core.patchNode({ name: NODE, body: [{ op: 'replace', path: '/metadata/labels/topology.kubernetes.io~1zone', value: 'eu-1a' }] })
      t.ok(await until(async () => (await cat(path.join(d.mnt, 'zone'))) === 'eu-1a'))
      t.equal(await d.stop(), 0)
    })

    await t.test('the CSI driver: every extension; the pod IP after the publish; --no-extensions refuses', async (t) => {
      const pod = await k.core.createNamespacedPod({ namespace: NS, body: podBody('api') })
      const drv = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE })
      const uid = pod.metadata!.uid!
      const ctx = {
        items: ITEMS,
        'csi.storage.k8s.io/pod.name': 'api', 'csi.storage.k8s.io/pod.namespace': NS, 'csi.storage.k8s.io/pod.uid': uid,
        'csi.storage.k8s.io/serviceAccount.name': 'shop-sa', 'csi.storage.k8s.io/ephemeral': 'true',
      }
      const target = drv.target(uid, 'podinfo')
      mkdirSync(path.dirname(target), { recursive: true })
      const req = { volume_id: `csi-${uid}`, target_path: target, readonly: true, volume_context: ctx, volume_capability: { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } } }
      const r = await drv.call('Node/NodePublishVolume', req)
      t.ok(r.ok, r.details ?? 'ok')
      t.equal(await cat(path.join(target, 'labels')), 'app="api"', 'a kubelet field beside them')
      await ipsArrive(t, k, target, 'api', 'topology')
      t.ok((await drv.call('Node/NodeUnpublishVolume', { volume_id: req.volume_id, target_path: target })).ok)
      t.notOk(mounted(target))

      // The Node's other labels: refused by name by default, served when the operator allows them.
      const hostnameItem = `- {path: host, fieldRef: {fieldPath: "node.metadata.labels['kubernetes.io/hostname']"}}`
      const ht = drv.target(uid, 'hostname')
      const hostname = await drv.call('Node/NodePublishVolume', { ...req, target_path: ht, volume_context: { ...ctx, items: hostnameItem } })
      t.equal(hostname.code, grpc.status.INVALID_ARGUMENT)
      t.equal(hostname.details, 'volume "hostname", item "host": node label "kubernetes.io/hostname" is not one this driver lets pods read (it serves topology.kubernetes.io/zone, topology.kubernetes.io/region: dapifs csi --node-label-keys)')
      t.notOk(mounted(ht), 'nothing mounted')
      const open = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, args: ['--node-label-keys', '*'] })
      const ot = open.target(uid, 'open')
      const all = await open.call('Node/NodePublishVolume', { ...req, target_path: ot })
      t.ok(all.ok, all.details ?? 'ok')
      t.equal(await cat(path.join(ot, 'node-labels')), 'kubernetes.io/hostname="node-1"\ntopology.kubernetes.io/zone="eu-1a"', "--node-label-keys '*': every label")
      t.ok((await open.call('Node/NodeUnpublishVolume', { volume_id: req.volume_id, target_path: ot })).ok)
      const closed = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, args: ['--node-label-keys', ''] })
      const none = await closed.call('Node/NodePublishVolume', { ...req, target_path: closed.target(uid, 'closed') })
      t.equal(none.details, 'volume "closed", item "zone": node label "topology.kubernetes.io/zone" is not one this driver lets pods read (it serves none: dapifs csi --node-label-keys)', "--node-label-keys '': none")
      const bad = await run(process.execPath, ['dist/main.js', 'csi', '--endpoint', 'unix:///tmp/x.sock', '--node-name', NODE, '--node-label-keys', 'a b'])
      t.equal(bad.code, 2)
      t.match(bad.stderr, /^dapifs: --node-label-keys: "a b" is not a label key: name part must consist of alphanumeric characters, .* \(or '\*' for every key, '' for none\)\n$/)

      const strict = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, args: ['--no-extensions'] })
      t.match(strict.lines.join('\n'), /extensions refused \(--no-extensions\)/, 'the driver says so when it starts')
      const st = strict.target(uid, 'strict')
      const refused = await strict.call('Node/NodePublishVolume', { ...req, target_path: st })
      t.equal(refused.code, grpc.status.INVALID_ARGUMENT)
      t.equal(refused.details, 'volume "strict", item "node": fieldPath spec.nodeName is a dapifs extension, which this driver refuses (dapifs csi --no-extensions)')
      t.notOk(mounted(st), 'nothing mounted')
      const plain = await strict.call('Node/NodePublishVolume', { ...req, target_path: st, volume_context: { ...ctx, items: '- {path: labels, fieldRef: {fieldPath: metadata.labels}}' } })
      t.ok(plain.ok, plain.details ?? 'the kubelet\'s fields are still served')
      t.equal(await cat(path.join(st, 'labels')), 'app="api"')
      t.ok((await strict.call('Node/NodeUnpublishVolume', { volume_id: req.volume_id, target_path: st })).ok)
    })
  })
}

void main()
