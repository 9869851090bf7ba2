// The handover (lib/csi/handover.ts): a second `dapifs csi` started beside one that serves, as a
// DaemonSet rollout with maxSurge starts it, takes every volume over from the first, with one
// keeper and against a real API server, while readers in child processes read and list each
// volume in loops: no read fails, the old process answers no request once it has let go, a
// publish sent to it then is UNAVAILABLE, and at SIGTERM it exits 0 leaving the mounts in place.
// And an agent of a release without the handover (no handover socket): the new one waits until
// it has stopped, then takes over as after any restart.
import t, { type Test } from 'tap'
import { chmodSync, mkdtempSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node'
import { cat, mounted, reader, startReader, until, type ReaderResult, type RunningReader } from './fixtures/daemon.js'
import { podInfo, startDriver, startKeeper, type Driver } from './fixtures/csi.js'
import { needApiServer, startClusterWithNode, type Cluster } from './fixtures/kube.js'

const NS = 'shop'
const NODE = 'node-1'
const ITEMS = `- path: labels
  fieldRef: {fieldPath: metadata.labels}
- path: meta/name
  fieldRef: {fieldPath: metadata.name}
`
const UNAVAILABLE = 14

const formatLabels = (l: Record<string, string>): string => Object.keys(l).sort().map((k) => `${k}="${l[k]}"`).join('\n')
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

interface Pod { name: string; uid: string; target: string; volumeId: string; labels: Record<string, string> }

async function createPod(k: Cluster, d: Driver, name: string): Promise<Pod> {
  const labels = { app: name, rev: '0' }
  const pod = await k.core.createNamespacedPod({
    namespace: NS,
    body: { metadata: { name, namespace: NS, labels }, spec: { nodeName: NODE, containers: [{ name: 'main', image: 'busybox' }] } },
  })
  const uid = pod.metadata!.uid!
  return { name, uid, target: d.target(uid, 'podinfo'), volumeId: `csi-${uid}`, labels }
}

const publishRequest = (p: Pod): object => ({
  volume_id: p.volumeId, target_path: p.target, readonly: true, volume_context: { items: ITEMS, ...podInfo(NS, p.name, p.uid) },
  volume_capability: { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
})

async function publish(t: Test, d: Driver, p: Pod): Promise<void> {
  const r = await d.call('Node/NodePublishVolume', publishRequest(p), 20_000)
  t.ok(r.ok, `published ${p.name} ${r.details ?? ''}`)
}

async function patchLabels(k: Cluster, p: Pod, rev: string): Promise<void> {
  p.labels.rev = rev
  await k.core.patchNamespacedPod({ name: p.name, namespace: NS, body: { metadata: { labels: { rev } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
}

/** Each volume read (its labels) and listed (which needs the agent every time) in loops. */
function readLoops(bin: string, pods: Pod[]): Map<string, RunningReader> {
  const loops = new Map<string, RunningReader>()
  for (const p of pods) {
    loops.set(`${p.name}: cat labels`, startReader(bin, ['cat', path.join(p.target, 'labels'), '1', '60', '--contents']))
    loops.set(`${p.name}: ls /`, startReader(bin, ['ls', p.target, '1', '60']))
    loops.set(`${p.name}: ls ..data/meta`, startReader(bin, ['ls', path.join(p.target, '..data', 'meta'), '1', '60']))
  }
  return loops
}

async function checkReads(t: Test, loops: Map<string, RunningReader>, allowed: (name: string) => string[]): Promise<number> {
  let longest = 0
  const each: string[] = []
  for (const [name, loop] of loops) {
    const r: ReaderResult = await loop.stop()
    t.ok(r.reads > 0, `${name}: ${r.reads} reads`)
    t.equal(r.errors, 0, `${name}: 0 failed (errnos ${JSON.stringify([...r.errnos])})`)
    const want = allowed(name)
    for (const c of r.contents.keys()) t.ok(want.includes(c), `${name}: read ${JSON.stringify(c)}, a generation's bytes`)
    longest = Math.max(longest, r.maxns)
    each.push(`${name} ${(r.maxns / 1e6).toFixed(1)} ms`)
  }
  t.comment(`longest single operation: ${each.join(', ')}`)
  return longest / 1e6
}

/** An API server with the namespace and the Node, the reader, a node directory, and its keeper. */
async function setUp(t: Test): Promise<{ k: Cluster; bin: string; dir: string; plugin: string }> {
  const k = await startClusterWithNode(t, NS, NODE)
  const bin = await reader()
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dapifs-handover-'))
  chmodSync(dir, 0o755)
  const plugin = path.join(dir, 'plugins', 'csi.dapifs.dev')
  await startKeeper(t, path.join(plugin, 'keeper.sock'))
  return { k, bin, dir, plugin }
}

async function main(): Promise<void> {
  if (!(await needApiServer('the handover between two agents'))) return

  t.test('a new agent takes the volumes over from one that still serves them', async (t) => {
    const { k, bin, dir, plugin } = await setUp(t)
    // The old agent logs every request it answers (DEBUG=dapifs:requests).
    const old = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, dir, env: ['DEBUG=dapifs:requests'] })
    const pods: Pod[] = []
    for (const name of ['web', 'api', 'db']) {
      const p = await createPod(k, old, name)
      await publish(t, old, p)
      pods.push(p)
    }
    for (const p of pods) t.equal(await cat(path.join(p.target, 'labels')), formatLabels(p.labels))

    const before = new Map(pods.map((p) => [p.name, formatLabels(p.labels)]))
    const loops = readLoops(bin, pods)
    await sleep(1000)
    // The new agent: its own CSI socket (to tell the two apart), the same keeper, records and
    // handover socket, which are beside the old one's CSI socket.
    const t0 = performance.now()
    const next = await startDriver(t, {
      kubeconfig: k.kubeconfig, nodeName: NODE, dir, socket: path.join(plugin, 'next', 'csi.sock'),
      args: ['--keeper', path.join(plugin, 'keeper.sock'), '--state-dir', path.join(plugin, 'volumes'), '--handover', path.join(plugin, 'handover.sock')],
    })
    t.comment(`the new agent served ${(performance.now() - t0).toFixed(0)} ms after it started`)
    const handed = await old.waitFor(/handed 3 volumes over to the newer agent/, 0, 10_000)
    t.ok(handed, 'the old agent handed its 3 volumes over')
    t.ok(next.lines.some((l) => /the old agent let go of its volumes \(GONE 3\) in \d+ ms/.test(l)), `the new one heard it: ${next.lines.find((l) => l.includes('let go'))}`)
    for (const p of pods) t.ok(next.lines.some((l) => l.includes(`took over pod ${NS}/${p.name}, volume "podinfo" at ${p.target}`)), `the new agent took ${p.name} over`)
    const handedAt = old.lines.indexOf(handed)
    const requestsAfter = (): string[] => old.lines.slice(handedAt).filter((l) => l.includes('dapifs:requests'))

    // The new agent serves: a label change made now flips there.
    await sleep(500)
    for (const p of pods) await patchLabels(k, p, '1')
    for (const p of pods) t.ok(await until(async () => (await cat(path.join(p.target, 'labels')).catch(() => '')) === formatLabels(p.labels)), `${p.name}: the new agent flips it`)
    await sleep(1000)
    const longest = await checkReads(t, loops, (name) => [before.get(name.split(':')[0]!)!, formatLabels(pods.find((p) => name.startsWith(p.name))!.labels)])
    t.comment(`the longest read or listing across the handover: ${longest.toFixed(1)} ms`)
    t.same(requestsAfter(), [], 'the old agent answered no request once it had let go (each mount answered by one process)')
    t.same(old.lines.filter((l) => l.includes('flipped to')).filter((l) => old.lines.indexOf(l) > handedAt), [], 'nor flipped anything')

    const late = await old.call('Node/NodePublishVolume', publishRequest(pods[0]!), 5000)
    t.equal(late.code, UNAVAILABLE, `a publish sent to the old agent's socket now is UNAVAILABLE (${late.details})`)
    const again = await next.call('Node/NodePublishVolume', publishRequest(pods[0]!), 5000)
    t.ok(again.ok, `the same publish to the new agent is a success ${again.details ?? ''}`)

    t.equal(await old.stop('SIGTERM'), 0, 'the old agent exits 0 at SIGTERM')
    t.ok(old.lines.some((l) => l.includes('SIGTERM: exiting (the volumes are handed over')), 'saying the volumes were handed over')
    for (const p of pods) t.ok(mounted(p.target), `${p.name}: still mounted`)
    t.same(requestsAfter(), [], 'having answered no request')
    for (const p of pods) t.equal(await cat(path.join(p.target, 'labels')), formatLabels(p.labels), `${p.name}: read through the new agent`)
    const listing = await startReader(bin, ['ls', pods[1]!.target, '1', '60'])
    await sleep(300)
    const r = await listing.stop()
    t.ok(r.reads > 0 && r.errors === 0, `listings after the old agent exited: ${r.reads}, ${r.errors} failed`)

    // The new agent is the one to hand over next time, and a SIGTERM is the ordinary one.
    t.equal(await next.stop('SIGTERM'), 0, 'the new agent exits 0 at SIGTERM')
    t.ok(next.lines.some((l) => /SIGTERM: leaving 3 volumes mounted, their connections with the keeper/.test(l)), 'leaving its volumes to the keeper')
  })

  t.test('an agent of a release without the handover: the new one waits until it has stopped', async (t) => {
    const { k, bin, dir } = await setUp(t)
    // Its handover socket elsewhere: the new agent finds none where it looks, as with an old release.
    const old = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, dir, args: ['--handover', path.join(dir, 'elsewhere.sock')] })
    const p = await createPod(k, old, 'web')
    await publish(t, old, p)
    const loops = readLoops(bin, [p])
    const next = startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, dir })
    let served = false
    void next.then(() => { served = true }, () => {})
    // The new one is not a Driver until it serves; its lines are not reachable before. It must
    // not serve while the old one does.
    await sleep(3000)
    t.notOk(served, 'the new agent does not serve while the old one does')
    t.equal(await old.stop('SIGTERM'), 0, 'the old agent stops (its pod deleted)')
    const d = await next
    t.ok(d.lines.some((l) => l.includes('without a handover socket (an earlier release): waiting for it to stop')), 'the new agent said it waited')
    t.ok(d.lines.some((l) => l.includes(`took over pod ${NS}/web`)), 'then took the volume over')
    t.equal(await cat(path.join(p.target, 'labels')), formatLabels(p.labels))
    await checkReads(t, loops, () => [formatLabels(p.labels)])
  })
}

await main()
