// docs/running-in-a-cluster.md, run as written on the real node (scripts/kube-node.sh) of both
// releases: its shell blocks marked `<!-- test: NAME -->` run with bash in a copy of
// examples/, with `kubectl` (1.37.2, built by scripts/k8s-build.sh) and IMAGE set to the image
// that scripts/image.sh built from the Dockerfile, loaded into the node's containerd: the one
// change a user makes. The node has a cluster's kubelet root (/var/lib/kubelet) and its API server
// at the `kubernetes` Service's address, so the manifests run unchanged: the agent registers with
// the kubelet from inside its privileged container, mounts through its Bidirectional mount, and
// finds the keeper in the other DaemonSet's container.
//   1. Install (install.yaml on 1.20.2, kustomize on 1.37.2; then the other, which changes
//      nothing): both DaemonSets Ready, the driver in the node's CSINode.
//   2. A pod with a dapifs volume and a downwardAPI volume of the same items reads the same bytes
//      from both; a label patch reaches its container with the atomic writer's inotify events.
//   3. An upgrade to a second build of the image (another tag), then a restart of the agent
//      (`kubectl rollout restart`), with readers looping in the pod: 0 failed reads; the longest
//      round of reads is reported. From 1.22 the new agent's pod starts beside the old one, which
//      hands it the volumes (maxSurge): the new agent's log says so. On 1.20 the manifests are
//      examples/kubernetes-before-1.22's (the doc's blocks for it), without maxSurge.
//   4. Uninstall: nothing of dapifs left on the node (mounts, records, sockets, processes).
// And once more through the Helm chart (charts/dapifs, with helm from scripts/go-tool.sh), on the
// newest release: its install, upgrade and uninstall blocks.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { AppsV1Api, PatchStrategy, StorageV1Api, setHeaderOptions, type V1Pod } from '@kubernetes/client-node'
import { BUSYBOX, RELEASES, needNode, startNode, type Node } from './fixtures/node.js'
import { run } from './fixtures/daemon.js'
import { comparable, snapshotPod, snapshots } from './fixtures/snapshot.js'
import { describe, formatLabels, oneLine, readerScript, readers, waitForReaders, type Readers } from './fixtures/readers.js'

const CACHE = process.env.DAPIFS_CACHE ?? path.join(os.homedir(), '.cache/dapifs')
const KUBECTL = path.join(CACHE, 'bin/kubectl-1.37.2')
const KUBELET_DIR = '/var/lib/kubelet'
const DRIVER = 'csi.dapifs.dev'
const PLUGIN_DIR = path.join(KUBELET_DIR, 'plugins', DRIVER)
const NS = 'install'
/** The two builds: the install, then the upgrade. */
const TAGS = ['0.1.0', '0.1.0-2'] as const
const image = (tag: string): string => `localhost/dapifs:${tag}`
const DOC = 'docs/running-in-a-cluster.md'


const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const seconds = (t0: number): string => ((performance.now() - t0) / 1000).toFixed(1)

/** The doc's shell block marked `<!-- test: name -->`. */
function block(name: string): string {
  const m = new RegExp(`<!-- test: ${name.replace(/\./g, '\\.')} -->\\n\`\`\`sh\\n([^]*?)\`\`\`\\n`).exec(readFileSync(DOC, 'utf8'))
  if (!m) throw new Error(`${DOC} has no block marked <!-- test: ${name} -->`)
  return m[1]!
}

/** Whether an image of that tag is built from the current sources; else skipped, or failed in CI. */
async function needImages(name: string): Promise<boolean> {
  const missing: string[] = []
  for (const tag of TAGS) if ((await run('bash', ['scripts/image.sh', 'built', tag], { timeoutMs: 60_000 })).code !== 0) missing.push(`scripts/image.sh build ${tag}`)
  if (!existsSync(KUBECTL) || (await run('bash', ['scripts/k8s-build.sh', '--check', '1.37.2', 'kubectl'])).code !== 0) missing.push('scripts/k8s-build.sh 1.37.2 kubectl')
  if (missing.length === 0) return true
  if (process.env.CI) t.fail(`not built in CI (.ci/run builds them): ${missing.join('; ')}`)
  else t.test(name, { skip: `not built: ${missing.join('; ')}` }, async () => {})
  return false
}

