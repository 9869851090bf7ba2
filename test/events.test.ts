// The bounds on Warning events (lib/observe/events.ts), with a stand-in for the API server that
// holds each post until told: once per cause per pod in 10 minutes, 5 per pod, one post in
// flight and 50 waiting for the whole node, messages on one line within 1,024 bytes. The events
// themselves are read back from a real API server in observe.test.ts.
import t from 'tap'
import type { CoreV1Event } from '@kubernetes/client-node'
import { PodEvents, clip, eventMessage } from '../lib/observe/events.js'

function recorder(): { events: PodEvents; posted: CoreV1Event[]; inFlight: () => number; release: () => Promise<void>; lines: string[]; clock: { now: number } } {
  const posted: CoreV1Event[] = []
  const waiting: (() => void)[] = []
  const lines: string[] = []
  const clock = { now: Date.parse('2026-12-06T12:00:00Z') }
  const events = new PodEvents({
    host: 'node-1',
    say: (line) => lines.push(line),
    now: () => clock.now,
    post: (_ns, event) => new Promise((resolve) => { waiting.push(() => { posted.push(event); resolve() }) }),
  })
  const release = async (): Promise<void> => {
    // Let every queued post through, one at a time, as the API server answers them.
    for (let i = 0; i < 1000; i++) {
      await new Promise((r) => setImmediate(r))
      const next = waiting.shift()
      if (!next) return
      next()
    }
  }
  return { events, posted, inFlight: () => waiting.length, release, lines, clock }
}

const pod = (n: number) => ({ namespace: 'shop', name: `web-${n}`, uid: `uid-${n}` })

t.test('once per cause per pod, at most 5 per pod in 10 minutes, then again', async (t) => {
  const r = recorder()
  for (let i = 0; i < 3; i++) r.events.warn({ pod: pod(1), volume: 'v', message: `volume "v": renders ${5000 + i} bytes, over the budget of 4 KiB`, cause: 'over volume' })
  await r.release()
  t.equal(r.posted.length, 1, 'one cause: one event, whatever its figures')
  for (let i = 0; i < 10; i++) r.events.warn({ pod: pod(1), volume: 'v', message: `cause ${i}`, cause: `cause ${i}` })
  await r.release()
  t.equal(r.posted.length, 5, 'at most 5 per pod')
  r.events.warn({ pod: pod(2), volume: 'v', message: 'x', cause: 'over volume' })
  await r.release()
  t.equal(r.posted.length, 6, 'another pod has its own')
  r.clock.now += 10 * 60_000
  r.events.warn({ pod: pod(1), volume: 'v', message: 'again', cause: 'over volume' })
  await r.release()
  t.equal(r.posted.length, 7, '10 minutes later, the same cause again')
  t.match(r.posted[0], {
    metadata: { namespace: 'shop', name: /^web-1\.[0-9a-f]+$/ },
    involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace: 'shop', name: 'web-1', uid: 'uid-1' },
    type: 'Warning', reason: 'FailedVolumeUpdate', source: { component: 'csi.dapifs.dev', host: 'node-1' }, count: 1,
    message: 'volume "v" was not updated: renders 5000 bytes, over the budget of 4 KiB; it keeps serving its last good files',
  })
  t.equal(new Set(r.posted.map((e) => e.metadata!.name)).size, r.posted.length, 'each event has a name of its own')
})

t.test('one post in flight; 50 waiting; more are dropped, and the log says how many', async (t) => {
  const r = recorder()
  for (let i = 0; i < 120; i++) r.events.warn({ pod: pod(i), volume: 'v', message: 'm', cause: 'c' })
  t.equal(r.inFlight(), 1, 'one request at a time')
  await r.release()
  t.equal(r.posted.length, 51, 'the one in flight and the 50 that waited')
  t.same(r.lines, ['69 Warning events on pods were not recorded: more than 50 were waiting'])
})

t.test('a failure to post is said once per distinct failure, and the next event is posted', async (t) => {
  const lines: string[] = []
  let fail = true
  const posted: string[] = []
  const events = new PodEvents({
    host: 'n', say: (l) => lines.push(l),
    post: async (_ns, e) => { if (fail) throw new Error('HTTP 403 forbidden'); posted.push(e.involvedObject.name!) },
  })
  for (let i = 0; i < 3; i++) events.warn({ pod: pod(i), volume: 'v', message: 'm', cause: 'c' })
  await new Promise((r) => setTimeout(r, 10))
  t.equal(lines.length, 1)
  t.match(lines[0], /^cannot record a Warning event on pod shop\/web-0: HTTP 403 forbidden \(the agent's ServiceAccount needs create on events/)
  fail = false
  events.warn({ pod: pod(9), volume: 'v', message: 'm', cause: 'c' })
  await new Promise((r) => setTimeout(r, 10))
  t.same(posted, ['web-9'])
  events.stop()
  events.warn({ pod: pod(10), volume: 'v', message: 'm', cause: 'c' })
  await new Promise((r) => setTimeout(r, 10))
  t.same(posted, ['web-9'], 'nothing after stop()')
})

t.test('messages: the volume named once, one line, at most 1,024 bytes, never cut inside a character', async (t) => {
  t.equal(eventMessage('v', 'volume "v", item "a\\nb": renders 9 bytes'), 'volume "v" was not updated: item "a\\nb": renders 9 bytes; it keeps serving its last good files')
  t.equal(eventMessage('v', 'pod shop/web: would serve 9 bytes'), 'volume "v" was not updated: pod shop/web: would serve 9 bytes; it keeps serving its last good files')
  t.equal(eventMessage('v', 'a\nb\u2028c'), 'volume "v" was not updated: a\\nb\\u2028c; it keeps serving its last good files', 'control characters escaped as in the log')
  const long = eventMessage('v', `item ${'é'.repeat(2000)}`)
  t.ok(Buffer.byteLength(long) <= 1024 && long.endsWith('…'), `${Buffer.byteLength(long)} bytes`)
  t.notOk(long.includes('\ufffd'), 'no broken character')
  t.equal(clip('abc', 3), 'abc')
  t.equal(clip('abcd', 3), '…')
  t.equal(clip('abcdef', 5), 'ab…')
})
