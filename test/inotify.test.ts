// inotify parity: watchers of the mount see each flip as on the kubelet's tmpfs.
import t from 'tap'
import { spawn } from 'node:child_process'
import path from 'node:path'
import type { Test } from 'tap'
import { startDaemon, run, scratchPod, dataTarget, type Daemon, writePod } from './fixtures/daemon.js'

const pod = (labels: Record<string, string>, extraItem = false) => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: 'web', namespace: 'shop', uid: 'u1', labels },
  spec: {
    containers: [{ name: 'app' }],
    volumes: [{ name: 'v', downwardAPI: { items: [
      { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
      { path: extraItem ? 'podname' : 'namespace', fieldRef: { fieldPath: extraItem ? 'metadata.name' : 'metadata.namespace' } },
    ] } }],
  },
})


/** A watcher process on the mount; its output lines. */
function watcher(t: Test, cmd: string, args: string[]): { lines: string[]; ready: Promise<void> } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const lines: string[] = []
  let onReady: () => void
  const ready = new Promise<void>((r) => { onReady = r })
  const feed = (d: Buffer): void => {
    for (const l of d.toString().split('\n').filter(Boolean)) {
      if (/Watches established|^watching/.test(l)) onReady()
      else if (/^Setting up watches/.test(l)) continue
      else lines.push(l)
    }
  }
  child.stdout!.on('data', feed)
  child.stderr!.on('data', feed)
  return { lines, ready }
}

async function flip(d: Daemon, file: string, p: unknown): Promise<void> {
  const mark = d.lines.length
  writePod(file, p)
  await d.waitFor(/flipped to/, mark)
}

t.test('inotifywait sees the atomic writer\'s events for every flip', async (t) => {
  const podFile = scratchPod(t, pod({ v: '0' }))
  const d = await startDaemon(t, ['--pod-file', podFile])
  const w = watcher(t, 'inotifywait', ['-m', '--format', '%e %f', d.mnt])
  await w.ready
  for (let i = 1; i <= 3; i++) await flip(d, podFile, pod({ v: String(i) }))
  await flip(d, podFile, pod({ v: '4' }, true)) // namespace goes, podname comes
  await new Promise((r) => setTimeout(r, 300))
  const events = w.lines.filter((l) => !/ISDIR|^OPEN|^ACCESS|^CLOSE/.test(l))
  const flipEvents = ['CREATE ..data_tmp', 'MOVED_FROM ..data_tmp', 'MOVED_TO ..data']
  t.same(events, [...flipEvents, ...flipEvents, ...flipEvents, ...flipEvents, 'CREATE podname', 'DELETE namespace'],
    'three events per flip, in order, then CREATE/DELETE for the top-level entries that came and went')
  t.equal((await run('cat', [path.join(d.mnt, 'podname')])).stdout.toString(), 'web')
})

t.test('on a 1.20 kubelet a new top-level link comes before ..data_tmp (--kubelet-version 1.20)', async (t) => {
  const podFile = scratchPod(t, pod({ v: '0' }))
  const d = await startDaemon(t, ['--pod-file', podFile, '--kubelet-version', '1.20'])
  const w = watcher(t, 'inotifywait', ['-m', '--format', '%e %f', d.mnt])
  await w.ready
  await flip(d, podFile, pod({ v: '1' }))
  await flip(d, podFile, pod({ v: '2' }, true)) // namespace goes, podname comes
  await new Promise((r) => setTimeout(r, 300))
  const events = w.lines.filter((l) => !/ISDIR|^OPEN|^ACCESS|^CLOSE/.test(l))
  const flipEvents = ['CREATE ..data_tmp', 'MOVED_FROM ..data_tmp', 'MOVED_TO ..data']
  t.same(events, [...flipEvents, 'CREATE podname', ...flipEvents, 'DELETE namespace'],
    'the atomic writer of 1.20: new links, then ..data_tmp and the rename, then the links that went')
  t.equal((await run('cat', [path.join(d.mnt, 'podname')])).stdout.toString(), 'web')
})

/** `name gid` for each top-level entry but the generation's directory, sorted. */
async function linkGroups(mnt: string): Promise<string[]> {
  const r = await run('sh', ['-c', `cd ${JSON.stringify(mnt)} && for f in ..data * .*; do [ -L "$f" ] && echo "$f $(stat -c %g "$f")"; done | sort -u`])
  return r.stdout.toString().split('\n').filter(Boolean)
}

t.test('the fsGroup of the links follows the release', async (t) => {
  for (const [release, first, later] of [
    // 1.21 on: SetVolumeOwnership Lchowns the links too.
    ['1.37', ['..data 4321', 'labels 4321', 'namespace 4321'], ['..data 4321', 'labels 4321', 'podname 4321']],
    // 1.20: the first write's links stay root's; links made later, in the setgid root, take its group.
    ['1.20', ['..data 0', 'labels 0', 'namespace 0'], ['..data 4321', 'labels 0', 'podname 4321']],
  ] as const) {
    const podFile = scratchPod(t, pod({ v: '0' }))
    const d = await startDaemon(t, ['--pod-file', podFile, '--fs-group', '4321', '--kubelet-version', release])
    t.same(await linkGroups(d.mnt), first, `${release}: after the first write`)
    await flip(d, podFile, pod({ v: '1' }, true))
    t.same(await linkGroups(d.mnt), later, `${release}: after a flip that adds a name`)
    await d.stop()
  }
})

