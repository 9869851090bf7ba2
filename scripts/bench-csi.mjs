#!/usr/bin/env node
// The CSI driver at node scale, against a real kube-apiserver (scripts/kube-apiserver.sh), with
// its keeper, run as its image runs it (`node dist/main.js csi`: no V8 flags), on CPU 0; the C
// reader (scripts/reader.c) on CPU 1.
//
//   1. A crash that costs milliseconds: one pod with one volume (an idle node), and 10 times a
//      SIGKILL of the agent, a listing of the volume left waiting (it needs the agent), and a new
//      agent: from the new process's exec to the listing's answer.
//   2. 10, 50, 110 (the kubelet's default pods per node) and 250 pods on the node, each with 4
//      volumes (1,000 at 250 pods) of 4 items, one of them a label of the Node
//      (node.metadata.labels). At each size: the driver's RSS and threads, and the memory each
//      volume added since the size before; the watches it holds in the API server (from the
//      server's own apiserver_registered_watchers metric); publish latency; and the time from a
//      label patch (accepted by the API server) to the new bytes in all 4 of that pod's volumes.
//   3. At 1,000 volumes, a change of the Node's label: the time from the update to the last of
//      the 1,000 volumes serving the new bytes (readers on 8 threads polling all of them), while
//      the volume of another pod, which reads nothing of the Node, is listed in a loop (each
//      listing asks the driver): its longest wait, beside the same with nothing going on.
//   4. The noisy neighbour: one pod publishes and updates the largest volume the budgets allow
//      while that other pod's volume is listed in a loop.
//   5. A takeover of all 1,000 volumes after a SIGKILL of the agent: a listing of each volume left
//      waiting (1,000 threads), then a new agent: from its exec to the last answer.
//
//   node scripts/bench-csi.mjs            the full run (about 5 minutes)
//   node scripts/bench-csi.mjs --tiny     a few pods, a few patches: checks that it runs
//   node scripts/bench-csi.mjs --crashes  only the crashes on an idle node (1.), 10 of them
//   node scripts/bench-csi.mjs --takeovers  only the takeovers (5.), 5 of them: the node filled with
//                                         the same 1,002 volumes, without the measurements on the way;
//                                         with DAPIFS_BENCH_AGAINST=OTHER/dist/main.js, 10 of them, taken
//                                         in turn by that driver and this one: a change, before and after
//   node scripts/bench-csi.mjs --node-changes  only the Node's changes (3.), 5 of them, on the same
//                                         filled node; with DAPIFS_BENCH_AGAINST, 10, the drivers taking
//                                         the node over from each other in turn before each change
// Run as root. `npm run bench` runs it after the read benchmark.
import { spawn, execFile } from 'node:child_process'
import { appendFileSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node'
import { loadCsi } from '../dist/csi/server.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const tiny = process.argv.includes('--tiny')
const crashesOnly = process.argv.includes('--crashes')
const takeoversOnly = process.argv.includes('--takeovers')
const nodeChangesOnly = process.argv.includes('--node-changes')
/** Only fill the node, unmeasured, for what comes after. */
const fillOnly = takeoversOnly || nodeChangesOnly
// Node's flags for the driver, to look into it (DAPIFS_BENCH_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'); none by default: the image runs it with none.
const NODE_ARGS = (process.env.DAPIFS_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)
// A file the drivers' stderr is appended to, to look into them (with DEBUG=dapifs:...); none by default.
const DRIVER_LOG = process.env.DAPIFS_BENCH_DRIVER_LOG
// The driver's environment: this one's, less what makes Node's own start slower and that the image
// does not set. NODE_EXTRA_CA_CERTS (set on this project's VMs) makes every Node process parse
// that bundle of CAs and Node's own ~140 roots before any JavaScript runs: about 40 ms of each
// start, all of it before the takeover. The agent trusts only its kubeconfig's CA.
const DRIVER_ENV = { ...process.env }
delete DRIVER_ENV.NODE_EXTRA_CA_CERTS
const SIZES = tiny ? [2, 5] : [10, 50, 110, 250]
const PER_POD = 4
const PATCHES = tiny ? 3 : 40
/**
 * At the largest size, where the target is: a p99 of 40 is their slowest one, so one collection
 * of V8's that lands on a patch decides it; 300 give a p99 (the third slowest), and the max beside it.
 */
const PATCHES_AT_FULL = tiny ? 3 : 300
const CRASHES = tiny ? 2 : 10
// A driver to compare with, in the same run (--takeovers): its takeovers alternate with this one's.
const AGAINST = fillOnly ? process.env.DAPIFS_BENCH_AGAINST : undefined
const TAKEOVERS = tiny ? 1 : takeoversOnly ? (AGAINST ? 10 : 5) : 3
const NODE_CHANGES = tiny ? 1 : nodeChangesOnly ? (AGAINST ? 10 : 5) : 3
const NODE = 'bench-node'
const NS = 'bench'
const ZONE = 'topology.kubernetes.io/zone'
const KAS = path.join(ROOT, 'scripts', 'kube-apiserver.sh')
const ITEMS = `- path: labels
  fieldRef: {fieldPath: metadata.labels}
- path: annotations
  fieldRef: {fieldPath: metadata.annotations}
- path: cpu_limit
  resourceFieldRef: {containerName: main, resource: limits.cpu, divisor: 1m}
- path: zone
  fieldRef: {fieldPath: "node.metadata.labels['${ZONE}']"}
`
const QUIET_ITEMS = `- path: labels
  fieldRef: {fieldPath: metadata.labels}
`

/** The commands running now (readers, mostly): a run that is stopped kills them. */
const running = new Set()
const run = (cmd, args, timeout = 300_000) => new Promise((resolve) => {
  const child = execFile(cmd, args, { timeout, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
    running.delete(child)
    resolve({ code: err ? err.code ?? 1 : 0, stdout, stderr })
  })
  running.add(child)
})
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]
const f = (x, d = 1) => x.toFixed(d)
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000

