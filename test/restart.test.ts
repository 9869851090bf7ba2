// Restarts of the node agent (`dapifs csi`) with its keeper, against a real kube-apiserver, with
// readers in loops in child processes across each restart: an upgrade (SIGTERM, then a new
// process), a crash (SIGKILL), a pod deleted while no agent ran, a node restart (no connections
// kept), and a keeper that lets go when no agent comes back. The same under a real kubelet:
// kube-node-restart.test.ts.
import t, { type Test } from 'tap'
import { chmodSync, mkdtempSync, readdirSync } from 'node:fs'
import os from 'node:os'
import { spawn } from 'node:child_process'
import path from 'node:path'
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node'
import { cat, mounted, parseReader, reader, run, until, type ReaderResult } from './fixtures/daemon.js'
import { podInfo, startDriver, startKeeper, type Driver } from './fixtures/csi.js'
import { needApiServer, startClusterWithNode, type Cluster } from './fixtures/kube.js'

/** The volumes recorded in a state directory (each record in two slots: state.ts). */
const recordsIn = (dir: string): number => new Set(readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, 32))).size

const NS = 'shop'
const NODE = 'node-1'
const ITEMS = `- path: labels
  fieldRef: {fieldPath: metadata.labels}
- path: annotations
  fieldRef: {fieldPath: metadata.annotations}
- path: name
  fieldRef: {fieldPath: metadata.name}
- path: meta/uid
  fieldRef: {fieldPath: metadata.uid}
- path: zone
  fieldRef: {fieldPath: "node.metadata.labels['topology.kubernetes.io/zone']"}
`

const formatLabels = (l: Record<string, string>): string => Object.keys(l).sort().map((k) => `${k}="${l[k]}"`).join('\n')

const context = (name: string, uid: string): Record<string, string> => ({ items: ITEMS, ...podInfo(NS, name, uid) })

interface Pod { name: string; uid: string; target: string; volumeId: string }

async function createPod(k: Cluster, d: Driver, name: string, labels: Record<string, string>): Promise<Pod> {
  const pod = await k.core.createNamespacedPod({
    namespace: NS,
    body: { metadata: { name, namespace: NS, labels }, spec: { nodeName: NODE, containers: [{ name: 'main', image: 'busybox' }] } },
  })
  const uid = pod.metadata!.uid!
  return { name, uid, target: d.target(uid, 'podinfo'), volumeId: `csi-${uid}` }
}

