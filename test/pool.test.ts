// The shared worker pool (lib/native/pool.c): one node agent serves dozens of mounts with a few
// threads, whatever their number. Against a real kube-apiserver, with the keeper, and readers in
// child processes whose every operation asks the agent (a listing) or follows flips (a cat):
// concurrent readers of many mounts, mounts unpublished while their requests are in flight, and a
// takeover (SIGKILL, a new agent) while requests of every mount are in flight. Outcomes only: 0
// failed reads, no torn read, and no thread or /dev/fuse descriptor left behind.
import t, { type Test } from 'tap'
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node'
import { mounted, parseReader, reader, run, until, type ReaderResult } from './fixtures/daemon.js'
import { podInfo, startDriver, startKeeper, type Driver } from './fixtures/csi.js'
import { needApiServer, startClusterWithNode, type Cluster } from './fixtures/kube.js'

const NS = 'pool'
const NODE = 'node-1'
const PODS = 20
const VOLUMES = ['a', 'b'] // per pod: 40 mounts
const ITEMS = `- path: labels
  fieldRef: {fieldPath: metadata.labels}
- path: meta/name
  fieldRef: {fieldPath: metadata.name}
`

interface Vol { pod: string; uid: string; target: string; volumeId: string }

const threadsOf = (pid: number): number => Number(/^Threads:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
/** The process's descriptors open on /dev/fuse: one per connection it serves. */
const fuseFds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).filter((fd) => {
  try { return readlinkSync(`/proc/${pid}/fd/${fd}`) === '/dev/fuse' } catch { return false }
}).length

