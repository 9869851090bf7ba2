// What operators watch, against a real kube-apiserver and the driver over gRPC as the kubelet
// calls it: each metric moves as it should over a publish, a refused publish, a flip, an update
// over a budget, an unpublish and a restart of the API server's watches; /healthz says 503, and
// why, while the watches have not synced and while the keeper is gone, and /livez does not;
// every line of --log-format json parses, with the pod, volume and target where they belong; and
// a pod whose update is not served gets a Warning event, read back from the API server, once per
// cause.
import t from 'tap'
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { MAIN, cat, run, until } from './fixtures/daemon.js'
import { podInfo, startDriver, startKeeper, type Driver } from './fixtures/csi.js'
import { needApiServer, startCluster, type Cluster } from './fixtures/kube.js'

const NS = 'shop'
const NODE = 'node-1'

const podBody = (name: string, annotations: Record<string, string> = { owner: 'team-a' }) => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name, namespace: NS, labels: { app: name }, annotations },
  spec: { nodeName: NODE, containers: [{ name: 'main', image: 'busybox' }] },
})

type PodObj = { metadata?: { name?: string; uid?: string } }
const item = (p: string, fieldPath: string): string => `- {path: ${JSON.stringify(p)}, fieldRef: {fieldPath: ${fieldPath}}}\n`
const LABELS = item('labels', 'metadata.labels')