function procStatus(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8')
  const get = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0)
  return { rssKb: get('VmRSS'), threads: get('Threads') }
}

async function main() {
  if ((await run('bash', [KAS, 'built'])).code !== 0) {
    console.log('\nCSI scale: skipped (kube-apiserver is not built: scripts/kube-apiserver.sh build)')
    return
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dapifs-bench-csi-'))
  const env = { ...process.env, DAPIFS_ETCD_PORT: '23990', DAPIFS_API_PORT: '26643' }
  const pluginDir = path.join(dir, 'plugins', 'csi.dapifs.dev')
  const socket = path.join(pluginDir, 'csi.sock')
  let driver
  let keeper
  const readerBin = path.join(dir, 'reader')
  const reader = (args, timeout) => run('taskset', ['-c', '1', readerBin, ...args], timeout)
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    // Without its keeper, the driver unmounts everything when it stops.
    keeper?.kill('SIGKILL')
    await sleep(500) // the driver sees its keeper gone
    if (driver && driver.exitCode === null && driver.signalCode === null) {
      driver.kill('SIGTERM')
      const exited = await Promise.race([new Promise((r) => driver.on('exit', () => r(true))), sleep(120_000).then(() => false)])
      if (!exited) driver.kill('SIGKILL')
    }
    const left = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(dir + '/'))
    for (const m of left.reverse()) await run('fusermount', ['-uz', m])
    await new Promise((resolve) => execFile('bash', [KAS, 'down', path.join(dir, 'k8s')], { env }, resolve))
    rmSync(dir, { recursive: true, force: true })
  }
  // Killed (a time limit, Ctrl-C): the same as at the end, while what was under way fails.
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.once(signal, () => {
      process.on('unhandledRejection', () => {})
      process.on('uncaughtException', () => {})
      for (const child of running) child.kill('SIGKILL')
      stop().finally(() => process.exit(1))
    })
  }
  try {
    const cc = await run('cc', ['-O2', '-pthread', '-o', readerBin, path.join(ROOT, 'scripts', 'reader.c')])
    if (cc.code !== 0) throw new Error(`cc: ${cc.stderr}`)
    const up = await new Promise((resolve) => execFile('bash', [KAS, 'up', path.join(dir, 'k8s')], { env, timeout: 120_000 }, (e, o, er) => resolve({ code: e ? 1 : 0, er })))
    if (up.code !== 0) throw new Error(`the API server did not start: ${up.er}`)
    const kubeconfig = path.join(dir, 'k8s', 'kubeconfig')
    const kc = new KubeConfig()
    kc.loadFromFile(kubeconfig)
    const core = kc.makeApiClient(CoreV1Api)
    await core.createNamespace({ body: { metadata: { name: NS } } })
    await core.createNode({ body: { metadata: { name: NODE, labels: { [ZONE]: 'zone-0' } }, status: { allocatable: { cpu: '4', memory: '8Gi', pods: '250' } } } })
    const watchers = async () => {
      const m = await run('curl', ['-sk', '-H', 'Authorization: Bearer devtoken', `https://127.0.0.1:${env.DAPIFS_API_PORT}/metrics`])
      const count = (kind) => Number(new RegExp(`^apiserver_registered_watchers\\{group="",kind="${kind}",version="v1"\\} (\\d+)`, 'm').exec(m.stdout.toString())?.[1] ?? 0)
      return { pods: count('Pod'), nodes: count('Node') }
    }
    const baseline = await watchers()

    mkdirSync(pluginDir, { recursive: true })
    keeper = spawn(path.join(ROOT, 'dist', 'dapifs-keeper'), ['--socket', path.join(pluginDir, 'keeper.sock')], { stdio: ['ignore', 'ignore', 'ignore'] })
    await sleep(200)
    // As the image runs it (Dockerfile: node /app/dist/main.js), on CPU 0.
    const startDriver = async (main = process.env.DAPIFS_BENCH_MAIN ?? path.join(ROOT, 'dist', 'main.js')) => {
      const t0 = nowUs()
      const d = spawn('taskset', ['-c', '0', process.execPath, ...NODE_ARGS, main, 'csi', '--endpoint', `unix://${socket}`, '--node-name', NODE,
        '--kubeconfig', kubeconfig, '--no-registration', '--kubelet-dir', dir], { stdio: ['ignore', 'ignore', 'pipe'], env: DRIVER_ENV })
      d.log = ''
      d.t0 = t0
      d.stderr.on('data', (b) => { d.log += b; if (DRIVER_LOG) appendFileSync(DRIVER_LOG, b); if (d.log.length > 1 << 20) d.log = d.log.slice(-(1 << 19)) })
      while (!d.log.includes('serving csi.dapifs.dev')) {
        if (d.exitCode !== null || d.signalCode !== null) throw new Error(`the driver exited: ${d.log}`)
        await sleep(20)
      }
      return d
    }
    const kill = async (d) => {
      d.kill('SIGKILL')
      const exited = await Promise.race([new Promise((resolve) => (d.exitCode !== null || d.signalCode !== null ? resolve(true) : d.on('exit', () => resolve(true)))), sleep(10_000)])
      // Left waiting on its own mount behind a request only an agent answers (native-notes, "A
      // kill while the daemon waits on its own mount"): the next agent answers it, and it ends.
      if (!exited) console.error(`the killed driver (pid ${d.pid}) has not exited after 10 s: starting the next one beside it`)
    }
    driver = await startDriver()
    const { Node } = loadCsi()
    const client = new Node(`unix://${socket}`, grpc.credentials.createInsecure())
    const call = (method, req) => new Promise((resolve, reject) => client[method](req, { deadline: Date.now() + 60_000 }, (e, r) => (e ? reject(e) : resolve(r))))
    const startRss = procStatus(driver.pid)

    const target = (pod, name) => path.join(dir, 'pods', pod.metadata.uid, 'volumes', 'kubernetes.io~csi', name, 'mount')
    const createPod = (name, extra = {}) => core.createNamespacedPod({ namespace: NS, body: {
      metadata: { name, labels: { app: name }, annotations: { owner: 'bench' }, ...extra },
      spec: { nodeName: NODE, containers: [{ name: 'main', image: 'busybox', resources: { limits: { cpu: '250m' } } }] },
    } })
    const publish = async (pod, name, items = ITEMS) => {
      const t = target(pod, name)
      mkdirSync(path.dirname(t), { recursive: true })
      const t0 = performance.now()
      await call('NodePublishVolume', {
        volume_id: `csi-${pod.metadata.uid}-${name}`, target_path: t, readonly: true,
        volume_context: { items, 'csi.storage.k8s.io/pod.name': pod.metadata.name, 'csi.storage.k8s.io/pod.namespace': NS,
          'csi.storage.k8s.io/pod.uid': pod.metadata.uid, 'csi.storage.k8s.io/ephemeral': 'true' },
        volume_capability: { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
      })
      return performance.now() - t0
    }
    const lists = (name, paths) => { const file = path.join(dir, name); writeFileSync(file, paths.join('\n') + '\n'); return file }
    /** A SIGKILL of the agent, a listing of each volume left waiting, a new agent: exec -> answers. */
    const crash = async (roots, main) => {
      await kill(driver)
      const answers = reader(['answers', '60', roots], 90_000)
      await sleep(tiny ? 300 : 800) // every listing is waiting for the agent
      driver = await startDriver(main)
      const r = await answers
      const m = /answered (\d+) of (\d+) errors (\d+) first_us (\d+) last_us (\d+)/.exec(r.stdout)
      if (!m || m[1] !== m[2] || m[3] !== '0') throw new Error(`listings across the takeover: ${r.stdout}${r.stderr}`)
      const took = /took over (\d+) volumes in (\d+) ms, (\d+) ms after this process started/.exec(driver.log)
      return { first: (Number(m[4]) - driver.t0) / 1000, last: (Number(m[5]) - driver.t0) / 1000, recoverMs: Number(took?.[2]), recoveredAt: Number(took?.[3]) }
    }

    // 1. A crash on an idle node: one volume.
    const idle = await createPod('idle')
    await publish(idle, 'podinfo')
    const idleRoots = lists('idle.txt', [target(idle, 'podinfo')])
    const crashes = []
    for (let i = 0; i < (fillOnly ? 0 : CRASHES); i++) crashes.push(await crash(idleRoots))
    if (crashesOnly) {
      const first = crashes.map((c) => c.first)
      const pctl = (xs) => `median ${f(pct(xs, 0.5), 0)} ms, max ${f(Math.max(...xs), 0)} ms`
      console.log(`a crash on an idle node (1 volume), ${CRASHES} times, exec to first answer: ${pctl(first)}; to the takeover's start ${pctl(crashes.map((c) => c.recoveredAt - c.recoverMs))}; the takeover ${pctl(crashes.map((c) => c.recoverMs))}`)
      console.log(`  each: ${first.map((x) => f(x, 0)).join(', ')} ms`)
      return
    }

    // 2. The node filling up.
    const pods = []
    const rows = []
    let prev = { volumes: 1, rssKb: procStatus(driver.pid).rssKb }
    for (const size of fillOnly ? SIZES.slice(-1) : SIZES) {
      // Pods first (as the scheduler would have placed them), then their volumes, one at a time as
      // the kubelet's pod workers would publish them.
      const publishMs = []
      while (pods.length < size) {
        const pod = await createPod(`p${pods.length}`)
        pods.push(pod)
        for (let v = 0; v < PER_POD; v++) publishMs.push(await publish(pod, `v${v}`))
      }
      if (fillOnly) break // the node filled: nothing measured on the way
      await sleep(1000)
      const st = procStatus(driver.pid)
      const w = await watchers()
      const latencies = []
      const patches = size === SIZES.at(-1) ? PATCHES_AT_FULL : PATCHES
      for (let i = 0; i < patches; i++) {
        const p = pods[Math.floor(Math.random() * pods.length)]
        const name = p.metadata.name
        const value = `v${size}-${i}`
        const want = Buffer.from(`app="${name}"\nrev="${value}"`).toString('hex')
        const files = lists('patch.txt', Array.from({ length: PER_POD }, (_, v) => path.join(target(p, `v${v}`), 'labels')))
        const watcher = reader(['untilall', want, '10', files, String(PER_POD)])
        await sleep(20)
        await core.patchNamespacedPod({ namespace: NS, name, body: [{ op: 'add', path: '/metadata/labels/rev', value }] })
        const t0 = nowUs() // accepted: as the kube test and the kubelet comparison count it
        const seen = await watcher
        if (seen.code !== 0) throw new Error(`${name}: the patch did not arrive: ${seen.stdout}${seen.stderr}`)
        latencies.push(Math.max(0, Number(/last_us (\d+)/.exec(seen.stdout)[1]) - t0) / 1000)
        await core.patchNamespacedPod({ namespace: NS, name, body: [{ op: 'remove', path: '/metadata/labels/rev' }] })
        await sleep(20)
      }
      const volumes = pods.length * PER_POD + 1
      rows.push({ size, volumes, rssMb: st.rssKb / 1024, perVolumeKb: (st.rssKb - prev.rssKb) / (volumes - prev.volumes), threads: st.threads,
        pw: w.pods - baseline.pods, nw: w.nodes - baseline.nodes,
        pub50: pct(publishMs, 0.5), pub99: pct(publishMs, 0.99), pubMax: Math.max(...publishMs),
        lat50: pct(latencies, 0.5), lat99: pct(latencies, 0.99), latMax: Math.max(...latencies) })
      prev = { volumes, rssKb: st.rssKb }
    }
    const volumes = pods.flatMap((p) => Array.from({ length: PER_POD }, (_, v) => target(p, `v${v}`)))
    const mounted = volumes.length + 2 // and the idle pod's, and the quiet pod's
    const ms = (xs) => (xs.some((x) => !Number.isFinite(x)) ? '-' : `median ${f(pct(xs, 0.5), 0)} ms, max ${f(Math.max(...xs), 0)} ms`)
    const target_ = (ok, text) => console.log(`  ${ok ? 'met   ' : 'MISSED'} ${text}`)
    /** 5. Takeovers of every volume (the quiet pod's too); with --takeovers, printed here. */
    const takeoversOf = async (quiet) => {
      client.close()
      const allRoots = lists('roots.txt', [...volumes, target(idle, 'podinfo'), target(quiet, 'podinfo')])
      const takeovers = []
      const against = []
      for (let i = 0; i < TAKEOVERS; i++) {
        if (AGAINST && i % 2 === 0) against.push(await crash(allRoots, AGAINST))
        else takeovers.push(await crash(allRoots))
        await sleep(2000) // the new agent follows the node's pods again
      }
      const afterTakeover = procStatus(driver.pid)
      if (takeoversOnly) {
        if (AGAINST) {
          console.log(`\n${AGAINST}, in turn with this one:`)
          printTakeovers(against, afterTakeover, 'against')
          console.log(`\nthis one (${process.env.DAPIFS_BENCH_MAIN ?? path.join(ROOT, 'dist', 'main.js')}):`)
        }
        printTakeovers(takeovers, afterTakeover)
        console.log('\ntarget')
        targetOfTakeovers(takeovers)
      }
      return { takeovers, afterTakeover }
    }
    const printTakeovers = (takeovers, afterTakeover, against) => {
      console.log(`\na takeover of all ${mounted} volumes, ${takeovers.length} times: SIGKILL, a listing of each left waiting, then a new agent; from its exec`)
      console.log(`  to the first answer                                         ${ms(takeovers.map((c) => c.first))}`)
      console.log(`  to the last (every volume answering again)                  ${ms(takeovers.map((c) => c.last))}`)
      console.log(`  of which: to the takeover's start                           ${ms(takeovers.map((c) => c.recoveredAt - c.recoverMs))}`)
      console.log(`            the takeover                                      ${ms(takeovers.map((c) => c.recoverMs))}`)
      if (takeoversOnly) console.log(`  each, exec to the last answer: ${takeovers.map((c) => f(c.last, 0)).join(', ')} ms`)
      if (!against) console.log(`  the new agent after it: ${f(afterTakeover.rssKb / 1024)} MB, ${afterTakeover.threads} threads`)
    }
    const targetOfTakeovers = (takeovers) => target_(takeovers.every((c) => c.last < 1000),
      `a takeover of all ${mounted} volumes after a SIGKILL, exec to every volume answering, under 1 s: ${takeovers.map((c) => `${f(c.last, 0)} ms`).join(', ')}`)

    // 3. A change of the Node, at full size, beside a listing loop of a pod that reads none of it.
    const quiet = await createPod('quiet')
    await publish(quiet, 'podinfo', QUIET_ITEMS)
    if (takeoversOnly) {
      await takeoversOf(quiet)
      return
    }
    const SECONDS = tiny ? 2 : 4
    const listing = (seconds = SECONDS) => reader(['ls', target(quiet, 'podinfo'), '1', String(seconds)])
    const parse = (out) => { const m = /ops (\d+) errors (\d+) .*p99_ns (\d+) max_ns (\d+)/.exec(out.toString()); return { ops: Number(m[1]), errors: Number(m[2]), p99: Number(m[3]) / 1e6, max: Number(m[4]) / 1e6 } }
    const alone = parse((await listing()).stdout)
    const zones = lists('zones.txt', volumes.map((v) => path.join(v, 'zone')))
    // The same 8 pollers on CPU 1 with no change coming: what the listings wait for CPU 1 alone.
    const pollersOnly = async () => {
      const run = listing(3)
      await sleep(500)
      await reader(['untilall', Buffer.from('no such zone').toString('hex'), '2', zones, '8'])
      return parse((await run).stdout)
    }
    const besidePollers = await pollersOnly()
    const nodeChanges = []
    const besideNode = []
    const changeNode = async (i) => {
      const zone = `zone-${i}`
      const besideRun = listing(3)
      await sleep(500)
      const watcher = reader(['untilall', Buffer.from(zone).toString('hex'), '30', zones, '8'])
      await sleep(200)
      await core.patchNode({ name: NODE, body: [{ op: 'replace', path: `/metadata/labels/${ZONE.replace('/', '~1')}`, value: zone }] })
      const t0 = nowUs()
      const seen = await watcher
      if (seen.code !== 0) throw new Error(`the Node's change did not reach every volume: ${seen.stdout}${seen.stderr}`)
      const took = (Number(/last_us (\d+)/.exec(seen.stdout)[1]) - t0) / 1000
      const beside = parse((await besideRun).stdout)
      await sleep(1000) // the records of the flips are written
      return { took, beside }
    }
    const printNodeChanges = (changes, beside) => {
      console.log(`\na change of the Node's label, ${changes.length} times, ${mounted} volumes mounted: update accepted -> the last of the ${volumes.length} volumes of the ${pods.length} pods serving the new bytes (8 reader threads polling them all)`)
      console.log(`  time                                                        ${ms(changes)} (${changes.map((x) => f(x, 0)).join(', ')})`)
      const worst = beside.reduce((a, b) => (b.max > a.max ? b : a))
      console.log(`  listings of a volume that reads nothing of the Node          ${beside.reduce((a, b) => a + b.ops, 0)} listings, ${beside.reduce((a, b) => a + b.errors, 0)} failed, longest ${f(worst.max, 1)} ms`)
      console.log(`    beside the same 8 pollers, no change coming                ${besidePollers.ops} listings, longest ${f(besidePollers.max, 1)} ms (alone: ${alone.ops} listings, longest ${f(alone.max, 1)} ms)`)
      return worst
    }
    const targetOfNodeChanges = (changes, beside, worst) => {
      target_(Math.max(...changes) < 1000, `a Node change to the last of ${volumes.length} volumes serving the new bytes under 1 s: ${changes.map((x) => `${f(x, 0)} ms`).join(', ')}`)
      target_(beside.every((b) => b.errors === 0) && worst.max < 50, `listings of another volume meanwhile: none failed, longest under 50 ms: ${beside.reduce((a, b) => a + b.errors, 0)}, ${f(worst.max, 1)} ms`)
    }
    if (nodeChangesOnly) {
      // With another build: the two take the node over from each other before each change.
      const allRoots = lists('roots.txt', [...volumes, target(idle, 'podinfo'), target(quiet, 'podinfo')])
      client.close()
      const against = { changes: [], beside: [] }
      for (let i = 1; i <= NODE_CHANGES; i++) {
        const theirs = AGAINST && i % 2 === 1
        if (AGAINST) { await crash(allRoots, theirs ? AGAINST : undefined); await sleep(2000) }
        const { took, beside } = await changeNode(i)
        const into = theirs ? against : { changes: nodeChanges, beside: besideNode }
        into.changes.push(took)
        into.beside.push(beside)
      }
      if (AGAINST) {
        console.log(`\n${AGAINST}, in turn with this one:`)
        printNodeChanges(against.changes, against.beside)
        console.log(`\nthis one (${process.env.DAPIFS_BENCH_MAIN ?? path.join(ROOT, 'dist', 'main.js')}):`)
      }
      const worst = printNodeChanges(nodeChanges, besideNode)
      console.log('\ntargets')
      targetOfNodeChanges(nodeChanges, besideNode, worst)
      return
    }
    for (let i = 1; i <= NODE_CHANGES; i++) {
      const { took, beside } = await changeNode(i)
      nodeChanges.push(took)
      besideNode.push(beside)
    }

    // 4. The noisy neighbour.
    const besideRun = listing()
    await sleep(300)
    const big = 'x'.repeat(250 * 1024)
    const heavy = await createPod('heavy', { annotations: { big } })
    const item = (p, fp) => `- {path: ${p}, fieldRef: {fieldPath: ${fp}}}\n`
    const heavyItems = Array.from({ length: 8 }, (_, i) => item(`a${i}`, 'metadata.annotations')).join('') + item('labels', 'metadata.labels') +
      Array.from({ length: 991 }, (_, i) => item(`n${i}`, 'metadata.name')).join('')
    await publish(heavy, 'largest', heavyItems)
    let updates = 0
    for (const end = Date.now() + (SECONDS - 1) * 1000; Date.now() < end; updates++) {
      await core.patchNamespacedPod({ namespace: NS, name: 'heavy', body: [{ op: 'add', path: '/metadata/labels/rev', value: String(updates) }] })
      await sleep(200)
    }
    const beside = parse((await besideRun).stdout)
    await call('NodeUnpublishVolume', { volume_id: `csi-${heavy.metadata.uid}-largest`, target_path: target(heavy, 'largest') })

    const { takeovers, afterTakeover } = await takeoversOf(quiet)

    const last = rows.at(-1)
    console.log(`\nCSI driver at node scale: ${SIZES.join(', ')} pods on one node, ${PER_POD} volumes each (${ITEMS.split('- path').length - 1} items, one a label of the Node), and one more pod; ` +
      `the driver as its image runs it (node dist/main.js csi) on CPU 0, with its keeper; it started at ${f(startRss.rssKb / 1024)} MB, ${startRss.threads} threads; ` +
      `patch = JSON patch accepted -> new labels readable in all ${PER_POD} of that pod's volumes (${PATCHES} per size, ${PATCHES_AT_FULL} at ${SIZES.at(-1) * PER_POD + 1} volumes, the C reader polling every 100 µs, on CPU 1)\n`)
    const cols = ['pods', 'volumes', 'driver RSS', 'per volume', 'threads', 'watches (pod, node)', 'publish p50 / p99 / max', 'patch p50 / p99 / max']
    const widths = [6, 9, 12, 12, 9, 21, 26, 24]
    const line = (xs) => xs.map((x, i) => String(x).padEnd(widths[i])).join('')
    console.log(line(cols))
    for (const r of rows) {
      console.log(line([r.size, r.volumes, `${f(r.rssMb)} MB`, `${f(r.perVolumeKb, 0)} KB`, r.threads, `${r.pw}, ${r.nw}`,
        `${f(r.pub50)} / ${f(r.pub99)} / ${f(r.pubMax)} ms`, `${f(r.lat50)} / ${f(r.lat99)} / ${f(r.latMax)} ms`]))
    }
    const crashFirst = crashes.map((c) => c.first)
    console.log(`\na crash on an idle node (1 volume), ${CRASHES} times: SIGKILL, then a new agent; from its exec`)
    console.log(`  to its first answered request                               ${ms(crashFirst)}`)
    console.log(`  of which: to the takeover's start (Node's start, loading)   ${ms(crashes.map((c) => c.recoveredAt - c.recoverMs))}`)
    console.log(`            the takeover                                      ${ms(crashes.map((c) => c.recoverMs))}`)
    const worst = printNodeChanges(nodeChanges, besideNode)
    console.log(`\nnoisy neighbour, ${mounted} volumes mounted: listings of one pod's volume (${SECONDS} s, CPU 1; the driver on CPU 0)`)
    console.log(`  alone                                                        ${alone.ops} listings, ${alone.errors} failed, p99 ${f(alone.p99, 2)} ms, longest ${f(alone.max, 2)} ms`)
    console.log(`  while another pod publishes the largest volume the budgets    ${beside.ops} listings, ${beside.errors} failed, p99 ${f(beside.p99, 2)} ms, longest ${f(beside.max, 2)} ms`)
    console.log(`  allow (1,000 items, 2 MB) and changes it ${updates} times`)
    printTakeovers(takeovers, afterTakeover)
    console.log('\ntargets')
    target_(last.rssMb < 250, `driver RSS under 250 MB at ${last.volumes} volumes: ${f(last.rssMb)} MB (${f(last.perVolumeKb, 0)} KB each further volume)`)
    target_(last.threads <= rows[0].threads, `threads that do not grow with mounts: ${rows.map((r) => `${r.threads} at ${r.volumes}`).join(', ')}`)
    target_(last.pub99 < 50, `publish p99 under 50 ms at ${last.volumes} volumes: ${f(last.pub99)} ms`)
    target_(last.lat99 < 20, `label patch to new bytes in that pod's volumes p99 under 20 ms at ${last.volumes} volumes: ${f(last.lat99)} ms`)
    targetOfNodeChanges(nodeChanges, besideNode, worst)
    targetOfTakeovers(takeovers)
    target_(Math.max(...crashFirst) < 150, `a crash on an idle node, exec to the first answered request under 150 ms (median and max of ${CRASHES}): ${f(pct(crashFirst, 0.5), 0)} and ${f(Math.max(...crashFirst), 0)} ms`)
    target_(rows.every((r) => r.pw === 1 && r.nw === 1), `one pod watch and one node watch at every size: ${rows.map((r) => `${r.pw}+${r.nw}`).join(', ')}`)
    target_(beside.errors === 0, `no failed listing beside the largest volume: ${beside.errors}`)
    target_(beside.max < 50, `the longest wait of a listing beside the largest volume under 50 ms: ${f(beside.max, 1)} ms (alone: ${f(alone.max, 1)} ms)`)
  } finally {
    await stop()
  }
}

await main()