async function publish(t: Test, d: Driver, p: Pod): Promise<void> {
  const r = await d.call('Node/NodePublishVolume', {
    volume_id: p.volumeId, target_path: p.target, readonly: true, volume_context: context(p.name, p.uid),
    volume_capability: { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
  }, 20_000)
  t.ok(r.ok, `published ${p.name} ${r.details ?? ''}`)
}

async function patchLabels(k: Cluster, name: string, labels: Record<string, string>): Promise<void> {
  await k.core.patchNamespacedPod({ name, namespace: NS, body: { metadata: { labels } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
}

/** Readers in loops over a volume, as a container's programs would read it. */
function readLoops(target: string, seconds: number, bin: string): Promise<Record<string, ReaderResult>> {
  const loops: Record<string, string[]> = {
    'cat labels': ['cat', path.join(target, 'labels'), '2', String(seconds), '--contents'],
    'cat ..data/labels': ['cat', path.join(target, '..data', 'labels'), '1', String(seconds), '--contents'],
    'cat meta/uid': ['cat', path.join(target, 'meta', 'uid'), '1', String(seconds)],
    'ls /': ['ls', target, '1', String(seconds)],
    'ls ..data/meta': ['ls', path.join(target, '..data', 'meta'), '1', String(seconds)],
  }
  return Promise.all(Object.entries(loops).map(([name, args]) => new Promise<[string, ReaderResult]>((resolve, reject) => {
    const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    p.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
    p.stderr.setEncoding('utf8').on('data', (d: string) => { err += d })
    p.on('error', reject)
    p.on('close', (code, signal) => {
      if (!out.startsWith('ops ')) reject(new Error(`${name}: the reader printed nothing (exit ${code}, signal ${signal}): ${err}`))
      else resolve([name, parseReader(out)])
    })
  }))).then((rs) => Object.fromEntries(rs))
}

function checkReads(t: Test, rs: Record<string, ReaderResult>, allowed: string[]): void {
  for (const [name, r] of Object.entries(rs)) {
    t.ok(r.reads > 0, `${name}: ${r.reads} reads`)
    t.equal(r.errors, 0, `${name}: 0 failed (errnos ${JSON.stringify([...r.errnos])})`)
    for (const c of r.contents.keys()) t.ok(allowed.includes(c), `${name}: read ${JSON.stringify(c)}, a generation's bytes (no torn read)`)
  }
  t.comment(`longest single operation: ${Object.entries(rs).map(([n, r]) => `${n} ${(r.maxns / 1e6).toFixed(1)} ms`).join(', ')}`)
}

async function main(): Promise<void> {
  if (!(await needApiServer('restarts of the CSI driver'))) return

  t.test('restarts of the CSI driver, with its keeper', async (t) => {
    const k = await startClusterWithNode(t, NS, NODE)
    // A label of the Node, read by the volume: a new agent must not render before it has the Node.
    await k.core.patchNode({ name: NODE, body: { metadata: { labels: { 'topology.kubernetes.io/zone': 'z1' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
    const bin = await reader()
    // A kubelet's root: the driver's sockets, the keeper's and the records go below it.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dapifs-restart-'))
    chmodSync(dir, 0o755)
    const keeperSocket = path.join(dir, 'plugins', 'csi.dapifs.dev', 'keeper.sock')
    const stateDir = path.join(dir, 'plugins', 'csi.dapifs.dev', 'volumes')
    const keeper = await startKeeper(t, keeperSocket)
    let keeperNow = keeper
    const newDriver = (): Promise<Driver> => startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, dir })
    let d = await newDriver()
    const labels = { app: 'web', rev: '0' }
    const web = await createPod(k, d, 'web', labels)
    await publish(t, d, web)
    t.equal(await cat(path.join(web.target, 'labels')), formatLabels(labels))
    t.ok(await until(async () => keeper.lines.some((l) => l === `dapifs-keeper: keeping ${web.target} (1 held)`)), 'the keeper holds the mount\'s connection')
    t.equal(recordsIn(stateDir), 1, 'one volume record')

    await t.test('an upgrade: SIGTERM, then a new process, under readers', async (t) => {
      const before = formatLabels(labels)
      const reads = readLoops(web.target, 6, bin)
      await new Promise((resolve) => setTimeout(resolve, 1000))
      t.equal(await d.stop('SIGTERM'), 0, 'the old process exits 0')
      t.ok(d.lines.some((l) => /SIGTERM: leaving 1 volumes mounted, their connections with the keeper/.test(l)), 'it leaves the volume to the keeper')
      t.ok(mounted(web.target), 'the volume is still mounted')
      await new Promise((resolve) => setTimeout(resolve, 500))
      const t0 = performance.now()
      d = await newDriver()
      t.comment(`the new process served again ${(performance.now() - t0).toFixed(0)} ms after it started`)
      t.ok(d.lines.some((l) => l.includes(`took over pod ${NS}/web, volume "podinfo" at ${web.target}`)), 'the new process took the volume over')
      await d.waitFor(/following \d+ pods on node/)
      await new Promise((resolve) => setTimeout(resolve, 300))
      t.same(d.lines.filter((l) => l.includes('flipped to')), [], 'taking over flips nothing: the pod\'s config.seen annotation is kept, and nothing renders before the Node is read')
      t.equal(await cat(path.join(web.target, 'zone')), 'z1', 'the Node\'s zone')
      labels.rev = '1'
      await patchLabels(k, 'web', { rev: '1' })
      t.ok(await until(async () => (await cat(path.join(web.target, 'labels')).catch(() => '')) === formatLabels(labels)), 'flips resume on the new process')
      checkReads(t, await reads, [before, formatLabels(labels)])
      const republish = await d.call('Node/NodePublishVolume', {
        volume_id: web.volumeId, target_path: web.target, readonly: true, volume_context: context('web', web.uid),
        volume_capability: { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
      })
      t.ok(republish.ok, 'the kubelet\'s publish of the same volume again is a success')
    })

    await t.test('a crash: SIGKILL under readers, the pod changes meanwhile', async (t) => {
      const before = formatLabels(labels)
      const reads = readLoops(web.target, 6, bin)
      await new Promise((resolve) => setTimeout(resolve, 1000))
      await d.stop('SIGKILL')
      labels.rev = '2'
      await patchLabels(k, 'web', { rev: '2' })
      await new Promise((resolve) => setTimeout(resolve, 500))
      d = await newDriver()
      t.ok(d.lines.some((l) => l.includes(`took over pod ${NS}/web`)), 'the new process took the volume over')
      t.ok(await until(async () => (await cat(path.join(web.target, 'labels')).catch(() => '')) === formatLabels(labels)), 'and flipped to what the pod says now')
      t.equal(await cat(path.join(web.target, 'zone')), 'z1', 'with the Node\'s zone')
      checkReads(t, await reads, [before, formatLabels(labels)])
    })

    await t.test('a pod deleted while no agent ran is unpublished; the others are served', async (t) => {
      const gone = await createPod(k, d, 'gone', { app: 'gone' })
      await publish(t, d, gone)
      await d.stop('SIGKILL')
      await k.core.deleteNamespacedPod({ name: 'gone', namespace: NS, gracePeriodSeconds: 0 })
      d = await newDriver()
      const line = await d.waitFor(/is gone from the API server: unpublishing/, 0, 30_000)
      t.ok(line.includes(gone.target), line)
      t.ok(await until(async () => !mounted(gone.target)), 'its mount is gone')
      t.ok(await until(async () => recordsIn(stateDir) === 1), 'and its record')
      t.equal(await cat(path.join(web.target, 'labels')), formatLabels(labels), 'the other pod\'s volume is served')
    })

    await t.test('a restarted keeper is handed every mount again, and a crash after that is taken over', async (t) => {
      await keeper.stop('SIGKILL') // the agent's own descriptors keep the connection meanwhile
      const from = d.lines.length
      const restarted = await startKeeper(t, keeperSocket)
      await d.waitFor(/the keeper at .* answers: handing it every mount/, from, 10_000)
      t.ok(await until(async () => restarted.lines.some((l) => l.includes(`keeping ${web.target}`))), 'the new keeper holds the volume\'s connection')
      await d.stop('SIGKILL')
      d = await newDriver()
      t.ok(d.lines.some((l) => l.includes(`took over pod ${NS}/web`)), 'a new process takes it over from the new keeper')
      t.equal(await cat(path.join(web.target, 'labels')), formatLabels(labels))
      keeperNow = restarted
    })

    await t.test('after a node restart (no connection kept), records are cleared and a publish mounts afresh', async (t) => {
      await d.stop('SIGKILL')
      await keeperNow.stop('SIGKILL') // what a reboot does to the connections...
      await run('fusermount', ['-uz', web.target]) // ...and to the mounts
      const keeper2 = await startKeeper(t, keeperSocket)
      d = await newDriver()
      t.ok(d.lines.some((l) => l.includes(`${web.target}: no connection was kept for it`)), 'the record without a connection is cleared')
      t.equal(readdirSync(stateDir).filter((f) => f.endsWith('.json')).length, 0, 'no record is left')
      t.notOk(mounted(web.target), 'nothing is mounted')
      await publish(t, d, web) // the kubelet publishes again for the restarted pod
      t.equal(await cat(path.join(web.target, 'labels')), formatLabels(labels))
      t.ok(await until(async () => keeper2.lines.some((l) => l.includes(`keeping ${web.target}`))), 'the new keeper holds it')
    })

    await t.test('with no agent back, the keeper lets go, and reads fail instead of waiting for ever', async (t) => {
      await d.stop('SIGKILL')
      const keeper3 = await startKeeper(t, `${keeperSocket}.3`, ['--abandon-after', '1'])
      // A connection handed to this keeper alone, by a process that then dies.
      const d3 = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, args: ['--keeper', keeper3.socket, '--state-dir', `${stateDir}.3`] })
      const p = await createPod(k, d3, 'lonely', { app: 'lonely' })
      await publish(t, d3, p)
      await d3.stop('SIGKILL')
      const t0 = performance.now()
      const r = parseReader((await run(bin, ['ls', p.target, '1', '4'], { timeoutMs: 20_000 })).stdout.toString())
      t.ok(r.errors > 0 && r.errnos.has(107), `ls fails with ENOTCONN once the keeper let go (${JSON.stringify([...r.errnos])})`)
      t.ok(await until(async () => keeper3.lines.some((l) => l.includes('no agent for 1s: letting go of 1 descriptors'))), 'the keeper said so')
      t.comment(`the reader was answered after ${(performance.now() - t0).toFixed(0)} ms`)
      await run('fusermount', ['-uz', p.target])
    })
  })
}

await main()
