// dapifs following a pod in a real kube-apiserver (1.20.2) with etcd, on 127.0.0.1.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { startDaemon, run, reader, scratch, cat, dataTarget } from './fixtures/daemon.js'
import { needApiServer, startCluster, type Cluster } from './fixtures/kube.js'

const NS = 'dapifs'

const podManifest = (labels: Record<string, string>) => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: 'web', namespace: NS, labels, annotations: { owner: 'team-a' } },
  spec: {
    nodeName: 'node-1',
    containers: [{ name: 'app', image: 'nginx', resources: { requests: { memory: '64Mi' } } }],
    volumes: [{
      name: 'podinfo',
      downwardAPI: {
        items: [
          { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
          { path: 'annotations', fieldRef: { fieldPath: 'metadata.annotations' } },
          { path: 'cpu_limit', resourceFieldRef: { containerName: 'app', resource: 'limits.cpu', divisor: '1m' } },
          { path: 'mem_limit', resourceFieldRef: { containerName: 'app', resource: 'limits.memory', divisor: '1Mi' } },
          { path: 'mem_request', resourceFieldRef: { containerName: 'app', resource: 'requests.memory', divisor: '1Mi' } },
        ],
      },
    }],
  },
})

const formatLabels = (l: Record<string, string>): string => Object.keys(l).sort().map((k) => `${k}="${l[k]}"`).join('\n')
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!

