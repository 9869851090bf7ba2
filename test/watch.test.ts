// The list+watch loop against a fake API server on loopback, for faults the real one does not
// produce on demand: HTTP 500 on the watch, a list that fails, a stop() during the backoff.
import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { KubeConfig, CoreV1Api } from '@kubernetes/client-node'
import { NamedWatch } from '../lib/source/watch.js'

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void

async function fakeServer(t: Test, handler: Handler): Promise<{ kc: KubeConfig; requests: string[] }> {
  const requests: string[] = []
  const server = http.createServer((req, res) => { requests.push(`${req.method} ${req.url}`); handler(req, res) })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()) }))
  const kc = new KubeConfig()
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
    users: [{ name: 'anon' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'anon' }],
    currentContext: 'fake',
  })
  return { kc, requests }
}

const pod = (rv: string, labels: Record<string, string>) => ({ metadata: { name: 'p1', namespace: 'ns', resourceVersion: rv, labels } })

function target(kc: KubeConfig) {
  const core = kc.makeApiClient(CoreV1Api)
  return {
    what: 'pod ns/p1', path: '/api/v1/namespaces/ns/pods', name: 'p1',
    list: async () => {
      const l = await core.listNamespacedPod({ namespace: 'ns', fieldSelector: 'metadata.name=p1' })
      return { items: l.items, resourceVersion: l.metadata?.resourceVersion ?? '' }
    },
  }
}

const until = async (cond: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out')
    await new Promise((r) => setTimeout(r, 10))
  }
}

t.test('a watch that fails with HTTP 500 is retried, from the same resourceVersion', async (t) => {
  let watches = 0
  const { kc, requests } = await fakeServer(t, (req, res) => {
    if (!req.url!.includes('watch=true')) {
      res.setHeader('content-type', 'application/json')
      return res.end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: '100' }, items: [pod('100', { a: '1' })] }))
    }
    if (++watches <= 2) { res.statusCode = 500; return res.end('{}') }
    res.write(JSON.stringify({ type: 'MODIFIED', object: pod('101', { a: '2' }) }) + '\n')
  })
  const seen: string[] = []
  const problems: string[] = []
  const w = new NamedWatch(kc, target(kc), {
    object: (o, how) => seen.push(`${how} ${JSON.stringify((o as { metadata: { labels: unknown } }).metadata.labels)}`),
    problem: (m) => problems.push(m),
  })
  w.start()
  t.teardown(() => w.stop())
  await until(() => seen.length === 2)
  t.same(seen, ['listed {"a":"1"}', 'modified {"a":"2"}'])
  t.same(problems, ['pod ns/p1: watch failed with HTTP 500 (server error)', 'pod ns/p1: watch failed with HTTP 500 (server error)'])
  t.same(requests.filter((r) => r.includes('watch=true')).map((r) => /resourceVersion=(\d+)/.exec(r)?.[1]), ['100', '100', '100'], 'each retry resumes from the last resourceVersion')
})

t.test('a failing list is retried with backoff; 410 Gone lists again', async (t) => {
  let lists = 0
  const { kc, requests } = await fakeServer(t, (req, res) => {
    if (!req.url!.includes('watch=true')) {
      if (++lists === 1) { res.statusCode = 503; return res.end('{}') }
      res.setHeader('content-type', 'application/json')
      return res.end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(100 + lists) }, items: [pod('100', { list: String(lists) })] }))
    }
    if (lists === 2) { res.statusCode = 410; return res.end('{}') } // the first watch: too old
    res.write('')
  })
  const seen: string[] = []
  const w = new NamedWatch(kc, target(kc), { object: (o, how) => seen.push(`${how} ${JSON.stringify((o as { metadata: { labels: unknown } }).metadata.labels)}`), problem: () => {} })
  w.start()
  t.teardown(() => w.stop())
  await until(() => seen.length === 2)
  t.same(seen, ['listed {"list":"2"}', 'listed {"list":"3"}'], 'listed after the 503, and again after the 410')
  t.equal(requests.filter((r) => !r.includes('watch=true')).length, 3)
})

t.test('stop() during a backoff leaves nothing running', async (t) => {
  const { kc, requests } = await fakeServer(t, (req, res) => { res.statusCode = 500; res.end('{}') })
  const w = new NamedWatch(kc, target(kc), { object: () => {}, problem: () => {} })
  w.start()
  await until(() => requests.length >= 3) // failing, and backing off (100, 200, 400 ms …)
  w.stop()
  const count = requests.length
  await new Promise((r) => setTimeout(r, 1500))
  t.equal(requests.length, count, 'no request after stop()')
})