async function publish(d: Driver, v: Vol): Promise<boolean> {
  mkdirSync(path.dirname(v.target), { recursive: true })
  const r = await d.call('Node/NodePublishVolume', {
    volume_id: v.volumeId, target_path: v.target, readonly: true, volume_context: { items: ITEMS, ...podInfo(NS, v.pod, v.uid) },
    volume_capability: { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
  }, 30_000)
  return r.ok
}

async function patchLabels(k: Cluster, name: string, labels: Record<string, string>): Promise<void> {
  await k.core.patchNamespacedPod({ name, namespace: NS, body: { metadata: { labels } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
}

/** A listing loop on each volume (every listing asks the agent), and a cat loop of `labels` on some. */
function readAll(bin: string, vols: Vol[], cats: Vol[], seconds: number): Promise<Map<string, ReaderResult>> {
  const one = (name: string, args: string[]): Promise<[string, ReaderResult]> =>
    run(bin, args, { timeoutMs: (seconds + 60) * 1000 }).then((r) => {
      const out = r.stdout.toString()
      if (!out.startsWith('ops ')) throw new Error(`${name}: the reader printed nothing (exit ${r.code}): ${r.stderr}`)
      return [name, parseReader(out)]
    })
  return Promise.all([
    ...vols.map((v) => one(`ls ${v.target}`, ['ls', v.target, '1', String(seconds)])),
    ...cats.map((v) => one(`cat ${v.target}/labels`, ['cat', path.join(v.target, 'labels'), '1', String(seconds), '--contents'])),
  ]).then((rs) => new Map(rs))
}

function checkReads(t: Test, rs: Map<string, ReaderResult>, ok: (name: string) => boolean, contents: (name: string) => Set<string> | undefined): void {
  let reads = 0
  let failed = 0
  const failures: string[] = []
  let torn = 0
  for (const [name, r] of rs) {
    if (!ok(name)) continue
    reads += r.reads
    failed += r.errors
    if (r.errors > 0) failures.push(`${name}: ${JSON.stringify([...r.errnos])}`)
    const allowed = contents(name)
    if (allowed) torn += [...r.contents.keys()].filter((c) => !allowed.has(c)).length
    if (r.reads === 0) failures.push(`${name}: no read at all`)
  }
  t.ok(reads > 0, `${reads} reads`)
  t.equal(failed, 0, `0 failed reads ${failures.join('; ')}`)
  t.same(failures, [], 'every reader read')
  t.equal(torn, 0, 'no torn or unknown read')
}

async function main(): Promise<void> {
  if (!(await needApiServer('the shared worker pool'))) return

  t.test('the shared worker pool: many mounts, one agent', async (t) => {
    const k = await startClusterWithNode(t, NS, NODE)
    const bin = await reader()
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dapifs-pool-'))
    chmodSync(dir, 0o755)
    const keeper = await startKeeper(t, path.join(dir, 'plugins', 'csi.dapifs.dev', 'keeper.sock'))
    const newDriver = (): Promise<Driver> => startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, dir })
    let d = await newDriver()

    const vols: Vol[] = []
    const labels = new Map<string, Record<string, string>>()
    for (let i = 0; i < PODS; i++) {
      const name = `p${i}`
      labels.set(name, { app: name, rev: '0' })
      const pod = await k.core.createNamespacedPod({ namespace: NS, body: { metadata: { name, namespace: NS, labels: labels.get(name)! }, spec: { nodeName: NODE, containers: [{ name: 'main', image: 'busybox' }] } } })
      const uid = pod.metadata!.uid!
      for (const v of VOLUMES) vols.push({ pod: name, uid, target: d.target(uid, v), volumeId: `csi-${uid}-${v}` })
    }
    const format = (l: Record<string, string>): string => Object.keys(l).sort().map((key) => `${key}="${l[key]}"`).join('\n')

    await t.test('threads do not grow with mounts; every mount answers', async (t) => {
      for (const v of vols.slice(0, 2)) t.ok(await publish(d, v), `published ${v.target}`)
      const threadsAt2 = threadsOf(d.pid)
      for (const v of vols.slice(2)) if (!(await publish(d, v))) t.fail(`publish of ${v.target}`)
      const threadsAtAll = threadsOf(d.pid)
      t.ok(threadsAtAll <= threadsAt2, `threads: ${threadsAt2} at 2 mounts, ${threadsAtAll} at ${vols.length}`)
      t.equal(fuseFds(d.pid), vols.length, 'one /dev/fuse descriptor per mount')
      t.ok(await until(async () => keeper.lines.some((l) => l.includes(`(${vols.length} held)`))), 'the keeper holds them all')
    })

    // Pods whose labels change during the reads: their volumes flip, and cat reads new files.
    const flipping = [...new Set(vols.map((v) => v.pod))].slice(0, 6)
    const cats = vols.filter((v) => flipping.includes(v.pod))
    const seen = new Map<string, Set<string>>() // pod -> every labels text it had
    for (const [pod, l] of labels) seen.set(pod, new Set([format(l)]))
    const contentsOf = (name: string): Set<string> | undefined => {
      const v = cats.find((c) => name === `cat ${c.target}/labels`)
      return v ? seen.get(v.pod) : undefined
    }
    const churn = async (ms: number): Promise<void> => {
      const end = Date.now() + ms
      for (let rev = 1; Date.now() < end; rev++) {
        for (const pod of flipping) {
          const l = labels.get(pod)!
          l.rev = String(rev)
          seen.get(pod)!.add(format(l))
          await patchLabels(k, pod, { rev: l.rev })
        }
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }

    await t.test('concurrent readers of every mount, while six pods flip', async (t) => {
      const reads = readAll(bin, vols, cats, 5)
      await new Promise((resolve) => setTimeout(resolve, 500))
      await churn(3500)
      checkReads(t, await reads, () => true, contentsOf)
    })

    const [gone, kept] = [vols.filter((_, i) => i % 4 < 2), vols.filter((_, i) => i % 4 >= 2)]
    await t.test('half the mounts unpublished while requests of every mount are in flight', async (t) => {
      const reads = readAll(bin, vols, cats, 5)
      await new Promise((resolve) => setTimeout(resolve, 1500))
      const results = await Promise.all(gone.map((v) => d.call('Node/NodeUnpublishVolume', { volume_id: v.volumeId, target_path: v.target }, 30_000)))
      t.ok(results.every((r) => r.ok), `${gone.length} unpublished ${results.filter((r) => !r.ok).map((r) => r.details).join('; ')}`)
      const rs = await reads
      checkReads(t, rs, (name) => kept.some((v) => name.includes(v.target)), contentsOf)
      t.ok(gone.every((v) => !mounted(v.target)), 'the unpublished are not mounted')
      t.ok(await until(async () => fuseFds(d.pid) === kept.length), `their connections are let go: ${fuseFds(d.pid)} /dev/fuse descriptors for ${kept.length} mounts`)
      for (const v of kept.slice(0, 4)) t.equal((await run(bin, ['ls', v.target, '1', '0.2'])).code, 0, `${v.target} still answers`)
    })

    await t.test('a takeover (SIGKILL, a new agent) while requests of every mount are in flight', async (t) => {
      const keptCats = cats.filter((v) => kept.includes(v))
      const reads = readAll(bin, kept, keptCats, 6)
      await new Promise((resolve) => setTimeout(resolve, 1500))
      await d.stop('SIGKILL')
      await new Promise((resolve) => setTimeout(resolve, 300))
      d = await newDriver()
      t.equal(d.lines.filter((l) => l.includes('took over pod')).length, kept.length, `the new agent took over ${kept.length} mounts`)
      await churn(2000)
      checkReads(t, await reads, () => true, contentsOf)
      t.equal(fuseFds(d.pid), kept.length, 'one /dev/fuse descriptor per mount in the new agent')
    })

    // A kill in the middle of flips: a step of the agent's own may be waiting on its mount, its
    // request read by its own worker (lib/native/vfs-steps.c, keeper.c "An agent gone"). Each
    // killed agent must end, as a container's restart waits for it to.
    await t.test('SIGKILLs while pods flip: each killed agent ends, the next takes over, no read fails', async (t) => {
      const keptCats = cats.filter((v) => kept.includes(v))
      const KILLS = 5
      const reads = readAll(bin, kept, keptCats, 4 * KILLS)
      let rev = 1000
      for (let i = 0; i < KILLS; i++) {
        await new Promise((resolve) => setTimeout(resolve, 500))
        for (const pod of flipping) {
          const l = labels.get(pod)!
          l.rev = String(rev++)
          seen.get(pod)!.add(format(l))
          void patchLabels(k, pod, { rev: l.rev })
        }
        await new Promise((resolve) => setTimeout(resolve, 20 + i * 15)) // the flips under way
        const pid = d.pid
        const exit = d.stop('SIGKILL')
        const within = (ms: number): Promise<boolean> => Promise.race([exit.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms))])
        if (await within(10_000)) {
          d = await newDriver()
          continue
        }
        // Left waiting on its own mount behind a pod's request that only an agent can answer
        // (native-notes, "A kill while the daemon waits on its own mount"): the next agent answers it.
        const threads = readdirSync(`/proc/${pid}/task`).map((tid) => `${readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()} in ${readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8')}`)
        t.comment(`killed agent ${i + 1} (pid ${pid}) still waits: ${threads.join(', ')}; starting the next one beside it`)
        d = await newDriver()
        t.ok(await within(10_000), `killed agent ${i + 1} ends once the next one serves`)
      }
      checkReads(t, await reads, () => true, contentsOf)
      t.equal(fuseFds(d.pid), kept.length, 'one /dev/fuse descriptor per mount in the last agent')
      t.comment(`the keeper: ${keeper.lines.filter((l) => l.includes('the agent left')).join('; ') || 'no step of a killed agent was left waiting'}`)
    })

    await t.test('every mount unpublished: no connection left', async (t) => {
      for (const v of kept) t.ok((await d.call('Node/NodeUnpublishVolume', { volume_id: v.volumeId, target_path: v.target }, 30_000)).ok, `unpublished ${v.target}`)
      t.ok(await until(async () => fuseFds(d.pid) === 0), `no /dev/fuse descriptor left: ${fuseFds(d.pid)}`)
      t.ok(vols.every((v) => !mounted(v.target)), 'nothing is mounted')
    })
  })
}

await main()