async function main(): Promise<void> {
  if (!(await needApiServer('against a real API server'))) return

  t.test('following a pod in a real API server', async (t) => {
    const k: Cluster = await startCluster(t)
    await k.core.createNamespace({ body: { metadata: { name: NS } } })
    await k.core.createNode({ body: { metadata: { name: 'node-1' }, status: { allocatable: { cpu: '3800m', memory: '7Gi', pods: '110' } } } })
    let labels: Record<string, string> = { app: 'web' }
    await k.core.createNamespacedPod({ namespace: NS, body: podManifest(labels) })
    const env = { KUBECONFIG: k.kubeconfig }

    const rendered = await run('env', [`KUBECONFIG=${k.kubeconfig}`, process.execPath, 'dist/main.js', 'render', '--pod', `${NS}/web`])
    t.equal(rendered.code, 0, rendered.stderr)
    t.same(JSON.parse(rendered.stdout.toString()).files.cpu_limit, { content: '3800', mode: '0644' }, 'render --pod reads the node\'s allocatable')

    const d = await startDaemon(t, ['--pod', `${NS}/web`, '--debug'], { env })
    const m = d.mnt
    t.equal(await cat(path.join(m, 'labels')), 'app="web"')
    t.equal(await cat(path.join(m, 'annotations')), 'owner="team-a"')
    t.equal(await cat(path.join(m, 'cpu_limit')), '3800', 'an unset cpu limit reads the node\'s allocatable')
    t.equal(await cat(path.join(m, 'mem_limit')), '7168', 'an unset memory limit too')
    t.equal(await cat(path.join(m, 'mem_request')), '64', 'requests never do')

    t.test('label patches arrive within milliseconds', async (t) => {
      const bin = await reader()
      const latencies: number[] = []
      for (let i = 0; i < 20; i++) {
        labels = { ...labels, rev: String(i) }
        const want = Buffer.from(formatLabels(labels)).toString('hex')
        const watcher = run(bin, ['until', path.join(m, 'labels'), want, '10'])
        await new Promise((r) => setTimeout(r, 30)) // let the reader start polling
        await k.core.patchNamespacedPod({ name: 'web', namespace: NS, body: [{ op: 'add', path: '/metadata/labels/rev', value: String(i) }] })
        const accepted = (performance.timeOrigin + performance.now()) * 1000
        const seen = await watcher
        t.equal(seen.code, 0, `patch ${i} became visible`)
        latencies.push(Math.max(0, Number(seen.stdout.toString().split(' ')[1]) - accepted) / 1000)
      }
      t.comment(`patch accepted -> new labels readable: p50 ${pct(latencies, 0.5).toFixed(1)} ms, p90 ${pct(latencies, 0.9).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms over ${latencies.length} patches`)
      t.equal(await cat(path.join(m, 'labels')), formatLabels(labels))
    })

    t.test('status-only patches do not flip', async (t) => {
      const before = await dataTarget(m)
      const mark = d.lines.length
      await k.core.patchNamespacedPodStatus({ name: 'web', namespace: NS, body: [{ op: 'add', path: '/status/podIP', value: '10.1.2.3' }] })
      await k.core.patchNamespacedPodStatus({ name: 'web', namespace: NS, body: [{ op: 'add', path: '/status/phase', value: 'Running' }] })
      await new Promise((r) => setTimeout(r, 500))
      t.same(d.lines.slice(mark).filter((l) => l.includes('flipped')), [])
      t.equal(await dataTarget(m), before)
    })

    t.test('an API server outage: files keep being served; later changes arrive; 410 re-lists', async (t) => {
      // Move etcd's revision past the pod's, so the restarted server (its watch cache starts
      // at the current revision) answers our watch's resourceVersion with 410 Gone.
      for (let i = 0; i < 3; i++) await k.core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: `cm${i}` }, data: { a: String(i) } } })
      const mark = d.lines.length
      await k.stopApi()
      await d.waitFor(/API server unreachable/, mark)
      const during: string[] = []
      for (let i = 0; i < 10; i++) {
        during.push(await cat(path.join(m, 'labels')))
        await new Promise((r) => setTimeout(r, 50))
      }
      t.same([...new Set(during)], [formatLabels(labels)], 'every read during the outage gives the last generation')
      await k.compact()
      await k.startApi()
      await d.waitFor(/410 Gone/, mark, 30_000)
      labels = { ...labels, after: 'outage' }
      await k.core.patchNamespacedPod({ name: 'web', namespace: NS, body: [{ op: 'add', path: '/metadata/labels/after', value: 'outage' }] })
      const seen = await run(await reader(), ['until', path.join(m, 'labels'), Buffer.from(formatLabels(labels)).toString('hex'), '20'])
      t.equal(seen.code, 0, 'a change made after the restart arrives')
    })

    t.test('even with --debug, the token is never logged, nor an annotation value', async (t) => {
      t.ok(d.lines.length > 20, 'there is a debug log to look at')
      t.notOk(d.lines.some((l) => l.includes('devtoken')), 'no token')
      t.notOk(d.lines.some((l) => l.includes('team-a')), 'no annotation value')
    })

    t.test('the pod is deleted: the last generation stays', async (t) => {
      const mark = d.lines.length
      await k.core.deleteNamespacedPod({ name: 'web', namespace: NS, gracePeriodSeconds: 0 })
      await d.waitFor(/pod dapifs\/web \(context local\) was deleted; still serving its last generation/, mark)
      t.equal(await cat(path.join(m, 'labels')), formatLabels(labels))
    })
  })

  t.test('errors that name the pod and the context', async (t) => {
    const k = await startCluster(t)
    await k.core.createNamespace({ body: { metadata: { name: NS } } })
    const dir = scratch(t)
    const badToken = path.join(dir, 'bad-kubeconfig')
    const { readFileSync } = await import('node:fs')
    writeFileSync(badToken, readFileSync(k.kubeconfig, 'utf8').replace('token: devtoken', 'token: wrong'))
    const cases: [string[], RegExp][] = [
      [['render', '--pod', `${NS}/nope`, '--kubeconfig', k.kubeconfig], /^dapifs: pod dapifs\/nope \(context local\): get failed with HTTP 404 \(not found\): pods "nope" not found$/],
      [['render', '--pod', `${NS}/web`, '--kubeconfig', badToken], /^dapifs: pod dapifs\/web \(context local\): get failed with HTTP 401 \(unauthorized: the credentials were refused\)/],
      [['render', '--pod', `${NS}/web`, '--kubeconfig', k.kubeconfig, '--context', 'prod'], /^dapifs: --context: "prod" is not in the kubeconfig \(contexts: local\)$/],
      [['render', '--pod', `${NS}/web`, '--kubeconfig', path.join(dir, 'missing')], /^dapifs: --kubeconfig: .*missing: no such file$/],
      [['mount', path.join(dir), '--pod', `${NS}/web`, '--kubeconfig', badToken, '--no-wait'], /^dapifs: pod dapifs\/web \(context local\): list failed with HTTP 401 .*\(--no-wait\)$/],
      [['mount', path.join(dir), '--pod', `${NS}/nope`, '--kubeconfig', k.kubeconfig, '--no-wait'], /^dapifs: pod dapifs\/nope \(context local\): not found; waiting for it to be created \(--no-wait\)$/],
    ]
    for (const [args, re] of cases) {
      const r = await run(process.execPath, ['dist/main.js', ...args])
      t.equal(r.code, 2, args.join(' '))
      const lines = r.stderr.trimEnd().split('\n').filter((l) => !l.startsWith('dapifs: waiting for'))
      t.match(lines.join('\n'), re)
      t.equal(lines.length, 1, 'one line')
    }
    // Unreachable at start: without --no-wait it waits and retries, and serves once it can.
    await k.core.createNamespacedPod({ namespace: NS, body: podManifest({ app: 'late' }) })
    await k.stopApi()
    const env = { KUBECONFIG: k.kubeconfig }
    const d = await startDaemon(t, ['--pod', `${NS}/web`], { env, waitReady: false })
    t.match(await d.waitFor(/unreachable/, 0, 30_000), /^dapifs: pod dapifs\/web \(context local\): API server unreachable \(ECONNREFUSED\); retrying$/, 'it says it is retrying')
    await k.startApi()
    await d.waitFor(/^dapifs: ready: /, 0, 60_000)
    t.equal(await cat(path.join(d.mnt, 'labels')), 'app="late"')
  })
}

await main()
