// The real node (scripts/kube-node.sh) works end to end, on the oldest and on the newest release
// it runs, one node after the other: an unmodified kubelet runs a pod whose container reads a
// downward API volume the kubelet wrote, and inotify-watch in it sees the kubelet's atomic flip
// of ..data when a label changes; the scheduler and the controller manager run a DaemonSet whose
// pod is scheduled, becomes Ready and holds a token of its ServiceAccount that the API server
// accepts, roll it out, and delete a namespace with its pods.
import t, { type Test } from 'tap'
import { AppsV1Api, AuthenticationV1Api, PatchStrategy, setHeaderOptions, type V1DaemonSet } from '@kubernetes/client-node'
import { BUSYBOX, RELEASES, needNode, startNode, type Node } from './fixtures/node.js'

const NS = 'smoke'
const TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token'

const formatLabels = (l: Record<string, string>): string => Object.keys(l).sort().map((k) => `${k}="${l[k]}"`).join('\n')
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const seconds = (t0: number): string => ((performance.now() - t0) / 1000).toFixed(1)

async function downwardApiPod(t: Test, node: Node): Promise<void> {
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
          command: ['sh', '-c', 'cat /podinfo/labels; echo; cat /podinfo/name; echo; cat /podinfo/cpu; echo; exec inotify-watch /podinfo'],
          resources: { limits: { cpu: '250m', memory: '64Mi' } },
          volumeMounts: [{ name: 'podinfo', mountPath: '/podinfo' }],
        }],
        volumes: [{
          name: 'podinfo',
          downwardAPI: {
            items: [
              { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
              { path: 'name', fieldRef: { fieldPath: 'metadata.name' } },
              { path: 'cpu', resourceFieldRef: { containerName: 'c', resource: 'limits.cpu', divisor: '1m' } },
            ],
          },
        }],
      },
    },
  })
  const t0 = performance.now()
  const pod = await node.waitForPod(NS, 'watch', (p) => p.status?.phase === 'Running', 60_000)
  t.comment(`pod Running after ${seconds(t0)} s`)
  const uid = pod.metadata!.uid!

  await node.waitForLog(NS, 'watch', 'c', (l) => l.includes('inotify-watch: watching /podinfo'), 30_000, { stream: 'stderr' })
  // What follows are inotify events: the kubelet also reads the volume's directory now and then.
  const first = formatLabels(labels) + '\nwatch\n250\n'
  t.equal((await node.containerLog(NS, 'watch', 'c', { stream: 'stdout' })).slice(0, first.length), first, 'the container read the files\' bytes')

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
  t.comment(`pod gone after ${seconds(t2)} s`)
  t.same(node.mountsBelow().filter((m) => m.includes(uid)), [], 'the kubelet unmounted the pod\'s volumes')
  t.same(await node.events(NS, 'watch').then((e) => e.filter((x) => /^Failed/.test(x))), [], 'no Failed events')
}

