// The real node (scripts/kube-node.sh) works end to end: an unmodified kubelet 1.20.2 runs a pod
// whose container reads a downward API volume the kubelet wrote, and inotify-watch in it sees
// the kubelet's atomic flip of ..data when a label changes.
import t from 'tap'
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node'
import { BUSYBOX, needNode, startNode } from './fixtures/node.js'

const NS = 'smoke'

const formatLabels = (l: Record<string, string>): string => Object.keys(l).sort().map((k) => `${k}="${l[k]}"`).join('\n')

async function main(): Promise<void> {
  if (!(await needNode('a real node'))) return

  t.test('a pod on a real kubelet sees its downward API volume flip', async (t) => {
    const node = await startNode(t)
    t.comment(`node Ready after ${node.upSeconds.toFixed(1)} s`)
    await node.core.createNamespace({ body: { metadata: { name: NS } } })
    const labels: Record<string, string> = { app: 'smoke', rev: '0' }
    await node.core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: 'watch', labels },
        spec: {
          nodeName: node.nodeName,
          hostNetwork: true,
          dnsPolicy: 'Default',
          terminationGracePeriodSeconds: 1,
          containers: [{
            name: 'c', image: BUSYBOX, imagePullPolicy: 'Never',
            command: ['sh', '-c', 'cat /podinfo/labels; echo; exec inotify-watch /podinfo'],
            volumeMounts: [{ name: 'podinfo', mountPath: '/podinfo' }],
          }],
          volumes: [{ name: 'podinfo', downwardAPI: { items: [{ path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } }] } }],
        },
      },
    })
    const t0 = performance.now()
    const pod = await node.waitForPod(NS, 'watch', (p) => p.status?.phase === 'Running', 60_000)
    t.comment(`pod Running after ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    const uid = pod.metadata!.uid!

    await node.waitForLog(NS, 'watch', 'c', (l) => l.includes('inotify-watch: watching /podinfo'), 30_000, { stream: 'stderr' })
    // What follows are inotify events: the kubelet also reads the volume's directory now and then.
    const first = formatLabels(labels) + '\n'
    t.equal((await node.containerLog(NS, 'watch', 'c', { stream: 'stdout' })).slice(0, first.length), first, 'the container read the labels\' bytes')

    const mountsOfPod = node.mountsBelow().filter((m) => m.includes(uid))
    t.ok(mountsOfPod.some((m) => m.endsWith('/volumes/kubernetes.io~downward-api/podinfo')), `the volume is mounted: ${mountsOfPod.join(' ')}`)

    const before = (await node.containerLog(NS, 'watch', 'c', { stream: 'stdout' })).length
    const t1 = performance.now()
    await node.core.patchNamespacedPod({ name: 'watch', namespace: NS, body: { metadata: { labels: { rev: '1' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
    const log = await node.waitForLog(NS, 'watch', 'c', (l) => /^MOVED_TO \.\.data$/m.test(l.slice(before)), 30_000, { stream: 'stdout' })
    t.comment(`patch -> MOVED_TO ..data in the container's log after ${((performance.now() - t1) / 1000).toFixed(2)} s`)
    const events = log.slice(before).split('\n').filter(Boolean)
    t.comment(`inotify events on /podinfo for one flip:\n${events.join('\n')}`)
    t.ok(events.some((e) => /^CREATE,ISDIR \.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+$/.test(e)), 'a new timestamped directory')
    t.ok(events.indexOf('MOVED_TO ..data') > events.findIndex((e) => e.startsWith('CREATE,ISDIR ..2')), '..data moves in after it')

    await node.core.deleteNamespacedPod({ name: 'watch', namespace: NS, gracePeriodSeconds: 1 })
    const t2 = performance.now()
    await node.waitForPodGone(NS, 'watch', 60_000)
    t.comment(`pod gone after ${((performance.now() - t2) / 1000).toFixed(1)} s`)
    t.same(node.mountsBelow().filter((m) => m.includes(uid)), [], 'the kubelet unmounted the pod\'s volumes')
    t.same(await node.events(NS, 'watch').then((e) => e.filter((x) => /^Failed/.test(x))), [], 'no Failed events')
  })
}

await main()