interface Install {
  node: Node
  /** Where the doc's blocks run: a copy of examples/ (and the kustomize overlay they write). */
  work: string
  /** Runs the doc's block with IMAGE set; resolves with its output. */
  sh(name: string, tag: string): Promise<string>
}

async function waitForDaemonSets(apps: AppsV1Api, ms: number): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    const ready = await Promise.all(['dapifs-node', 'dapifs-keeper'].map(async (name) => {
      const ds = await apps.readNamespacedDaemonSet({ name, namespace: 'dapifs' }).catch(() => undefined)
      const s = ds?.status
      return !!s && s.observedGeneration === ds!.metadata?.generation && s.desiredNumberScheduled === 1 &&
        s.numberReady === 1 && s.currentNumberScheduled === 1 && (name === 'dapifs-keeper' || s.updatedNumberScheduled === 1)
    }))
    if (ready.every(Boolean)) return
    if (Date.now() > deadline) throw new Error(`the DaemonSets are not Ready after ${ms} ms`)
    await sleep(200)
  }
}

async function csiNodeDrivers(node: Node): Promise<string[]> {
  const storage = node.kc.makeApiClient(StorageV1Api)
  const csiNode = await storage.readCSINode({ name: node.nodeName }).catch(() => undefined)
  return (csiNode?.spec.drivers ?? []).map((d) => `${d.name} ${d.nodeID}`)
}

async function until<T>(what: string, ms: number, f: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(200)
  }
}

/** The pods of one DaemonSet that are not being deleted. */
async function podsOf(node: Node, component: 'node' | 'keeper'): Promise<V1Pod[]> {
  return (await node.core.listNamespacedPod({ namespace: 'dapifs', labelSelector: `app.kubernetes.io/component=${component}` })).items
    .filter((p) => !p.metadata?.deletionTimestamp)
}

/** The agent's one pod once it is Ready with that image and not `other`, with its container's log. */
async function agentReady(node: Node, tag: string, other?: string): Promise<{ pod: V1Pod; at: number }> {
  const pod = await until(`the agent's pod with ${image(tag)}`, 120_000, async () => {
    const pods = await podsOf(node, 'node')
    const p = pods.length === 1 ? pods[0]! : undefined
    return p && p.metadata!.uid !== other && p.spec!.containers[0]!.image === image(tag) &&
      p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? p : undefined
  })
  return { pod, at: performance.now() }
}

/** The dapifs pods' state, events and logs: what a failure needs to be understood. */
async function agentState(node: Node): Promise<string> {
  const out: string[] = []
  for (const p of (await node.core.listNamespacedPod({ namespace: 'dapifs' }).catch(() => ({ items: [] as V1Pod[] }))).items) {
    const name = p.metadata!.name!
    out.push(`pod ${name}: ${JSON.stringify(p.status?.containerStatuses?.map((c) => ({ ready: c.ready, state: c.state, restarts: c.restartCount })))}`)
    const events = await node.core.listNamespacedEvent({ namespace: 'dapifs', fieldSelector: `involvedObject.name=${name}` }).catch(() => ({ items: [] }))
    for (const e of events.items) out.push(`  event ${e.type} ${e.reason}: ${e.message}`)
    for (const c of p.spec?.containers ?? []) {
      const log = await node.containerLog('dapifs', name, c.name, { uid: p.metadata!.uid! }).catch((e: Error) => `(no log: ${e.message})`)
      out.push(`  log of ${c.name}:\n${log.split('\n').slice(-30).join('\n')}`)
    }
  }
  return out.join('\n')
}

const agentLog = (node: Node, pod: V1Pod): Promise<string> => node.containerLog('dapifs', pod.metadata!.name!, 'dapifs', { uid: pod.metadata!.uid! })

function testPod(node: Node, labels: Record<string, string>): V1Pod {
  // Each read of 50 ms or more is reported (SLOW).
  const reader = { name: 'c', command: ['sh', '-c', readerScript('*annotations*app*labels*pod*', 50, true)] }
  return snapshotPod({ nodeName: node.nodeName, labels, container: 'snap', image: BUSYBOX, driver: DRIVER, more: [reader] })
}