/** Polls the DaemonSet until its one pod of the current generation is Ready. */
async function waitForDaemonSet(apps: AppsV1Api, name: string, ms: number): Promise<V1DaemonSet> {
  const deadline = Date.now() + ms
  for (;;) {
    const ds = await apps.readNamespacedDaemonSet({ name, namespace: NS })
    const s = ds.status
    if (s && s.observedGeneration === ds.metadata?.generation && s.desiredNumberScheduled === 1 &&
        s.updatedNumberScheduled === 1 && s.numberReady === 1 && s.currentNumberScheduled === 1) return ds
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for DaemonSet ${NS}/${name}: ${JSON.stringify(s)}`)
    await sleep(200)
  }
}

/** The DaemonSet's pod that is not being deleted, once there is exactly one. */
async function daemonPod(node: Node, ms = 60_000): Promise<{ name: string; uid: string; nodeName?: string }> {
  const deadline = Date.now() + ms
  for (;;) {
    const pods = (await node.core.listNamespacedPod({ namespace: NS, labelSelector: 'app=agent' })).items
      .filter((p) => !p.metadata?.deletionTimestamp)
    if (pods.length === 1) return { name: pods[0]!.metadata!.name!, uid: pods[0]!.metadata!.uid!, nodeName: pods[0]!.spec?.nodeName }
    if (Date.now() > deadline) throw new Error(`timed out waiting for one pod of the DaemonSet; there are ${pods.length}`)
    await sleep(200)
  }
}

async function daemonSet(t: Test, node: Node): Promise<void> {
  const apps = node.kc.makeApiClient(AppsV1Api)
  const authn = node.kc.makeApiClient(AuthenticationV1Api)
  await node.core.createNamespacedServiceAccount({ namespace: NS, body: { metadata: { name: 'agent' } } })
  const t0 = performance.now()
  await apps.createNamespacedDaemonSet({
    namespace: NS,
    body: {
      metadata: { name: 'agent' },
      spec: {
        selector: { matchLabels: { app: 'agent' } },
        template: {
          metadata: { labels: { app: 'agent' } },
          spec: {
            serviceAccountName: 'agent',
            hostNetwork: true,
            dnsPolicy: 'Default',
            terminationGracePeriodSeconds: 1,
            containers: [{
              name: 'c', image: BUSYBOX, imagePullPolicy: 'Never',
              command: ['sh', '-c', `cat ${TOKEN}; echo; exec sleep 3600`],
              readinessProbe: { exec: { command: ['test', '-s', TOKEN] }, periodSeconds: 1 },
            }],
          },
        },
      },
    },
  })
  await waitForDaemonSet(apps, 'agent', 90_000)
  t.comment(`DaemonSet created -> its pod Ready after ${seconds(t0)} s`)
  const pod = await daemonPod(node)
  t.equal(pod.nodeName, node.nodeName, 'the pod is on the node')
  const events = await node.events(NS, pod.name)
  t.ok(events.some((e) => e.startsWith('Scheduled: ')), `the scheduler bound it: ${events.join('; ')}`)

  // The token the kubelet put in the pod is its ServiceAccount's, and the API server takes it.
  const token = (await node.waitForLog(NS, pod.name, 'c', (l) => l.includes('\n'), 30_000, { stream: 'stdout' })).split('\n')[0]!
  const review = await authn.createTokenReview({ body: { spec: { token } } })
  t.equal(review.status?.authenticated, true, 'the pod\'s token authenticates')
  t.equal(review.status?.user?.username, `system:serviceaccount:${NS}:agent`, 'as the pod\'s ServiceAccount')

  // A rollout: a new template replaces the pod.
  const t1 = performance.now()
  await apps.patchNamespacedDaemonSet({ name: 'agent', namespace: NS, body: { spec: { template: { metadata: { annotations: { rev: '1' } } } } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
  await waitForDaemonSet(apps, 'agent', 120_000)
  const next = await daemonPod(node)
  t.comment(`rollout: the new pod Ready after ${seconds(t1)} s`)
  t.not(next.uid, pod.uid, 'the rollout replaced the pod')
}

async function main(): Promise<void> {
  for (const release of RELEASES) {
    if (!(await needNode(`a real node of Kubernetes ${release}`, release))) continue

    t.test(`a real node of Kubernetes ${release}`, async (t) => {
      t.setTimeout(300_000)
      const node = await startNode(t, { release })
      t.comment(`node ${release} Ready after ${node.upSeconds.toFixed(1)} s`)
      await node.core.createNamespace({ body: { metadata: { name: NS } } })

      await t.test('a pod on a real kubelet sees its downward API volume flip', (t) => downwardApiPod(t, node))
      await t.test('a DaemonSet\'s pod is scheduled, Ready, has its ServiceAccount\'s token, and rolls out', (t) => daemonSet(t, node))

      await t.test('a namespace deletion takes its pods', async (t) => {
        const t0 = performance.now()
        await node.core.deleteNamespace({ name: NS })
        const deadline = Date.now() + 120_000
        for (;;) {
          const left = await node.core.listNamespace().then((l) => l.items.some((n) => n.metadata?.name === NS))
          if (!left) break
          if (Date.now() > deadline) throw new Error(`namespace ${NS} still there after 120 s`)
          await sleep(500)
        }
        t.comment(`namespace gone after ${seconds(t0)} s`)
        t.same((await node.core.listPodForAllNamespaces()).items.filter((p) => p.metadata?.namespace === NS), [], 'no pods left in it')
        t.same(node.mountsBelow().filter((m) => m.includes('/kubelet/pods/')), [], 'no pod volumes left mounted')
      })
    })
  }
}

await main()