const req = (d: Driver, pod: PodObj, name: string, items: string) => {
  const target = d.target(pod.metadata!.uid!, name)
  mkdirSync(path.dirname(target), { recursive: true })
  return {
    volume_id: `csi-${name}-${pod.metadata!.uid!}`, target_path: target, readonly: true,
    volume_context: { items, ...podInfo(NS, pod.metadata!.name!, pod.metadata!.uid!) },
    volume_capability: { mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
  }
}

/** The port the driver said it serves HTTP on. */
async function httpOf(d: Driver): Promise<string> {
  const line = await d.waitFor(/\/metrics, \/healthz and \/livez on /)
  return `http://127.0.0.1:${/on 127\.0\.0\.1:(\d+)/.exec(line)![1]}`
}

/** A scrape, as `name{labels}` -> value. */
async function scrape(base: string): Promise<Map<string, number>> {
  const res = await fetch(`${base}/metrics`)
  const out = new Map<string, number>()
  for (const line of (await res.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    out.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return out
}

async function metric(base: string, key: string): Promise<number> {
  return (await scrape(base)).get(key) ?? NaN
}

/** Waits until the metric satisfies `ok`; its last value. */
async function metricUntil(base: string, key: string, ok: (v: number) => boolean, ms = 20_000): Promise<number> {
  let v = NaN
  await until(async () => ok(v = await metric(base, key)), ms)
  return v
}

async function health(base: string, where = '/healthz'): Promise<{ status: number; body: string }> {
  const res = await fetch(`${base}${where}`)
  return { status: res.status, body: await res.text() }
}

async function healthUntil(base: string, ok: (h: { status: number; body: string }) => boolean, where = '/healthz', ms = 30_000): Promise<{ status: number; body: string }> {
  let h = { status: 0, body: '' }
  await until(async () => ok(h = await health(base, where)), ms)
  return h
}

async function eventsOf(k: Cluster, pod: PodObj): Promise<{ type?: string; reason?: string; message?: string; source?: { component?: string; host?: string }; count?: number }[]> {
  const l = await k.core.listNamespacedEvent({ namespace: NS, fieldSelector: `involvedObject.uid=${pod.metadata!.uid!}` })
  return l.items.sort((a, b) => (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''))
}

async function main(): Promise<void> {
  if (!(await needApiServer('what operators watch'))) return

  t.test('what operators watch', async (t) => {
    const k = await startCluster(t)
    await k.core.createNamespace({ body: { metadata: { name: NS } } })
    await k.core.createNode({ body: { metadata: { name: NODE }, status: { allocatable: { cpu: '4', memory: '8Gi' } } } })

    await t.test('metrics move with a publish, a flip, a refusal, an unpublish and a watch restart; the log in JSON', async (t) => {
      const root = mkdtempSync(path.join(os.tmpdir(), 'dapifs-csi-'))
      chmodSync(root, 0o755)
      const keeper = await startKeeper(t, path.join(root, 'plugins', 'csi.dapifs.dev', 'keeper.sock'))
      const d = await startDriver(t, {
        kubeconfig: k.kubeconfig, nodeName: NODE, dir: root, ready: /"message":"serving /,
        args: ['--http-endpoint', '127.0.0.1:0', '--log-format', 'json', '--budget', 'volume=4Ki'],
      })
      const base = await httpOf(d)
      const web = await k.core.createNamespacedPod({ namespace: NS, body: podBody('web') })

      t.equal(await metricUntil(base, 'dapifs_watch_up{resource="pods"}', (v) => v === 1), 1, 'the pods\' watch is up')
      t.equal(await metricUntil(base, 'dapifs_watch_up{resource="node"}', (v) => v === 1), 1, 'the Node\'s watch is up')
      t.equal(await metricUntil(base, 'dapifs_keeper_connected', (v) => v === 1), 1, 'the keeper is connected')
      const m0 = await scrape(base)
      t.equal(m0.get('dapifs_volumes'), 0)
      t.equal(m0.get('dapifs_node_publish_total{code="OK"}'), 0, 'the series are there before the first call')
      t.equal(m0.get('dapifs_node_unpublish_total{code="OK"}'), 0)
      t.equal(m0.get('dapifs_flips_total'), 0)
      t.equal(m0.get('dapifs_render_errors_total'), 0)
      t.equal(m0.get('dapifs_watch_restarts_total{resource="pods"}'), 0)
      t.ok(m0.get('dapifs_watch_events_total{resource="pods"}')! >= 0)
      for (const name of ['process_resident_memory_bytes', 'process_cpu_seconds_total', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
        t.ok(m0.has(name), `prom-client's default metric ${name}`)
      }
      t.same(await health(base), { status: 200, body: 'ok\n' }, '/healthz: ok')

      const pub = req(d, web, 'podinfo', LABELS + item('annotations', 'metadata.annotations'))
      t.ok((await d.call('Node/NodePublishVolume', pub, 30_000)).ok)
      const refused = await d.call('Node/NodePublishVolume', { ...pub, target_path: d.target(web.metadata!.uid!, 'other'), volume_capability: undefined })
      t.match(refused.details, /^volume_capability: is required$/)
      const m1 = await scrape(base)
      t.equal(m1.get('dapifs_node_publish_total{code="OK"}'), 1, 'one publish, OK')
      t.equal(m1.get('dapifs_node_publish_total{code="INVALID_ARGUMENT"}'), 1, 'one publish, INVALID_ARGUMENT')
      t.equal(m1.get('dapifs_node_publish_duration_seconds_count'), 2, 'both timed')
      t.equal(m1.get('dapifs_volumes'), 1, 'one volume served')

      const events = m1.get('dapifs_watch_events_total{resource="pods"}')!
      await k.core.patchNamespacedPod({ name: 'web', namespace: NS, body: [{ op: 'add', path: '/metadata/labels/tier', value: 'front' }] })
      t.ok(await until(async () => (await cat(path.join(pub.target_path, 'labels'))) === 'app="web"\ntier="front"'), 'the label change is served')
      t.equal(await metricUntil(base, 'dapifs_flips_total', (v) => v === 1), 1, 'one flip')
      t.equal(await metricUntil(base, 'dapifs_update_seconds_count', (v) => v === 1), 1, 'its time from the watch event to the flip done')
      t.ok((await metric(base, 'dapifs_update_seconds_sum')) > 0)
      t.ok((await metric(base, 'dapifs_watch_events_total{resource="pods"}')) > events, 'the watch event counted')

      await k.core.patchNamespacedPod({ name: 'web', namespace: NS, body: [{ op: 'replace', path: '/metadata/annotations/owner', value: 'y'.repeat(5000) }] })
      t.equal(await metricUntil(base, 'dapifs_render_errors_total', (v) => v === 1), 1, 'an update over the budget: one render error')
      t.equal(await metric(base, 'dapifs_flips_total'), 1, 'and no flip')

      t.ok((await d.call('Node/NodeUnpublishVolume', { volume_id: pub.volume_id, target_path: pub.target_path })).ok)
      const m2 = await scrape(base)
      t.equal(m2.get('dapifs_node_unpublish_total{code="OK"}'), 1, 'one unpublish, OK')
      t.equal(m2.get('dapifs_volumes'), 0, 'no volume served')

      // The API server goes away and comes back: the watches go down, and are made again.
      await k.stopApi()
      t.equal(await metricUntil(base, 'dapifs_watch_up{resource="pods"}', (v) => v === 0), 0, 'the pods\' watch is down while the API server is')
      t.equal((await health(base)).status, 200, '/healthz stays 200 once synced: a restart would not bring the API server back')
      await k.startApi()
      t.equal(await metricUntil(base, 'dapifs_watch_up{resource="pods"}', (v) => v === 1, 60_000), 1, 'and up again after it')
      t.equal(await metricUntil(base, 'dapifs_watch_up{resource="node"}', (v) => v === 1, 60_000), 1)
      const m3 = await scrape(base)
      t.ok(m3.get('dapifs_watch_restarts_total{resource="pods"}')! >= 1, `the pods' watch was made again (${m3.get('dapifs_watch_restarts_total{resource="pods"}')} times)`)
      t.ok(m3.get('dapifs_watch_restarts_total{resource="node"}')! >= 1, 'and the Node\'s')

      const text = await (await fetch(`${base}/metrics`)).text()
      for (const value of [web.metadata!.uid!, 'web', 'podinfo', root]) t.notOk(text.includes(value), `no label names ${value}`)

      // The keeper goes away: /healthz says so, /livez does not (restarting the agent then would
      // end its volumes); it comes back: both ok.
      t.same(await health(base, '/livez'), { status: 200, body: 'ok\n' })
      await keeper.stop()
      const gone = await healthUntil(base, (h) => h.status === 503)
      t.equal(gone.status, 503, '/healthz: 503 while the keeper is gone')
      t.equal(gone.body, `the keeper at ${keeper.socket} is not connected: volumes published now would not survive a restart of the agent\n`)
      t.equal(await metric(base, 'dapifs_keeper_connected'), 0)
      t.same(await health(base, '/livez'), { status: 200, body: 'ok\n' }, '/livez: still ok')
      await startKeeper(t, keeper.socket)
      t.same(await healthUntil(base, (h) => h.status === 200), { status: 200, body: 'ok\n' }, '/healthz: ok once the keeper is back')
      t.equal((await fetch(`${base}/nothing`)).status, 404)
      t.equal((await fetch(`${base}/metrics`, { method: 'POST' })).status, 405)

      // Every line is one JSON object: time, level, message; a volume's lines name it.
      await d.stop()
      const lines = d.lines.map((l) => { try { return JSON.parse(l) as Record<string, unknown> } catch { return { unparsed: l } } })
      t.same(lines.filter((l) => 'unparsed' in l), [], 'every line parses as JSON')
      for (const l of lines) {
        t.ok(typeof l.time === 'string' && !Number.isNaN(Date.parse(l.time as string)) && ['info', 'warning', 'error'].includes(l.level as string) && typeof l.message === 'string',
          `time, level and message: ${JSON.stringify(l).slice(0, 120)}`)
      }
      const about = { pod: { namespace: NS, name: 'web', uid: web.metadata!.uid! }, volume: 'podinfo', target: pub.target_path }
      for (const [what, re, level] of [['publish', /^published pod shop\/web, volume "podinfo" at /, 'info'], ['flip', /^pod shop\/web, volume "podinfo": flipped to /, 'info'],
        ['refused update', /over the budget of 4 KiB/, 'warning'], ['unpublish', /^unpublished pod shop\/web, volume "podinfo" at /, 'info']] as const) {
        const l = lines.find((x) => re.test(x.message as string))
        t.ok(l, `a ${what} line`)
        t.match(l, { ...about, level }, `the ${what} line names the pod, the volume and the target`)
      }
      t.match(lines.find((l) => /^keeper: .*until it is back/.test(l.message as string)), { level: 'warning' }, 'the keeper gone: a warning')
      t.match(lines.find((l) => /^the keeper at .* answers/.test(l.message as string)), { level: 'info' }, 'back: info')
    })

    await t.test('/healthz before the watches have synced: 503 and why; /livez: 200', async (t) => {
      await k.stopApi()
      const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, args: ['--http-endpoint', '127.0.0.1:0', '--no-keeper'] })
      const base = await httpOf(d)
      const h = await health(base)
      t.equal(h.status, 503)
      t.equal(h.body, `the pods on node ${NODE} have not been listed yet\nnode ${NODE} has not been read yet\n`)
      t.same(await health(base, '/livez'), { status: 200, body: 'ok\n' }, '/livez: the CSI socket answers')
      t.notOk((await scrape(base)).has('dapifs_keeper_connected'), 'no keeper, no keeper series')
      await k.startApi()
      t.same(await healthUntil(base, (x) => x.status === 200, '/healthz', 60_000), { status: 200, body: 'ok\n' }, 'ok once they have')

      // Its port taken: one line, exit 2.
      const port = /:(\d+)$/.exec(base)![1]
      const dir = mkdtempSync(path.join(os.tmpdir(), 'dapifs-csi-'))
      t.teardown(() => rmSync(dir, { recursive: true, force: true }))
      const r = await run(MAIN, ['csi', '--endpoint', `unix://${dir}/csi.sock`, '--node-name', NODE, '--kubeconfig', k.kubeconfig, '--kubelet-dir', dir,
        '--no-registration', '--no-keeper', '--http-endpoint', `127.0.0.1:${port}`], { timeoutMs: 30_000 })
      t.equal(r.code, 2, 'a port in use: exit 2')
      t.equal(r.stderr, `dapifs: --http-endpoint: cannot listen on 127.0.0.1:${port}: EADDRINUSE\n`)
    })

    await t.test('a Warning event on the pod for each cause of an update not served, once', async (t) => {
      const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, args: ['--budget', 'volume=4Ki,file=3Ki'] })
      const pod = await k.core.createNamespacedPod({ namespace: NS, body: podBody('grows') })
      // Two copies of the annotations, one under a path with a newline in it: 2.5 KiB each is over
      // the volume's 4 KiB; 3.5 KiB is over a file's 3 KiB.
      const p = req(d, pod, 'podinfo', item('a', 'metadata.annotations') + item('b\nc', 'metadata.annotations'))
      t.ok((await d.call('Node/NodePublishVolume', p, 30_000)).ok)
      const owner = (value: string) => k.core.patchNamespacedPod({ name: 'grows', namespace: NS, body: [{ op: 'replace', path: '/metadata/annotations/owner', value }] })
      const flipped = async (value: string): Promise<void> => {
        await owner(value)
        t.ok(await until(async () => (await cat(path.join(p.target_path, 'a'))).endsWith(`\nowner="${value}"`)), `${value}: served`)
      }

      let mark = d.lines.length
      await owner('v'.repeat(2500))
      await d.waitFor(/over the budget of 4 KiB/, mark)
      t.ok(await until(async () => (await eventsOf(k, pod)).length === 1), 'over the volume\'s budget: an event')
      const [first] = await eventsOf(k, pod)
      t.match(first, {
        type: 'Warning', reason: 'FailedVolumeUpdate', source: { component: 'csi.dapifs.dev', host: NODE }, count: 1,
        message: /^volume "podinfo" was not updated: renders 5,\d{3} bytes, over the budget of 4 KiB \(--budget volume=\.\.\.\); it keeps serving its last good files$/,
      })
      await owner('v'.repeat(2600)) // the same cause, another figure
      await flipped('team-b') // served again
      mark = d.lines.length
      await owner('v'.repeat(2500)) // the same cause again: logged again, but no second event
      await d.waitFor(/over the budget of 4 KiB/, mark)
      await owner('w'.repeat(3500)) // another cause
      await d.waitFor(/over the budget of 3 KiB/, mark)
      t.ok(await until(async () => (await eventsOf(k, pod)).length >= 2), 'over a file\'s budget: another event')
      // Events are posted in order, one at a time: a second one for the first cause would be there.
      const all = await eventsOf(k, pod)
      t.equal(all.length, 2, `one event per cause: ${JSON.stringify(all.map((e) => e.message))}`)
      const second = all.find((e) => e !== all.find((x) => x.message === first!.message))!
      t.match(second.message, /^volume "podinfo" was not updated: (item "a"|item "b\\nc"): renders 3,\d{3} bytes, over the budget of 3 KiB \(--budget file=\.\.\.\); it keeps serving its last good files$/)
      t.notOk(all.some((e) => e.message!.includes('\n')), 'a newline in a path is quoted, as in the log')
      t.match(await cat(path.join(p.target_path, 'a')), 'owner="team-b"', 'the last good files are served')
    })

    await t.test('a pod\'s volumes over its budget together: one event; each volume over its own: one each; at most 1,024 bytes', async (t) => {
      const d = await startDriver(t, { kubeconfig: k.kubeconfig, nodeName: NODE, args: ['--budget', 'pod=6Ki,file=5Ki'] })
      const pod = await k.core.createNamespacedPod({ namespace: NS, body: podBody('twins') })
      // An item path of 1,211 bytes, so that its message would be longer than an event's.
      const long = Array.from({ length: 12 }, (_, i) => `${String(i).padStart(2, '0')}${'x'.repeat(98)}`).join('/')
      for (const [name, p] of [['one', 'a'], ['two', long]]) t.ok((await d.call('Node/NodePublishVolume', req(d, pod, name!, item(p!, 'metadata.annotations')), 30_000)).ok)
      const owner = (value: string) => k.core.patchNamespacedPod({ name: 'twins', namespace: NS, body: [{ op: 'replace', path: '/metadata/annotations/owner', value }] })
      let mark = d.lines.length
      await owner('z'.repeat(3500)) // 3.5 KiB in each volume: 7 KiB, over the pod's 6 KiB
      await d.waitFor(/over the budget of 6 KiB/, mark)
      await owner('z'.repeat(3600)) // the same cause
      mark = d.lines.length
      await owner('z'.repeat(5500)) // over a file's 5 KiB, in each volume: a cause each
      await d.waitFor(/volume "two", item .* over the budget of 5 KiB/, mark)
      t.ok(await until(async () => (await eventsOf(k, pod)).length >= 3), 'three events')
      const all = await eventsOf(k, pod)
      t.equal(all.length, 3, `one for the pod's budget, one for each volume's file: ${JSON.stringify(all.map((e) => e.message!.slice(0, 60)))}`)
      t.equal(all.filter((e) => /: pod shop\/twins: would serve, in 2 volumes, [\d,]+ bytes, over the budget of 6 KiB \(--budget pod=\.\.\.\); it keeps serving its last good files$/.test(e.message!)).length, 1, 'the pod\'s budget: once for both volumes')
      t.ok(all.some((e) => /^volume "one" was not updated: item "a": renders 5,\d{3} bytes, over the budget of 5 KiB \(--budget file=\.\.\.\); it keeps serving its last good files$/.test(e.message!)), 'volume one: its file')
      const two = all.find((e) => e.message!.startsWith('volume "two" was not updated: item "00xxx'))
      t.ok(two, 'volume two: its file')
      t.equal(Buffer.byteLength(two!.message!), 1024, 'cut at 1,024 bytes')
      t.ok(two!.message!.endsWith('…'), 'with an ellipsis')
    })
  })
}

void main()
