// A mountpoint's name is data, never code: one whose name is shell syntax (as a pod's volume
// path could be, in the CSI driver) is mounted, cleaned up after a kill, and unmounted as it is,
// and nothing in it runs. fusermount is run without a shell (lib/native/fuse.ts, fusermount).
import t from 'tap'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { startDaemon, scratch, scratchPod, cat, unescapeMountPath } from './fixtures/daemon.js'

const POD = {
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: 'web', namespace: 'shop', labels: { app: 'web' } },
  spec: { containers: [{ name: 'app' }], volumes: [{ name: 'v', downwardAPI: { items: [
    { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
  ] } }] },
}

/** Whether /proc/mounts lists `mnt` (which writes space as \040 and newline as \012). */
const inProcMounts = (mnt: string): boolean =>
  readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => unescapeMountPath(l.split(' ')[1] ?? '') === mnt)

/** Whether `dir` holds a file PWNED: what `touch PWNED`, run by a shell there, would make. */
const pwned = (dir: string): boolean => readdirSync(dir).includes('PWNED')

t.test('a mountpoint named in shell syntax: mounted, cleaned up after a kill and unmounted as it is; nothing runs', async (t) => {
  // Each way a shell would run something: $(), backticks, ;, and quotes around them, then a newline.
  const name = 'a $(touch PWNED) b `touch PWNED` c; touch PWNED; d \'$(touch PWNED)\' "e" \\ f\ng'
  const dir = scratch(t) // the daemons' working directory, where a shell's `touch PWNED` would land
  const mnt = path.join(dir, name)
  const podFile = scratchPod(t, POD)

  const first = await startDaemon(t, ['--pod-file', podFile], { mnt, cwd: dir })
  t.equal(await cat(path.join(mnt, 'labels')), 'app="web"', 'it serves')
  t.ok(inProcMounts(mnt), 'mounted at that very path (/proc/mounts)')
  // A killed daemon leaves its mount behind; the next one unmounts it (fusermount -uz) and mounts.
  await first.stop('SIGKILL')
  const second = await startDaemon(t, ['--pod-file', podFile], { mnt, cwd: dir })
  t.ok(second.lines.some((l) => l.includes('unmounted a stale mount')), 'the next daemon unmounted the stale mount')
  t.equal(await cat(path.join(mnt, 'labels')), 'app="web"', 'the new daemon serves')
  t.equal(await second.stop('SIGTERM'), 0, 'SIGTERM: unmounted, exit 0')
  t.notOk(inProcMounts(mnt), 'the mount is gone (/proc/mounts)')
  t.notOk(second.lines.some((l) => /unmount failed/.test(l)), 'no unmount failed')

  t.notOk(pwned(dir), 'no PWNED where the daemons ran')
  t.notOk(pwned(path.dirname(podFile)), 'nor beside the pod file')
  t.notOk(existsSync(path.resolve('PWNED')), 'nor where the tests run')
})
