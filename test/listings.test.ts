// Listings: the kernel keeps each directory's listing, so a container listing its volume in a
// loop asks the agent's thread nothing; and every flip, through the VFS or inside the daemon,
// shows at once in the next listing: the new generation and new names there, the old ones gone.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { dataTarget, parseReader, reader, run, scratchPod, startDaemon, until, writePod, type Daemon as DaemonProc } from './fixtures/daemon.js'

const pod = (labels: Record<string, string>, extra: { path: string; fieldPath: string }[] = []) => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: 'web-1', namespace: 'shop', uid: 'uid-1', labels },
  spec: {
    containers: [{ name: 'app' }],
    volumes: [{ name: 'podinfo', downwardAPI: { items: [{ path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } }, { path: 'sub/name', fieldRef: { fieldPath: 'metadata.name' } },
      ...extra.map((i) => ({ path: i.path, fieldRef: { fieldPath: i.fieldPath } }))] } }],
  },
})

/** The daemon's FUSE request counts (--count-requests), as it prints them on SIGUSR2. */
async function requests(d: DaemonProc): Promise<Record<string, number>> {
  const mark = d.lines.length
  d.proc.kill('SIGUSR2')
  const line = await d.waitFor(/^dapifs: requests /, mark)
  return JSON.parse(line.slice('dapifs: requests '.length)) as Record<string, number>
}

/** A listing as `ls -a` gives it (a child process), sorted. */
async function listing(dir: string): Promise<string[]> {
  const r = await run('ls', ['-a', '-1', dir])
  if (r.code !== 0) throw new Error(`ls ${dir}: ${r.stderr}`)
  return r.stdout.toString().split('\n').filter(Boolean).sort()
}

for (const mode of ['through the VFS', 'inside the daemon (--no-inotify)']) {
  t.test(`listings come from the kernel; each flip ${mode} shows in the next one`, async (t) => {
    const file = scratchPod(t, pod({ app: 'web' }))
    const d = await startDaemon(t, ['--pod-file', file, '--count-requests', ...(mode.includes('no-inotify') ? ['--no-inotify'] : [])])
    const bin = await reader()
    const expected = async (names: string[]): Promise<string[]> => ['.', '..', '..data', await dataTarget(d.mnt), ...names].sort()

    t.same(await listing(d.mnt), await expected(['labels', 'sub']), 'the root, as the kubelet lays it out')
    t.same(await listing(path.join(d.mnt, 'sub')), ['.', '..', 'name'])
    const before = await requests(d)
    for (const dir of [d.mnt, path.join(d.mnt, '..data', 'sub')]) {
      const r = parseReader((await run(bin, ['ls', dir, '2', '1'])).stdout.toString())
      t.ok(r.reads > 1000, `${dir}: ${r.reads} listings`)
      t.equal(r.errors, 0, 'none failed')
    }
    const after = await requests(d)
    const asked = (after.readdir ?? 0) - (before.readdir ?? 0)
    t.ok(asked <= 2, `the daemon was asked for ${asked} listings in all`)

    for (let i = 1; i <= 5; i++) {
      const old = await dataTarget(d.mnt)
      // Every other flip gains or loses a top-level name.
      writePod(file, pod({ app: 'web', rev: String(i) }, i % 2 ? [{ path: 'name', fieldPath: 'metadata.name' }] : []))
      t.ok(await until(async () => (await dataTarget(d.mnt)) !== old, 5000), `flip ${i}`)
      // The flip's last steps (its links, the kernel told) land a moment after ..data's.
      const want = await expected(i % 2 ? ['labels', 'name', 'sub'] : ['labels', 'sub'])
      await until(async () => JSON.stringify(await listing(d.mnt)) === JSON.stringify(want), 2000)
      t.same(await listing(d.mnt), want, `flip ${i}: the new generation and names listed, the old gone`)
    }
  })
}

t.test('a flip inside the daemon that no reader followed through ..data still shows in the next listing', async (t) => {
  // Nothing looks ..data up here, so the kernel holds no entry of it: its invalidation alone
  // would not drop the kept listing (the kernel drops it with an entry it finds).
  const file = scratchPod(t, pod({ app: 'web' }))
  const d = await startDaemon(t, ['--pod-file', file, '--no-inotify'])
  const first = await listing(d.mnt)
  t.equal(first.filter((n) => n.startsWith('..2')).length, 1, 'one generation listed')
  // Whatever looked ..data up (the fixture, waiting for the mount) let go of: the kernel's unused
  // entries dropped. The root is the mount's, in use: its kept listing stays.
  writeFileSync('/proc/sys/vm/drop_caches', '2')
  const mark = d.lines.length
  writePod(file, pod({ app: 'web', rev: '1' }))
  const line = await d.waitFor(/flipped to /, mark)
  const gen = /flipped to (\S+):/.exec(line)![1]!
  t.same(await listing(d.mnt), ['.', '..', '..data', gen, 'labels', 'sub'].sort(), 'the new generation listed, the old one gone')
})
