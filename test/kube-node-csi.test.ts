// dapifs's CSI driver under a real, unmodified kubelet (scripts/kube-node.sh: 1.20.2, or 1.37.2
// with DAPIFS_K8S=1.37.2): the kubelet finds it through its registration directory, publishes a
// pod's inline volume through it, and the container reads what a downwardAPI volume of the same
// items in the same pod holds (the kubelet's own bytes, modes, owners and layout: the driver
// renders as the Node's kubelet). Then: a label patch reaches both volumes (timed side by side),
// an inotify watcher in the container sees dapifs's flip and one on the host the kubelet's, in the
// same order, both volumes are alike again after the flips (links made by a later write included),
// deleting the pod unmounts the volume, and a pod with bad items never starts and shows why in its
// events; an update over a budget leaves the pod its files and a Warning event saying why; the
// metrics count it all.
import { readFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import yaml from 'js-yaml'
import { PatchStrategy, StorageV1Api, setHeaderOptions, type V1CSIDriver } from '@kubernetes/client-node'
import { RELEASES, BUSYBOX, needNode, startNode, type Node } from './fixtures/node.js'
import { startDriver } from './fixtures/csi.js'
import { run, watchDir } from './fixtures/daemon.js'
import { SNAPSHOT, comparable, seenIn, snapshotItems, snapshotPod, snapshots } from './fixtures/snapshot.js'

const NS = 'csi'
const DRIVER = 'csi.dapifs.dev'

const ITEMS = snapshotItems('c')

/** The same snapshot, on the host, of two directories. */
const hostSnapshot = (csi: string, kubelet: string): string =>
  SNAPSHOT.replace('echo "== csi"; snap /csi; echo "== kubelet"; snap /kubelet', `echo "== csi"; (snap ${JSON.stringify(csi)}); echo "== kubelet"; (snap ${JSON.stringify(kubelet)})`)

const formatLabels = (l: Record<string, string>): string => Object.keys(l).sort().map((k) => `${k}="${l[k]}"`).join('\n')

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

async function createDriverObject(node: Node): Promise<void> {
  const storage = node.kc.makeApiClient(StorageV1Api)
  const body = yaml.load(readFileSync('examples/kubernetes/csidriver.yaml', 'utf8')) as V1CSIDriver
  await storage.createCSIDriver({ body })
}

/** Polls `cat FILE` on the host until it prints want; resolves with the ms it took from t0. */
async function untilBytes(file: string, want: string, t0: number, ms = 10_000): Promise<number> {
  const deadline = Date.now() + ms
  for (;;) {
    const r = await run('cat', [file])
    if (r.code === 0 && r.stdout.toString() === want) return performance.now() - t0
    if (Date.now() > deadline) throw new Error(`${file} is not ${JSON.stringify(want)} after ${ms} ms: ${JSON.stringify(r.stdout.toString())} ${r.stderr}`)
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
}

async function main(): Promise<void> {
  for (const release of RELEASES) {
    if (!(await needNode(`dapifs under a real kubelet ${release}`, release))) continue

    await t.test(`dapifs under a real kubelet ${release}`, async (t) => {
      const node = await startNode(t, { release })
      await createDriverObject(node)
      await node.core.createNamespace({ body: { metadata: { name: NS } } })
      const driver = await startDriver(t, {
        kubeconfig: node.kubeconfig, nodeName: node.nodeName, kubeletRoot: node.kubeletRoot,
        args: ['--http-endpoint', '127.0.0.1:0', '--budget', 'volume=16Ki'],
      })
      t.teardown(() => driver.stop())
      const http = `http://127.0.0.1:${/on 127\.0\.0\.1:(\d+)/.exec(await driver.waitFor(/\/metrics, \/healthz and \/livez on /))![1]}`

      await t.test('the kubelet finds the driver through its registration directory', async (t) => {
        const line = await driver.waitFor(/registered with the kubelet|refused the registration/, 0, 60_000)
        t.equal(line, `dapifs csi: registered with the kubelet as ${DRIVER}`)
        const storage = node.kc.makeApiClient(StorageV1Api)
        const deadline = Date.now() + 30_000
        let drivers: string[] = []
        while (Date.now() < deadline) {
          const csiNode = await storage.readCSINode({ name: node.nodeName }).catch(() => undefined)
          drivers = (csiNode?.spec.drivers ?? []).map((d) => `${d.name} ${d.nodeID}`)
          if (drivers.length > 0) break
          await new Promise((resolve) => setTimeout(resolve, 200))
        }
        t.same(drivers, [`${DRIVER} ${node.nodeName}`], 'the kubelet put the driver in the node\'s CSINode')
      })

      await t.test('a pod reads the kubelet\'s bytes from its dapifs volume, and sees labels change', async (t) => {
        const labels: Record<string, string> = { app: 'csi', rev: '0', 'example.com/team': 'a.b_c-d' }
        await node.core.createNamespacedPod({ namespace: NS, body: snapshotPod({ nodeName: node.nodeName, labels, container: 'c', image: BUSYBOX, driver: DRIVER }) })
        const t0 = performance.now()
        const pod = await node.waitForPod(NS, 'both', (p) => p.status?.phase === 'Running', 90_000)
        t.comment(`pod Running after ${((performance.now() - t0) / 1000).toFixed(1)} s`)
        const uid = pod.metadata!.uid!

        const log = await node.waitForLog(NS, 'both', 'c', (l) => l.includes('== end\n'), 30_000, { stream: 'stdout' })
        const snap = snapshots(log)
        t.ok(snap.kubelet.length >= 15, `the kubelet's volume, as the container sees it:\n${snap.kubelet.join('\n')}`)
        t.same(snap.csi.map(comparable), snap.kubelet.map(comparable), 'the dapifs volume holds the same entries, modes, owners, links and bytes')
        // Go's time.RFC3339Nano, in UTC; the two agents saw the pod at nearly the same time.
        const [seenCsi, seenKubelet] = [seenIn(snap.csi), seenIn(snap.kubelet)]
        t.match(seenCsi, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$/, `config.seen in the dapifs volume: ${seenCsi}`)
        t.ok(Math.abs(Date.parse(seenCsi!) - Date.parse(seenKubelet!)) < 5_000, `within seconds of the kubelet's: ${seenKubelet}`)
        const labelsLine = snap.csi.find((l) => l.startsWith('./..TS/labels '))
        t.equal(labelsLine, `./..TS/labels 640 0:4321 ${Buffer.byteLength(formatLabels(labels))} ${Buffer.from(formatLabels(labels)).toString('hex')}`,
          'the labels file, byte for byte')
        await node.waitForLog(NS, 'both', 'c', (l) => l.includes('inotify-watch: watching /csi'), 30_000, { stream: 'stderr' })

        const target = path.join(node.kubeletRoot, 'pods', uid, 'volumes', 'kubernetes.io~csi', 'podinfo', 'mount')
        const kubeletDir = path.join(node.kubeletRoot, 'pods', uid, 'volumes', 'kubernetes.io~downward-api', 'kube')
        t.ok(node.mountsBelow().includes(target), `the kubelet published the volume at ${target}`)
        t.ok(driver.lines.some((l) => l.includes(`published pod ${NS}/both`) && l.includes(target)), 'the driver logged the publish')

        // The kubelet's own flips, as a watcher on the host sees them.
        const kubeletWatch = await watchDir(t, kubeletDir)
        // Side by side: the same patch, to the new bytes in each volume (read on the host).
        const dapifsMs: number[] = []
        const kubeletMs: number[] = []
        for (let rev = 1; rev <= 5; rev++) {
          const before = (await node.containerLog(NS, 'both', 'c', { stream: 'stdout' })).length
          labels.rev = String(rev)
          const want = formatLabels(labels)
          const t1 = performance.now()
          await node.core.patchNamespacedPod({ name: 'both', namespace: NS, body: { metadata: { labels: { rev: String(rev) } } } },
            setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
          const [d, k] = await Promise.all([untilBytes(path.join(target, 'labels'), want, t1), untilBytes(path.join(kubeletDir, 'labels'), want, t1, 90_000)])
          dapifsMs.push(d)
          kubeletMs.push(k)
          const events = await node.waitForLog(NS, 'both', 'c', (l) => /^MOVED_TO \.\.data$/m.test(l.slice(before)), 10_000, { stream: 'stdout' })
            .then((l) => l.slice(before).split('\n').filter(Boolean))
          if (rev === 1) {
            t.comment(`inotify events in the container for one flip:\n${events.join('\n')}`)
            t.same(events.filter((e) => e.includes('..data') && !e.startsWith('ATTRIB')), ['CREATE ..data_tmp', 'MOVED_FROM ..data_tmp', 'MOVED_TO ..data'], 'the atomic writer\'s events, in order')
            // The kubelet's, on the host: its events at the top of the volume but the timestamped
            // directories' (dapifs's appear inside the daemon, unseen).
            const deadline = Date.now() + 10_000
            while (!kubeletWatch.events().some((e) => /^MOVED_TO \.\.data$/.test(e)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
            const kubeletEvents = kubeletWatch.events().filter((e) => !/ \.\.\d{4}_/.test(e) && !/^(OPEN|ACCESS|CLOSE)/.test(e))
            t.comment(`inotify events of the kubelet ${node.release}'s own flip, on the host:\n${kubeletWatch.events().join('\n')}`)
            // From 1.21 the kubelet's ownership change Lchowns every link at each write (from 1.27
            // before ..data_tmp): an ATTRIB per link, which dapifs's flip makes too (flip.ts).
            const attrib = kubeletEvents.filter((e) => /^ATTRIB /.test(e))
            const links = ['..data', ...ITEMS.map((i) => i.path.split('/')[0]!)]
            t.same([...new Set(attrib)].sort(), node.release === '1.20.2' ? [] : [...new Set(links.map((l) => `ATTRIB ${l}`))].sort(),
              `the kubelet ${node.release}'s ownership change: ${attrib.length ? 'an ATTRIB event for every link' : 'no events on links'}`)
            // The ATTRIBs' order among themselves is the order of the kubelet's walk: unsorted on
            // 1.37 (walkDeep: the order its filesystem lists the directory in), so each one's, and
            // no watcher can rely on it. Everything else comes in the same order, and so does where
            // the ATTRIBs fall among the rest.
            const kubeletTop = kubeletEvents.filter((e) => !/ISDIR/.test(e))
            const dapifsTop = events.filter((e) => !/ISDIR|\.\.\d{4}_/.test(e))
            const shape = (es: string[]): string[] => es.map((e) => (e.startsWith('ATTRIB ') ? 'ATTRIB' : e))
            t.same(shape(dapifsTop), shape(kubeletTop), `dapifs's flip shows the kubelet ${node.release}'s events, in the same order (an ATTRIB for an ATTRIB)`)
            t.same(dapifsTop.filter((e) => e.startsWith('ATTRIB ')).sort(), kubeletTop.filter((e) => e.startsWith('ATTRIB ')).sort(),
              `and the same ATTRIB events: ${kubeletTop.filter((e) => e.startsWith('ATTRIB ')).length}`)
            kubeletWatch.stop()
          }
        }
        // After the flips (a later write: on 1.20, ..data is then made in the setgid root), read on the host.
        const again = snapshots((await run('bash', ['-c', hostSnapshot(target, kubeletDir)])).stdout.toString())
        t.same(again.csi.map(comparable), again.kubelet.map(comparable), 'after the flips too, the same entries, modes, owners, links and bytes')
        const fmt = (xs: number[]): string => `median ${(median(xs) / 1000).toFixed(3)} s, ${(Math.min(...xs) / 1000).toFixed(3)}–${(Math.max(...xs) / 1000).toFixed(3)} s`
        t.comment(`label patch to new bytes on the host, 5 patches: dapifs ${fmt(dapifsMs)}; kubelet ${fmt(kubeletMs)}`)
        t.pass('every label patch reached both volumes, and the container saw each dapifs flip')

        await node.core.deleteNamespacedPod({ name: 'both', namespace: NS, gracePeriodSeconds: 1 })
        await node.waitForPodGone(NS, 'both', 60_000)
        t.same(node.mountsBelow().filter((m) => m.includes(uid)), [], 'deleting the pod unmounted both volumes')
        t.ok(driver.lines.some((l) => l.includes(`unpublished pod ${NS}/both`) && l.includes(target)), 'the driver logged the unpublish')
        t.same((await node.events(NS, 'both')).filter((e) => /^Failed/.test(e)), [], 'no Failed events')
      })

      await t.test('a pod with bad items never starts, and its events say why', async (t) => {
        await node.core.createNamespacedPod({
          namespace: NS,
          body: {
            metadata: { name: 'bad' },
            spec: {
              nodeName: node.nodeName,
              hostNetwork: true,
              dnsPolicy: 'Default',
              terminationGracePeriodSeconds: 1,
              containers: [{ name: 'c', image: BUSYBOX, imagePullPolicy: 'Never', command: ['cat', '/csi/x'], volumeMounts: [{ name: 'podinfo', mountPath: '/csi' }] }],
              volumes: [{ name: 'podinfo', csi: { driver: DRIVER, readOnly: true, volumeAttributes: { items: '- path: x\n  fieldRef: {fieldPath: metadata.bogus}\n' } } }],
            },
          },
        })
        const deadline = Date.now() + 60_000
        let failed: string[] = []
        while (Date.now() < deadline && failed.length === 0) {
          failed = (await node.events(NS, 'bad')).filter((e) => e.startsWith('FailedMount: '))
          if (failed.length === 0) await new Promise((resolve) => setTimeout(resolve, 250))
        }
        // The kubelet's wrapping, then the driver's one line (as `dapifs render` words it: csi.test.ts).
        t.match(failed[0], /^FailedMount: MountVolume\.SetUp failed for volume "podinfo" : rpc error: code = InvalidArgument desc = volume "podinfo", item "x": \S.*$/,
          `the event carries the INVALID_ARGUMENT line: ${failed[0]}`)
        const pod = await node.core.readNamespacedPod({ name: 'bad', namespace: NS })
        t.equal(pod.status?.phase, 'Pending', 'the pod never starts')
        t.same(pod.status?.containerStatuses?.map((c) => c.state?.waiting?.reason), ['ContainerCreating'], 'its container is waiting for the volume')
        // Its ServiceAccount token's volume is mounted; the dapifs volume is not.
        t.same(node.mountsBelow().filter((m) => m.includes(pod.metadata!.uid!) && m.includes('/volumes/kubernetes.io~csi/')), [], 'no dapifs volume is mounted for it')
        await node.core.deleteNamespacedPod({ name: 'bad', namespace: NS, gracePeriodSeconds: 0 })
        await node.waitForPodGone(NS, 'bad', 60_000)
      })

      await t.test('an update over a budget: the pod keeps its files, and its events say why', async (t) => {
        await node.core.createNamespacedPod({
          namespace: NS,
          body: {
            metadata: { name: 'grows', annotations: { note: 'small' } },
            spec: {
              nodeName: node.nodeName,
              hostNetwork: true,
              dnsPolicy: 'Default',
              terminationGracePeriodSeconds: 1,
              containers: [{ name: 'c', image: BUSYBOX, imagePullPolicy: 'Never', command: ['sleep', '3600'], volumeMounts: [{ name: 'podinfo', mountPath: '/csi' }] }],
              volumes: [{ name: 'podinfo', csi: { driver: DRIVER, readOnly: true, volumeAttributes: { items: '- {path: annotations, fieldRef: {fieldPath: metadata.annotations}}\n' } } }],
            },
          },
        })
        const pod = await node.waitForPod(NS, 'grows', (p) => p.status?.phase === 'Running', 90_000)
        const target = path.join(node.kubeletRoot, 'pods', pod.metadata!.uid!, 'volumes', 'kubernetes.io~csi', 'podinfo', 'mount')
        await node.core.patchNamespacedPod({ name: 'grows', namespace: NS, body: { metadata: { annotations: { note: 'x'.repeat(20_000) } } } },
          setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
        const deadline = Date.now() + 30_000
        let warned: string[] = []
        while (Date.now() < deadline && warned.length === 0) {
          warned = (await node.events(NS, 'grows')).filter((e) => e.startsWith('FailedVolumeUpdate: '))
          if (warned.length === 0) await new Promise((resolve) => setTimeout(resolve, 250))
        }
        t.match(warned, [/^FailedVolumeUpdate: volume "podinfo" was not updated: renders 20,\d{3} bytes, over the budget of 16 KiB \(--budget volume=\.\.\.\); it keeps serving its last good files$/],
          `the driver's Warning event, as kubectl describe pod lists it: ${warned[0]}`)
        t.match((await run('cat', [path.join(target, 'annotations')])).stdout.toString(), /note="small"/, 'the last good files are served')

        // What the metrics said of all this, under the real kubelet.
        const text = await (await fetch(`${http}/metrics`)).text()
        const value = (key: string): number => Number(new RegExp(`^${key.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN)
        t.ok(value('dapifs_node_publish_total{code="OK"}') >= 2, `publishes OK: ${value('dapifs_node_publish_total{code="OK"}')}`)
        t.ok(value('dapifs_node_publish_total{code="INVALID_ARGUMENT"}') >= 1, `publishes refused (the pod with bad items, retried by the kubelet): ${value('dapifs_node_publish_total{code="INVALID_ARGUMENT"}')}`)
        t.ok(value('dapifs_node_unpublish_total{code="OK"}') >= 1, `unpublishes OK: ${value('dapifs_node_unpublish_total{code="OK"}')}`)
        t.ok(value('dapifs_flips_total') >= 5, `flips: ${value('dapifs_flips_total')}`)
        t.ok(value('dapifs_update_seconds_count') >= 5, `updates timed: ${value('dapifs_update_seconds_count')}`)
        t.ok(value('dapifs_render_errors_total') >= 1, `render errors: ${value('dapifs_render_errors_total')}`)
        t.equal(value('dapifs_volumes'), 1, 'one volume served')
        t.equal(value('dapifs_watch_up{resource="pods"}'), 1)
        const health = await fetch(`${http}/healthz`)
        t.equal(health.status, 503, '/healthz: not ready without a keeper')
        t.match(await health.text(), /^the keeper at .* is not connected/)
        t.equal((await fetch(`${http}/livez`)).status, 200, '/livez: ok')
        await node.core.deleteNamespacedPod({ name: 'grows', namespace: NS, gracePeriodSeconds: 0 })
        await node.waitForPodGone(NS, 'grows', 60_000)
      })
    })
  }
}

await main()