t.test('with an fsGroup, the ATTRIB event of each link as the release\'s kubelet makes it (its Lchown)', async (t) => {
  const flipEvents = ['CREATE ..data_tmp', 'MOVED_FROM ..data_tmp', 'MOVED_TO ..data']
  const attrib = ['ATTRIB ..data', 'ATTRIB labels', 'ATTRIB namespace']
  for (const [release, want] of [
    ['1.37', [...attrib, ...flipEvents]], // from 1.27, inside the writer: before ..data_tmp
    ['1.26', [...flipEvents, ...attrib]], // 1.21 to 1.26: after the write
    ['1.20', flipEvents], // 1.20 skips symlinks
  ] as const) {
    const podFile = scratchPod(t, pod({ v: '0' }))
    const d = await startDaemon(t, ['--pod-file', podFile, '--fs-group', '4321', '--kubelet-version', release])
    const w = watcher(t, 'inotifywait', ['-m', '--format', '%e %f', d.mnt])
    await w.ready
    await flip(d, podFile, pod({ v: '1' }))
    await new Promise((r) => setTimeout(r, 300))
    t.same(w.lines.filter((l) => !/ISDIR|^OPEN|^ACCESS|^CLOSE/.test(l)), want, `${release}: ${want.join(', ')}`)
    t.same(await linkGroups(d.mnt), release === '1.20' ? ['..data 4321', 'labels 0', 'namespace 0'] : ['..data 4321', 'labels 4321', 'namespace 4321'], `${release}: the links' groups are unchanged by it`)
    await d.stop()
  }
})

t.test('a Node fs.watch in another process fires on each change', async (t) => {
  const podFile = scratchPod(t, pod({ v: '0' }))
  const d = await startDaemon(t, ['--pod-file', podFile])
  const script = `const fs = require('fs'); fs.watch(${JSON.stringify(d.mnt)}, (e, f) => console.log(e, f)); console.log('watching')`
  const w = watcher(t, process.execPath, ['-e', script])
  await w.ready
  for (let i = 1; i <= 3; i++) {
    const before = w.lines.length
    await flip(d, podFile, pod({ v: String(i) }))
    const end = Date.now() + 2000
    while (!w.lines.slice(before).includes('rename ..data') && Date.now() < end) await new Promise((r) => setTimeout(r, 10))
    t.ok(w.lines.slice(before).includes('rename ..data'), `change ${i}: fs.watch reported ..data`)
  }
})

t.test('stray mutations still fail, from root and from other users', async (t) => {
  const podFile = scratchPod(t, pod({ v: '0' }))
  const d = await startDaemon(t, ['--pod-file', podFile])
  const m = d.mnt
  const gen = await dataTarget(m)
  const attempts: [string, string[]][] = [
    ['ln', ['-s', gen, `${m}/..data_tmp`]], // the right target, outside a flip
    ['ln', ['-s', 'x', `${m}/..data_tmp`]],
    ['ln', ['-s', '..data/labels', `${m}/labels2`]],
    ['ln', ['-sfn', gen, `${m}/..data`]],
    ['mv', ['-T', `${m}/labels`, `${m}/..data`]],
    ['rm', [`${m}/labels`]],
    ['rm', [`${m}/..data`]],
  ]
  for (const [cmd, args] of attempts) {
    const r = await run(cmd, args)
    t.match(r.stderr, /Read-only file system/, `root: ${cmd} ${args.join(' ')}`)
    const other = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', cmd, ...args])
    t.match(other.stderr, /Read-only file system|Permission denied|Operation not permitted/, `uid 65534: ${cmd} ${args.join(' ')}`)
    t.not(other.code, 0)
  }
  t.equal(await dataTarget(m), gen, '..data is unchanged')
  t.equal((await run('cat', [path.join(m, 'labels')])).stdout.toString(), 'v="0"')
  // A flip still works afterwards.
  await flip(d, podFile, pod({ v: '1' }))
  t.equal((await run('cat', [path.join(m, 'labels')])).stdout.toString(), 'v="1"')
})

t.test('a flip the VFS refuses (a read-only bind) is made inside the daemon', async (t) => {
  const podFile = scratchPod(t, pod({ v: '0' }))
  const d = await startDaemon(t, ['--pod-file', podFile])
  const ro = await run('mount', ['-o', 'remount,ro,bind', d.mnt])
  t.equal(ro.code, 0, ro.stderr)
  const mark = d.lines.length
  await flip(d, podFile, pod({ v: '1' }, true))
  t.match(d.lines.slice(mark).join('\n'), /the flip through the VFS failed \(EROFS\); flipped inside the daemon, unseen by inotify/)
  t.equal((await run('cat', [path.join(d.mnt, 'labels')])).stdout.toString(), 'v="1"', 'the new bytes are served')
  t.equal((await run('cat', [path.join(d.mnt, 'podname')])).stdout.toString(), 'web', 'and the new top-level link')
  const ls = (await run('ls', ['-a', d.mnt])).stdout.toString().split('\n')
  t.notOk(ls.includes('..data_tmp'), 'no ..data_tmp left behind')
  t.notOk(ls.includes('namespace'), 'the removed link is gone')
})

t.test('--no-inotify: flips inside the daemon, and watchers see nothing', async (t) => {
  const podFile = scratchPod(t, pod({ v: '0' }))
  const d = await startDaemon(t, ['--pod-file', podFile, '--no-inotify'])
  const w = watcher(t, 'inotifywait', ['-m', '--format', '%e %f', d.mnt])
  await w.ready
  await flip(d, podFile, pod({ v: '1' }))
  await new Promise((r) => setTimeout(r, 300))
  t.same(w.lines.filter((l) => !/ISDIR|^OPEN|^ACCESS|^CLOSE/.test(l)), [], 'no events')
  t.equal((await run('cat', [path.join(d.mnt, 'labels')])).stdout.toString(), 'v="1"')
})
