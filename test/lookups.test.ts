// Floods of lookups for names that are not there: the kernel is told once that a name is absent
// (a negative entry) and answers the rest itself, so one container stat-ing missing names in a
// loop does not keep the agent's thread busy; and a name that a flip then creates is found at
// once, in both flip modes and for a new generation's directory.
import t from 'tap'
import { mkdirSync } from 'node:fs'
import path from 'node:path'
import { Daemon } from '../lib/fs/daemon.js'
import type { Generation } from '../lib/volume/generation.js'
import { readPod } from '../lib/volume/pod.js'
import { cat, dataTarget, parseReader, reader, run, scratch, scratchPod, startDaemon, until, writePod, type Daemon as DaemonProc } from './fixtures/daemon.js'

const pod = (items: { path: string; fieldPath: string }[], labels: Record<string, string> = { app: 'web' }) => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: 'web-1', namespace: 'shop', uid: 'uid-1', labels },
  spec: {
    containers: [{ name: 'app' }],
    volumes: [{ name: 'podinfo', downwardAPI: { items: items.map((i) => ({ path: i.path, fieldRef: { fieldPath: i.fieldPath } })) } }],
  },
})
const LABELS = { path: 'labels', fieldPath: 'metadata.labels' }
const NAME = { path: 'later', fieldPath: 'metadata.name' }

/** The daemon's FUSE request counts (--count-requests), as it prints them on SIGUSR2. */
async function requests(d: DaemonProc): Promise<Record<string, number>> {
  const mark = d.lines.length
  d.proc.kill('SIGUSR2')
  const line = await d.waitFor(/^dapifs: requests /, mark)
  return JSON.parse(line.slice('dapifs: requests '.length)) as Record<string, number>
}

for (const mode of ['through the VFS', 'inside the daemon (--no-inotify)']) {
  t.test(`missing names ask the daemon once; a flip ${mode} that creates one shows it at once`, async (t) => {
    const file = scratchPod(t, pod([LABELS]))
    const d = await startDaemon(t, ['--pod-file', file, '--count-requests', ...(mode.includes('no-inotify') ? ['--no-inotify'] : [])])
    const bin = await reader()
    const before = await requests(d)
    // Two readers in tight loops for a second each: a missing top-level name, and one below ..data.
    for (const missing of ['later', '..data/nothing/here']) {
      const r = parseReader((await run(bin, ['stat', path.join(d.mnt, missing), '2', '1'])).stdout.toString())
      t.ok(r.errors > 1000, `${missing}: ${r.errors} stats`)
      t.equal(r.reads, 0, 'none found')
      t.same([...r.errnos.entries()], [[2, r.errors]], 'each one ENOENT')
    }
    const after = await requests(d)
    const asked = (after.getattr ?? 0) - (before.getattr ?? 0)
    t.ok(asked < 20, `the daemon was asked ${asked} times in all`)

    // The pod gains an item at that name: the flip makes it, and the kernel's entry goes.
    writePod(file, pod([LABELS, NAME]))
    t.ok(await until(async () => (await run('cat', [path.join(d.mnt, 'later')])).code === 0, 5000), 'the new name is found')
    t.equal(await cat(path.join(d.mnt, 'later')), 'web-1')
    t.equal(await cat(path.join(d.mnt, 'labels')), 'app="web"')
  })
}

t.test('a new generation\'s name, looked up before it exists, resolves once ..data points at it', async (t) => {
  // In this process, so that the test can choose the next generation's name (Daemon.restore takes
  // a generation as it is); the mount is read only by child processes.
  const dir = scratch(t)
  const mnt = path.join(dir, 'mnt')
  mkdirSync(mnt)
  const daemon = new Daemon({ mountpoint: mnt, settings: { allocatable: new Map() }, say: () => {} })
  daemon.apply(readPod(pod([LABELS])))
  await daemon.start()
  t.teardown(() => daemon.stop())
  const next: Generation = { name: '..2030_01_01_00_00_00.12345', createdMs: Date.now(), projection: { files: [{ path: 'labels', data: Buffer.from('app="next"'), mode: 0o644 }] } }
  const guess = await run('stat', [path.join(mnt, next.name)])
  t.equal(guess.code, 1, 'a reader looks the name up before it exists: ENOENT, and the kernel keeps that')
  daemon.restore(next)
  t.ok(await until(async () => (await dataTarget(mnt)) === next.name, 5000), '..data points at it')
  t.equal(await cat(path.join(mnt, 'labels')), 'app="next"', 'and it resolves: the kernel was told to forget its absence')
  t.equal((await run('stat', ['-c', '%F', path.join(mnt, next.name)])).stdout.toString().trim(), 'directory')
})
