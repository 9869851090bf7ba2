// One node agent serves every pod on its node, so every pod author is a possible adversary: what
// one pod asks for must not cost the others. Against a real kube-apiserver, over gRPC as the
// kubelet calls the driver: budgets refused up front and at run time; targets only where the
// kubelet puts a pod's CSI volumes; unpublish only of dapifs's own mounts; small records, checked
// when read back; log lines that no value can forge; and readers of one pod that never fail
// while another pod publishes and updates the largest volume the budgets allow.
import t from 'tap'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { cat, mounted, parseReader, reader, run, until } from './fixtures/daemon.js'
import { podInfo, startDriver, startKeeper, type Driver } from './fixtures/csi.js'
import { needApiServer, startCluster } from './fixtures/kube.js'

const NS = 'shop'
const NODE = 'node-1'
const KiB = 1024

const podBody = (name: string, extra: { labels?: Record<string, string>; annotations?: Record<string, string> } = {}) => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name, namespace: NS, labels: extra.labels ?? { app: name }, annotations: extra.annotations ?? { owner: 'team-a' } },
  spec: { nodeName: NODE, containers: [{ name: 'main', image: 'busybox' }] },
})

type PodObj = { metadata?: { name?: string; uid?: string } }
const ctx = (pod: PodObj, items: string): Record<string, string> => ({ items, ...podInfo(NS, pod.metadata!.name!, pod.metadata!.uid!) })
const req = (target: string, volumeContext: Record<string, string>, volumeId = `csi-${path.basename(path.dirname(target))}`) => ({
  volume_id: volumeId, target_path: target, readonly: true, volume_context: volumeContext,
  volume_capability: { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
})
const item = (p: string, fieldPath: string): string => `- {path: ${JSON.stringify(p)}, fieldRef: {fieldPath: ${fieldPath}}}\n`
const LABELS = item('labels', 'metadata.labels')

async function publish(d: Driver, pod: PodObj, name: string, items: string): Promise<{ target: string; code?: number; details?: string; ok: boolean }> {
  const target = d.target(pod.metadata!.uid!, name)
  mkdirSync(path.dirname(target), { recursive: true })
  const r = await d.call('Node/NodePublishVolume', req(target, ctx(pod, items)), 30_000)
  return { target, ok: r.ok, ...(r.code !== undefined ? { code: r.code } : {}), ...(r.details !== undefined ? { details: r.details } : {}) }
}

async function main(): Promise<void> {
  if (!(await needApiServer('the node agent shared by every pod'))) return

  t.test('one node agent, every pod a possible adversary', async (t) => {
    const k = await startCluster(t)
    await k.core.createNamespace({ body: { metadata: { name: NS } } })
    await k.core.createNode({ body: { metadata: { name: NODE }, status: { allocatable: { cpu: '4', memory: '8Gi' } } } })
    const big = 'x'.repeat(250 * KiB) // within the API server's 256 KiB of annotations
    const heavy = await k.core.createNamespacedPod({ namespace: NS, body: podBody('heavy', { annotations: { big } }) })
    const web = await k.core.createNamespacedPod({ namespace: NS, body: podBody('web') })

    await t.test('budgets at publish: INVALID_ARGUMENT naming the budget and the figure, nothing mounted', async (t) => {
      const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE })
      const cases: [string, string, string, string | RegExp][] = [
        ['items', '1,001 items', Array.from({ length: 1001 }, (_, i) => `- {path: n${i}, fieldRef: {fieldPath: metadata.name}}\n`).join(''),
          'volume "items": has 1,001 items, over the budget of 1,000 items (--budget items=...)'],
        ['bytes', 'items reading the largest annotations, over the volume\'s bytes', Array.from({ length: 9 }, (_, i) => item(`a${i}`, 'metadata.annotations')).join(''),
          /^pod shop\/heavy: volume "bytes": renders 2,30\d,\d{3} bytes, over the budget of 2 MiB \(--budget volume=\.\.\.\)$/],
        ['text', 'an items text over 64 KiB', item('a', 'metadata.name').repeat(2000),
          `volumeAttributes.items: is ${(item('a', 'metadata.name').length * 2000).toLocaleString('en-US')} bytes, over the budget of 64 KiB (--budget items-text=...)`],
        ['aliases', '3,000 YAML aliases of one item', `- &a {path: a, fieldRef: {fieldPath: metadata.annotations}}\n${'- *a\n'.repeat(3000)}`,
          'volumeAttributes.items: YAML anchors and aliases (&a, *a) are not allowed here: write each item out'],
      ]
      for (const [name, what, items, details] of cases) {
        const r = await publish(d, heavy, name, items)
        t.equal(r.code, grpc.status.INVALID_ARGUMENT, `${what}: INVALID_ARGUMENT`)
        if (typeof details === 'string') t.equal(r.details, details)
        else t.match(r.details, details)
        t.notOk(mounted(r.target), 'nothing mounted')
      }
      const fits = await publish(d, heavy, 'fits', Array.from({ length: 8 }, (_, i) => item(`a${i}`, 'metadata.annotations')).join(''))
      t.ok(fits.ok, `eight copies of the largest annotations fit: ${fits.details ?? 'ok'}`)
      t.ok((await cat(path.join(fits.target, 'a7'))).length > 250 * KiB, 'each of them whole')
      t.ok((await d.call('Node/NodeUnpublishVolume', { volume_id: 'x', target_path: fits.target })).ok)
    })

    await t.test('budgets at run time: logged once, the last good generation kept, the next good one flipped to', async (t) => {
      const pod = await k.core.createNamespacedPod({ namespace: NS, body: podBody('grows') })
      const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, args: ['--budget', 'volume=4Ki'] })
      const p = await publish(d, pod, 'podinfo', LABELS + item('annotations', 'metadata.annotations'))
      t.ok(p.ok, p.details ?? 'ok')
      const patch = (value: string) => k.core.patchNamespacedPod({ name: 'grows', namespace: NS, body: [{ op: 'replace', path: '/metadata/annotations/owner', value }] })
      const mark = d.lines.length
      await patch('y'.repeat(5000))
      await d.waitFor(/over the budget of 4 KiB/, mark)
      await k.core.patchNamespacedPod({ name: 'grows', namespace: NS, body: [{ op: 'add', path: '/metadata/labels/tier', value: 'front' }] })
      await new Promise((r) => setTimeout(r, 500))
      const said = d.lines.slice(mark).filter((l) => l.includes('over the budget'))
      t.equal(said.length, 1, 'said once, though the pod changed again')
      t.match(said[0], /^dapifs csi: pod shop\/grows, volume "podinfo": volume "podinfo": renders 5,\d{3} bytes, over the budget of 4 KiB \(--budget volume=\.\.\.\) \(still serving \.\.\d{4}_/)
      t.match(await cat(path.join(p.target, 'annotations')), /\nowner="team-a"$/, 'the last good bytes are served')
      t.equal(await cat(path.join(p.target, 'labels')), 'app="grows"')
      await patch('team-b')
      t.ok(await until(async () => (await cat(path.join(p.target, 'annotations'))).endsWith('\nowner="team-b"')), 'a change within the budget flips')
      t.equal(await cat(path.join(p.target, 'labels')), 'app="grows"\ntier="front"')
    })

    await t.test('a pod\'s volumes together: volumes per pod, bytes per pod', async (t) => {
      const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, args: ['--budget', 'pod-volumes=2,pod=600Ki'] })
      const a = await publish(d, heavy, 'one', item('a', 'metadata.annotations'))
      const b = await publish(d, heavy, 'two', item('a', 'metadata.annotations'))
      t.ok(a.ok && b.ok, 'two volumes of 250 KiB')
      const c = await publish(d, heavy, 'three', item('n', 'metadata.name'))
      t.equal(c.code, grpc.status.INVALID_ARGUMENT)
      t.equal(c.details, 'pod shop/heavy: would have 3 volumes, over the budget of 2 volumes (--budget pod-volumes=...)')
      t.ok((await d.call('Node/NodeUnpublishVolume', { volume_id: 'x', target_path: b.target })).ok)
      const e = await publish(d, heavy, 'three', item('a', 'metadata.annotations') + item('b', 'metadata.annotations'))
      t.match(e.details, /^pod shop\/heavy: would serve, in 2 volumes, 768,\d{3} bytes, over the budget of 600 KiB \(--budget pod=\.\.\.\)$/)
      t.notOk(mounted(e.target))
      for (const x of [a, c]) await d.call('Node/NodeUnpublishVolume', { volume_id: 'x', target_path: x.target })
    })

    await t.test('targets: only where the kubelet puts this pod\'s CSI volumes; unpublish only of dapifs mounts', async (t) => {
      const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE })
      const c = ctx(web, LABELS)
      const refused = async (target: string, details: string): Promise<void> => {
        const r = await d.call('Node/NodePublishVolume', req(target, c))
        t.equal(r.code, grpc.status.INVALID_ARGUMENT, `${target.slice(0, 80)}: INVALID_ARGUMENT`)
        t.equal(r.details, details)
      }
      const shape = `${d.dir}/pods/UID/volumes/kubernetes.io~csi/NAME/mount; dapifs csi --kubelet-dir`
      await refused('/etc/cron.d/mount', `target_path "/etc/cron.d/mount": is not where the kubelet puts a pod's CSI volumes (${shape})`)
      await refused(path.join(d.dir, 'pods', web.metadata!.uid!, 'volumes', 'kubernetes.io~csi', 'x', 'mount', '..', '..', '..', '..', '..', 'etc'),
        `target_path ${JSON.stringify(path.join(d.dir, 'pods', web.metadata!.uid!, 'volumes', 'kubernetes.io~csi', 'x', 'mount', '..', '..', '..', '..', '..', 'etc'))}: is not where the kubelet puts a pod's CSI volumes (${shape})`)
      await refused(d.target(heavy.metadata!.uid!, 'podinfo'), `target_path ${JSON.stringify(d.target(heavy.metadata!.uid!, 'podinfo'))}: is not a volume directory of pod uid ${JSON.stringify(web.metadata!.uid!)} (csi.storage.k8s.io/pod.uid)`)
      const long = d.target(web.metadata!.uid!, 'v'.repeat(1100))
      await refused(long, `target_path ${JSON.stringify(long)}: is longer than 1023 bytes`)
      await refused(d.target(web.metadata!.uid!, 'a\nb'), `target_path ${JSON.stringify(d.target(web.metadata!.uid!, 'a\nb'))}: is not where the kubelet puts a pod's CSI volumes (${shape})`)
      // Something else mounted where a dapifs volume would be: not ours to unmount.
      const other = d.target(web.metadata!.uid!, 'other')
      mkdirSync(other, { recursive: true })
      t.equal((await run('mount', ['-t', 'tmpfs', 'tmpfs', other])).code, 0)
      t.teardown(() => run('umount', ['-l', other]))
      const u = await d.call('Node/NodeUnpublishVolume', { volume_id: 'x', target_path: other })
      t.equal(u.code, grpc.status.FAILED_PRECONDITION)
      t.equal(u.details, `${other}: a "tmpfs" filesystem is mounted there, not a dapifs volume; not unmounting it`)
      t.ok(mounted(other), 'the tmpfs is still mounted')
      const outside = await d.call('Node/NodeUnpublishVolume', { volume_id: 'x', target_path: '/tmp' })
      t.equal(outside.code, grpc.status.INVALID_ARGUMENT, 'an unpublish outside the kubelet\'s volumes: INVALID_ARGUMENT')
    })

    await t.test('records: small, bytes written once by hash; a tampered one is not served', async (t) => {
      // The keeper where the driver looks for it by default: beside its CSI socket.
      const root = mkdtempSync(path.join(os.tmpdir(), 'dapifs-csi-'))
      chmodSync(root, 0o755)
      const keeper = await startKeeper(t, path.join(root, 'plugins', 'csi.dapifs.dev', 'keeper.sock'))
      const d1 = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, dir: root })
      const pod = await k.core.createNamespacedPod({ namespace: NS, body: podBody('rec', { annotations: { big: 'z'.repeat(100 * KiB) } }) })
      const items = Array.from({ length: 8 }, (_, i) => item(`a${i}`, 'metadata.annotations')).join('') + LABELS + item('name', 'metadata.name')
      const p = await publish(d1, pod, 'podinfo', items)
      t.ok(p.ok, p.details ?? 'ok')
      const state = path.join(path.dirname(d1.socket), 'volumes')
      const key = readdirSync(state).find((n) => n.endsWith('.json'))!.slice(0, 32)
      const slots = [0, 1].map((i) => path.join(state, `${key}.${i}.json`))
      const blobs = path.join(state, key)
      t.equal(readdirSync(blobs).length, 1, 'one blob: the annotations (eight files, one content); the labels and the name, small, are in the record')
      t.ok(statSync(slots[0]!).size < 4 * KiB, `the record is ${statSync(slots[0]!).size} bytes for a volume of 800 KiB`)
      const annotationsBlob = readdirSync(blobs).map((n) => path.join(blobs, n)).find((f) => statSync(f).size > 100 * KiB)!
      const ino = statSync(annotationsBlob).ino
      const mark = d1.lines.length
      await k.core.patchNamespacedPod({ name: 'rec', namespace: NS, body: [{ op: 'add', path: '/metadata/labels/tier', value: 'front' }] })
      await d1.waitFor(/flipped to/, mark)
      t.equal(readdirSync(blobs).length, 1, 'after a label change: still the one blob')
      t.equal(statSync(annotationsBlob).ino, ino, 'the annotations were not written again')

      // The agent dies; its record is tampered with; the next one must not serve it.
      await d1.stop('SIGKILL')
      for (const slot of slots) {
        const r = JSON.parse(readFileSync(slot, 'utf8'))
        r.generation.files[0].path = '../../../../etc/cron.d/x'
        writeFileSync(slot, JSON.stringify(r))
      }
      const d2 = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, dir: root })
      void keeper
      await d2.waitFor(/its recorded volume is not valid here \(file "\.\.\/\.\.\/\.\.\/\.\.\/etc\/cron\.d\/x": path must not contain '\.\.'\); unmounting it/)
      t.ok(await until(async () => !mounted(p.target)), 'its mount is gone, for the kubelet to publish afresh')
      t.notOk(slots.some((slot) => existsSync(slot)), 'and its record')
      await d2.stop()
    })

    await t.test('log lines: a pod\'s item paths are quoted, and cannot forge a line', async (t) => {
      const pod = await k.core.createNamespacedPod({ namespace: NS, body: podBody('forger') })
      const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE })
      const forged = 'x\ndapifs csi: published pod kube-system/coredns, volume "root" at /var'
      const p = await publish(d, pod, 'podinfo', `- path: ${JSON.stringify(forged)}\n  fieldRef: {fieldPath: metadata.labels}\n`)
      t.ok(p.ok, p.details ?? 'the kubelet allows a newline in a path, and so does dapifs')
      const mark = d.lines.length
      await k.core.patchNamespacedPod({ name: 'forger', namespace: NS, body: [{ op: 'add', path: '/metadata/labels/tier', value: 'front' }] })
      const line = await d.waitFor(/flipped to/, mark)
      t.match(line, /: "x\\ndapifs csi: published pod kube-system\/coredns, volume \\"root\\" at \/var" changed$/, 'the path is quoted, its newline escaped')
      t.notOk(d.lines.some((l) => l.startsWith('dapifs csi: published pod kube-system/')), 'no line was forged')
    })

    await t.test('no pod delays another: readers of one pod while another publishes and updates the largest volume the budgets allow', async (t) => {
      const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE })
      const quiet = await publish(d, web, 'podinfo', LABELS + item('name', 'metadata.name'))
      t.ok(quiet.ok)
      const bin = await reader()
      const SECONDS = 8
      // Directory listings reach the agent every time (FUSE caches none); cats of a file do not.
      const readers = [
        run(bin, ['ls', quiet.target, '2', String(SECONDS)], { timeoutMs: 60_000 }),
        run(bin, ['ls', path.join(quiet.target, '..data'), '1', String(SECONDS)], { timeoutMs: 60_000 }),
        run(bin, ['cat', path.join(quiet.target, 'labels'), '1', String(SECONDS)], { timeoutMs: 60_000 }),
      ]
      await new Promise((r) => setTimeout(r, 500))
      // The largest volume: 8 files of the largest annotations (2 MB), 991 more items, in 58 KiB of YAML.
      const items = Array.from({ length: 8 }, (_, i) => item(`a${i}`, 'metadata.annotations')).join('') + LABELS +
        Array.from({ length: 991 }, (_, i) => `- {path: n${i}, fieldRef: {fieldPath: metadata.name}}\n`).join('')
      const heavyPub = await publish(d, heavy, 'largest', items)
      t.ok(heavyPub.ok, heavyPub.details ?? 'the largest volume the budgets allow is published')
      let flips = 0
      for (let i = 0; i < 10; i++) {
        const mark = d.lines.length
        await k.core.patchNamespacedPod({ name: 'heavy', namespace: NS, body: [{ op: 'add', path: '/metadata/labels/rev', value: String(i) }] })
        await d.waitFor(/pod shop\/heavy, volume "largest": flipped to/, mark)
        flips++
      }
      const caps = await d.call('Node/NodeGetCapabilities')
      t.ok(caps.ok, 'CSI calls are answered meanwhile')
      const results = (await Promise.all(readers)).map((r) => parseReader(r.stdout.toString()))
      for (const [i, r] of results.entries()) {
        t.ok(r.reads > 0, `reader ${i}: ${r.reads} reads`)
        t.equal(r.errors, 0, `reader ${i}: no failed read`)
      }
      t.equal(flips, 10, 'the heavy pod flipped 10 times meanwhile')
      t.comment(`longest wait of a listing of the quiet pod's volume: ${Math.max(...results.slice(0, 2).map((r) => r.maxns)) / 1e6} ms (p99 ${Math.max(...results.slice(0, 2).map((r) => r.p99ns)) / 1e6} ms)`)
      t.ok((await d.call('Node/NodeUnpublishVolume', { volume_id: 'x', target_path: heavyPub.target })).ok)
    })
  })
}

void main()