async function patchLabels(node: Node, labels: Record<string, string>): Promise<void> {
  await node.core.patchNamespacedPod({ name: 'both', namespace: NS, body: { metadata: { labels } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
}

/** The longest slow read of the readers stamped after t0 (Date.now() ms), or 'no read of 50 ms or more'. */
function longestSince(r: Readers, wallT0: number): string {
  const slow = r.slowAt.filter((s) => s.at >= wallT0).map((s) => s.ms)
  return slow.length ? `${(Math.max(...slow) / 1000).toFixed(2)} s` : 'no read of 50 ms or more'
}

/**
 * Replaces the agent (`how` runs the doc's block), with the readers going: the new agent takes the
 * pod's volume over, a label patch made after reaches the container, and no read fails.
 */
async function replaceAgent(t: Test, node: Node, labels: Record<string, string>, rev: string, tag: string, how: () => Promise<string>, surge: boolean): Promise<string> {
  const [old] = await podsOf(node, 'node')
  const keeper = (await podsOf(node, 'keeper'))[0]!
  const before = await readers(node, NS, 'both')
  const wall0 = Date.now()
  const t0 = performance.now()
  const out = await how()
  const { pod, at } = await agentReady(node, tag, old!.metadata!.uid)
  const tookOver = await until('the new agent\'s takeover', 60_000, async () =>
    (await agentLog(node, pod)).split('\n').find((l) => l.includes(`took over pod ${NS}/both, volume "podinfo"`)))
  t.comment(`${out.trim().split('\n').join('; ')}\nthe new agent Ready ${((at - t0) / 1000).toFixed(1)} s after the command started; its log: ${tookOver}`)
  const log = await agentLog(node, pod)
  const handedOver = log.split('\n').find((l) => l.includes('the old agent let go of its volumes'))
  if (surge) t.ok(handedOver, `the old agent handed the volumes over while serving them: ${handedOver}`)
  else t.notOk(handedOver, 'no handover: the old agent had stopped before the new one started')
  // The old agent removed its registration socket, the new one made its own at the same path:
  // the kubelet registered the driver again, at the new agent.
  await until('the new agent\'s registration', 60_000, async () => /registered with the kubelet as csi\.dapifs\.dev/.test(await agentLog(node, pod)) ? true : undefined)
  t.same(await csiNodeDrivers(node), [`${DRIVER} ${node.nodeName}`], 'the kubelet registered the new agent: the driver is in the CSINode')
  labels.rev = rev
  await patchLabels(node, { rev })
  const after = await waitForReaders(node, NS, 'both', (r) => r.last === oneLine(labels) && r.reads > before.reads + 30, 60_000)
  t.equal(after.failed, 0, `no read failed: ${describe(after)}`)
  t.same(after.failures, [], 'no failure lines')
  const longest = longestSince(after, wall0)
  t.comment(`the longest read since the command: ${longest} (${after.reads - before.reads} reads meanwhile)`)
  // When the slow rounds came, from the new agent's takeover (containerd's stamps of both logs).
  const took = (await node.containerLogLines('dapifs', pod.metadata!.name!, 'dapifs', { uid: pod.metadata!.uid! }))
    .find((l) => l.text.includes('took over pod'))
  if (took) {
    const at = Date.parse(took.time)
    const slow = after.slowAt.filter((s) => s.at >= wall0).map((s) => `${s.ms} ms, ${((s.at - at) / 1000).toFixed(2)} s after the takeover`)
    if (slow.length) t.comment(`reads of 50 ms or more (by when their lines were logged): ${slow.join('; ')}`)
  }
  const [keeperNow] = await podsOf(node, 'keeper')
  t.equal(keeperNow?.metadata?.uid, keeper.metadata!.uid, 'the keeper\'s pod is the same one (OnDelete)')
  t.equal(keeperNow?.status?.containerStatuses?.[0]?.restartCount, 0, 'its container never restarted')
  return longest
}

/** What is left of dapifs on the node: mounts, records, sockets, processes. */
function leftovers(): string[] {
  const left: string[] = []
  for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [, rest] = l.split(' - ')
    const point = l.split(' ')[4] ?? ''
    // Only the node's: others on this machine may have dapifs mounts of their own elsewhere.
    if (rest && /^fuse/.test(rest) && point.startsWith(KUBELET_DIR + '/')) left.push(`mount ${point} (${rest})`)
  }
  const volumes = path.join(PLUGIN_DIR, 'volumes')
  if (existsSync(volumes)) for (const f of readdirSync(volumes)) left.push(`record ${path.join(volumes, f)}`)
  for (const s of [path.join(PLUGIN_DIR, 'csi.sock'), path.join(PLUGIN_DIR, 'keeper.sock'), path.join(PLUGIN_DIR, 'handover.sock'), path.join(KUBELET_DIR, 'plugins_registry', `${DRIVER}-reg.sock`)]) {
    if (existsSync(s)) left.push(`socket ${s}`)
  }
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd = ''
    try { cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ') } catch { continue }
    if (cmd.includes('/app/dist/')) left.push(`process ${pid}: ${cmd}`) // the image's programs
  }
  return left
}

/** How the doc installs: with kubectl (install.yaml, kustomize), or with the Helm chart. */
type Via = 'manifests' | 'helm'

async function install(t: Test, release: string, via: Via = 'manifests'): Promise<void> {
  const tars = (await Promise.all(TAGS.map((tag) => run('bash', ['scripts/image.sh', 'built', tag], { timeoutMs: 60_000 }))))
    .map((r) => r.stdout.toString().trim())
  const node = await startNode(t, { release, kubeletDir: KUBELET_DIR, apiPort: 443, images: tars })
  t.comment(`node ${release} Ready after ${node.upSeconds.toFixed(1)} s, with both images imported`)
  const work = mkdtempSync(path.join(os.tmpdir(), 'dapifs-install-'))
  t.teardown(() => rmSync(work, { recursive: true, force: true }))
  cpSync('examples', path.join(work, 'examples'), { recursive: true })
  cpSync('charts', path.join(work, 'charts'), { recursive: true })
  const bin = path.join(work, 'bin')
  mkdirSync(bin)
  cpSync(KUBECTL, path.join(bin, 'kubectl'))
  const helm = (await run('bash', ['scripts/go-tool.sh', 'helm', 'built'])).stdout.toString().trim()
  if (helm) cpSync(helm, path.join(bin, 'helm'))
  const x: Install = {
    node, work,
    sh: async (name, tag) => {
      const r = await run('bash', ['-e', '-o', 'pipefail', '-c', block(name)], {
        timeoutMs: 180_000,
        env: { PATH: `${bin}:${process.env.PATH}`, KUBECONFIG: node.kubeconfig, IMAGE: image(tag), HOME: work },
        cwd: work,
      })
      if (r.code !== 0) throw new Error(`the doc's block "${name}" exited ${r.code}:\n${r.stdout}${r.stderr}\n${await agentState(node)}`)
      return r.stdout.toString()
    },
  }
  const apps = node.kc.makeApiClient(AppsV1Api)
  // maxSurge for DaemonSets from 1.22: the doc has blocks for 1.20 and 1.21 (examples/kubernetes-before-1.22).
  const surge = release !== '1.20.2'
  const [first, second] = via === 'helm' ? ['helm', undefined] : surge ? ['kustomize', 'install.yaml'] : ['install.yaml before 1.22', 'kustomize before 1.22']
  const [upgradeBlock, uninstallBlock] = via === 'helm' ? ['helm-upgrade', 'helm-uninstall'] : [first, 'uninstall']
  const labels: Record<string, string> = { app: 'install', rev: '0', 'example.com/team': 'a.b_c-d' }

  await t.test(`1. the install (${first}), literally: both DaemonSets Ready, the driver registered from its container`, async (t) => {
    const t0 = performance.now()
    const out = await x.sh(first!, TAGS[0])
    t.comment(out.trim())
    await waitForDaemonSets(apps, 120_000)
    const ready = seconds(t0)
    const drivers = await until('the driver in the CSINode', 60_000, async () => {
      const d = await csiNodeDrivers(node)
      return d.length ? d : undefined
    })
    t.same(drivers, [`${DRIVER} ${node.nodeName}`], 'the kubelet lists the driver in the node\'s CSINode')
    t.comment(`kubectl apply -> both DaemonSets Ready ${ready} s, the driver in the CSINode ${seconds(t0)} s`)
    const [agent] = await podsOf(node, 'node')
    t.equal(agent!.spec!.containers[0]!.image, image(TAGS[0]), 'the agent runs the image built from the Dockerfile')
    const log = await agentLog(node, agent!)
    t.match(log, /registered with the kubelet as csi\.dapifs\.dev/, 'the agent registered itself, from its container')
    t.match(log, /context inClusterContext/, 'with its ServiceAccount')
    t.ok(existsSync(path.join(KUBELET_DIR, 'plugins_registry', `${DRIVER}-reg.sock`)), 'its registration socket is in the kubelet\'s directory')

    if (second === undefined) return
    // The other way of installing applies the same objects: nothing changes. (An API server of
    // 1.20 drops the CSIDriver's requiresRepublish, so kubectl sends it again at every apply and
    // says "configured", and the server drops it again: manifests.test.ts.)
    const generations = async (): Promise<Array<number | undefined>> => Promise.all(['dapifs-node', 'dapifs-keeper']
      .map((name) => apps.readNamespacedDaemonSet({ name, namespace: 'dapifs' }).then((d) => d.metadata?.generation)))
    const before = await generations()
    const again = await x.sh(second, TAGS[0])
    const applied = again.split('\n').filter((l) => / (created|configured|unchanged)$/.test(l))
    t.equal(applied.length, 7, `${second} applies the 7 objects:\n${applied.join('\n')}`)
    t.same(applied.filter((l) => !l.endsWith(' unchanged')), release === '1.20.2' ? [`csidriver.storage.k8s.io/${DRIVER} configured`] : [],
      `${second} changes none of them`)
    t.same(await generations(), before, 'the DaemonSets are as they were (no rollout)')
  })

  await t.test('2. a pod reads from its dapifs volume what the kubelet\'s downwardAPI volume holds, and sees labels change', async (t) => {
    await node.core.createNamespace({ body: { metadata: { name: NS } } })
    await node.core.createNamespacedPod({ namespace: NS, body: testPod(node, labels) })
    const t0 = performance.now()
    const pod = await node.waitForPod(NS, 'both', (p) => p.status?.phase === 'Running', 90_000)
    t.comment(`pod Running after ${seconds(t0)} s`)
    const log = await node.waitForLog(NS, 'both', 'snap', (l) => l.includes('== end\n'), 30_000, { stream: 'stdout' })
    const snap = snapshots(log)
    t.ok(snap.kubelet.length >= 15, `the kubelet's volume, as the container sees it:\n${snap.kubelet.join('\n')}`)
    const [csi, kubelet] = [snap.csi.map(comparable), snap.kubelet.map(comparable)]
    t.same(csi, kubelet, 'the dapifs volume holds the same entries, modes, owners, links and bytes')
    await node.waitForLog(NS, 'both', 'snap', (l) => l.includes('inotify-watch: watching /csi'), 30_000, { stream: 'stderr' })
    await waitForReaders(node, NS, 'both', (r) => r.ticks >= 1 && r.last === oneLine(labels), 30_000)

    const target = path.join(KUBELET_DIR, 'pods', pod.metadata!.uid!, 'volumes', 'kubernetes.io~csi', 'podinfo', 'mount')
    t.ok(node.mountsBelow().includes(target), `the agent's mount reached the host through its Bidirectional mount: ${target}`)
    const before = (await node.containerLog(NS, 'both', 'snap', { stream: 'stdout' })).length
    labels.rev = '1'
    const t1 = performance.now()
    await patchLabels(node, { rev: '1' })
    const want = formatLabels(labels)
    await until('the new labels on the host', 10_000, async () => {
      const r = await run('cat', [path.join(target, 'labels')])
      return r.stdout.toString() === want ? true : undefined
    })
    const hostMs = performance.now() - t1
    const events = await node.waitForLog(NS, 'both', 'snap', (l) => /^MOVED_TO \.\.data$/m.test(l.slice(before)), 10_000, { stream: 'stdout' })
      .then((l) => l.slice(before).split('\n').filter(Boolean))
    // From 1.27 the kubelet's writer Lchowns every link to the fsGroup before it makes ..data_tmp:
    // an ATTRIB on ..data first (kube-node-csi compares every event with the kubelet's own volume).
    const wantEvents = [...(release === '1.20.2' ? [] : ['ATTRIB ..data']), 'CREATE ..data_tmp', 'MOVED_FROM ..data_tmp', 'MOVED_TO ..data']
    t.same(events.filter((e) => e.includes('..data')), wantEvents, `the atomic writer's events of ${release}, in order, in the container`)
    t.comment(`label patch -> new bytes on the host ${(hostMs / 1000).toFixed(3)} s, -> MOVED_TO ..data in the container's log ${seconds(t1)} s`)
  })

  await t.test('3. an upgrade to a second build, then a restart of the agent: the readers never fail', async (t) => {
    const upgrade = await replaceAgent(t, node, labels, '2', TAGS[1], () => x.sh(upgradeBlock!, TAGS[1]), surge)
    const [keeper] = await podsOf(node, 'keeper')
    t.equal(keeper!.spec!.containers[0]!.image, image(TAGS[0]), 'the keeper still runs the first build')
    const restart = await replaceAgent(t, node, labels, '3', TAGS[1], () => x.sh('restart', TAGS[1]), surge)
    t.comment(`longest waits: upgrade ${upgrade}, restart ${restart}`)
  })

  await t.test('4. the uninstall, literally: nothing of dapifs is left on the node', async (t) => {
    const t0 = performance.now()
    await node.core.deleteNamespacedPod({ name: 'both', namespace: NS, gracePeriodSeconds: 1 })
    await node.waitForPodGone(NS, 'both', 60_000)
    t.comment(`the pod deleted and gone from the API server in ${seconds(t0)} s`)
    const t1 = performance.now()
    const out = await x.sh(uninstallBlock, TAGS[1])
    t.comment(`${out.trim().split('\n').join('; ')} (kubectl delete returned after ${seconds(t1)} s)`)
    await until('no dapifs pod', 90_000, async () =>
      (await node.core.listNamespacedPod({ namespace: 'dapifs' })).items.length === 0 ? true : undefined)
    const drivers = await until('the driver gone from the CSINode', 60_000, async () => {
      const d = await csiNodeDrivers(node)
      return d.length === 0 ? d : undefined
    })
    t.same(drivers, [], 'the kubelet no longer lists the driver')
    t.same(leftovers(), [], 'no dapifs mount, record, socket or process')
    t.comment(`uninstalled in ${seconds(t0)} s; left in ${PLUGIN_DIR}: ${existsSync(PLUGIN_DIR) ? readdirSync(PLUGIN_DIR).join(' ') || 'nothing' : 'no directory'}`)
  })
}

async function main(): Promise<void> {
  // Both releases, one after the other, each a few minutes: more than the files' default limit.
  t.setTimeout(1_500_000)
  if (!(await needImages('the install on the real node'))) return
  for (const release of RELEASES) {
    if (!(await needNode(`the install on Kubernetes ${release}`, release))) continue
    t.test(`the install on Kubernetes ${release}`, async (t) => {
      t.setTimeout(600_000)
      await install(t, release)
    })
  }
  const newest = RELEASES[RELEASES.length - 1]!
  if ((await run('bash', ['scripts/go-tool.sh', 'helm', 'built'])).code !== 0) {
    if (process.env.CI) t.fail('helm is not built in CI (.ci/run builds it: scripts/go-tool.sh helm build)')
    else t.test('the install through the Helm chart', { skip: 'helm is not built: scripts/go-tool.sh helm build' }, async () => {})
  } else if (await needNode(`the install through the Helm chart on Kubernetes ${newest}`, newest)) {
    t.test(`the install through the Helm chart on Kubernetes ${newest}`, async (t) => {
      t.setTimeout(600_000)
      await install(t, newest, 'helm')
    })
  }
}

await main()
