// The mount, read as users read it: ls, cat, stat and a C reader in child processes.
import t from 'tap'
import { readdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs'
import path from 'node:path'
import { startDaemon, run, sh, scratchPod, dataTarget, mounted, reader, parseReader, startReader, writePod, cat } from './fixtures/daemon.js'

const POD = (labels: Record<string, string>, annotations: Record<string, string> = { note: 'say "hi"\n\tbye', emoji: '😀 é' }) => ({
  apiVersion: 'v1', kind: 'Pod',
  metadata: { name: 'web-1', namespace: 'shop', uid: 'uid-123', labels, annotations },
  spec: {
    containers: [{ name: 'app', resources: { limits: { cpu: '250m', memory: '64Mi' }, requests: { cpu: '125m' } } }],
    volumes: [{
      name: 'podinfo',
      downwardAPI: {
        items: [
          { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
          { path: 'annotations', fieldRef: { fieldPath: 'metadata.annotations' } },
          { path: 'secret/name', mode: 0o400, fieldRef: { fieldPath: 'metadata.name' } },
          { path: 'deep/er/ns', fieldRef: { fieldPath: 'metadata.namespace' } },
          { path: 'cpu', mode: 0o440, resourceFieldRef: { containerName: 'app', resource: 'limits.cpu', divisor: '1m' } },
          { path: 'empty', fieldRef: { fieldPath: "metadata.labels['missing']" } },
        ],
      },
    }],
  },
})



t.test('layout, bytes and modes match the kubelet\'s', async (t) => {
  const podFile = scratchPod(t, POD({ app: 'web', tier: 'front' }))
  const d = await startDaemon(t, ['--pod-file', podFile])
  t.notOk(d.lines.some((l) => l.includes('prebuilt addon')), 'the native layer is what loaded (npm\'s postinstall built it)')
  const gen = await dataTarget(d.mnt)
  t.match(gen, /^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d{1,10}$/, '..data points at a timestamped generation')

  // ls -la: names, types, modes, owners, link targets
  const ls = (await run('ls', ['-la', '--time-style=+', d.mnt])).stdout.toString()
  const entries = ls.split('\n').slice(1).filter(Boolean).map((l) => {
    const f = l.split(/\s+/)
    return `${f[0]} ${f[2]} ${f[3]} ${f.slice(5).join(' ')}`
  }).filter((e) => !e.endsWith(' ..'))
  t.same(entries, [
    'drwxrwxrwt root root .',
    `drwxr-xr-x root root ${gen}`,
    `lrwxrwxrwx root root ..data -> ${gen}`,
    'lrwxrwxrwx root root annotations -> ..data/annotations',
    'lrwxrwxrwx root root cpu -> ..data/cpu',
    'lrwxrwxrwx root root deep -> ..data/deep',
    'lrwxrwxrwx root root empty -> ..data/empty',
    'lrwxrwxrwx root root labels -> ..data/labels',
    'lrwxrwxrwx root root secret -> ..data/secret',
  ])

  // find: the real files and directories, with modes and sizes as stat reports them
  const found = (await run('find', [d.mnt + '/', '-mindepth', '1', '-printf', '%P %y %m %s\n'])).stdout.toString()
  const tree = found.split('\n').filter((l) => l.startsWith(gen)).map((l) => l.slice(gen.length)).sort()
  t.same(tree, [
    ' d 755 4096', '/annotations f 644 40', '/cpu f 440 3', '/deep d 755 4096', '/deep/er d 755 4096',
    '/deep/er/ns f 644 4', '/empty f 644 0', '/labels f 644 22', '/secret d 755 4096', '/secret/name f 400 5',
  ])

  // exact bytes, through the top-level links and through ..data
  t.equal(await cat(path.join(d.mnt, 'labels')), 'app="web"\ntier="front"')
  t.equal(await cat(path.join(d.mnt, 'annotations')), 'emoji="😀 é"\nnote="say \\"hi\\"\\n\\tbye"')
  t.equal(await cat(path.join(d.mnt, 'secret/name')), 'web-1')
  t.equal(await cat(path.join(d.mnt, 'deep/er/ns')), 'shop')
  t.equal(await cat(path.join(d.mnt, '..data/cpu')), '250')
  t.equal(await cat(path.join(d.mnt, 'empty')), '')
  // stat sizes equal the bytes cat returns
  for (const f of ['labels', 'annotations', 'secret/name', 'deep/er/ns', 'cpu', 'empty']) {
    const size = Number((await run('stat', ['-L', '-c', '%s', path.join(d.mnt, f)])).stdout.toString())
    t.equal(size, Buffer.byteLength(await cat(path.join(d.mnt, f))), `stat size of ${f}`)
  }
})

t.test('permissions: the kernel enforces the modes for other users', async (t) => {
  const podFile = scratchPod(t, POD({ app: 'web' }))
  const d = await startDaemon(t, ['--pod-file', podFile])
  const asNobody = (...cmd: string[]) => run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...cmd])
  const ok = await asNobody('cat', path.join(d.mnt, 'labels'))
  t.equal(ok.code, 0, ok.stderr)
  t.equal(ok.stdout.toString(), 'app="web"', 'a 0644 file is readable by uid 65534')
  const denied = await asNobody('cat', path.join(d.mnt, 'secret/name'))
  t.not(denied.code, 0)
  t.match(denied.stderr, /Permission denied/, 'a 0400 root-owned file is not')
  const group = await asNobody('cat', path.join(d.mnt, 'cpu'))
  t.match(group.stderr, /Permission denied/, 'nor is a 0440 root:root one')
})

t.test('--uid, --gid and fsGroup set owners and modes', async (t) => {
  const podFile = scratchPod(t, POD({ app: 'web' }))
  const d = await startDaemon(t, ['--pod-file', podFile, '--uid', '1000', '--gid', '1001', '--fs-group', '2000'])
  const st = async (p: string) => (await run('stat', ['-c', '%A %u %g', p])).stdout.toString().trim()
  t.equal(await st(d.mnt), 'drwxrwsrwt 1000 2000', 'the root is setgid, group fsGroup')
  t.equal(await st(path.join(d.mnt, '..data/')), 'drwxr-sr-x 1000 2000', 'directories get 02755')
  t.equal(await st(path.join(d.mnt, '..data/secret/name')), '-r--r----- 1000 2000', '0400 becomes 0440')
  t.equal(await st(path.join(d.mnt, '..data/labels')), '-rw-r--r-- 1000 2000')
  t.equal(await st(path.join(d.mnt, 'labels')), 'lrwxrwxrwx 1000 2000', 'links: the fsGroup too, as the kubelet (1.21 on) Lchowns them')
  const old = await startDaemon(t, ['--pod-file', podFile, '--uid', '1000', '--gid', '1001', '--fs-group', '2000', '--kubelet-version', '1.20'])
  t.equal(await st(path.join(old.mnt, 'labels')), 'lrwxrwxrwx 1000 1001', '1.20: the first write\'s links keep --gid (its ownership change skips links)')
  const member = await run('setpriv', ['--reuid=65534', '--regid=65534', '--groups=2000', 'cat', path.join(d.mnt, 'secret/name')])
  t.equal(member.stdout.toString(), 'web-1', 'a member of the fsGroup reads a 0440 file')
})

t.test('read-only: every change fails with EROFS', async (t) => {
  const podFile = scratchPod(t, POD({ app: 'web' }))
  const d = await startDaemon(t, ['--pod-file', podFile])
  const m = d.mnt
  const gen = await dataTarget(m)
  const attempts: [string, string[]][] = [
    ['touch', [`${m}/new`]],
    ['touch', [`${m}/..data/labels`]],
    ['sh', ['-c', `echo x > ${m}/labels`]],
    // The open succeeds (the kernel no longer sends opens: native-notes/), the write fails.
    ['python3', ['-c', 'import os,sys; os.write(os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND), b"x")', `${m}/..data/labels`]],
    ['mkdir', [`${m}/d`]],
    ['mkdir', [`${m}/${gen}/d`]],
    ['rm', [`${m}/labels`]],
    ['rm', [`${m}/..data/labels`]],
    ['rmdir', [`${m}/${gen}/secret`]],
    ['mv', [`${m}/labels`, `${m}/l2`]],
    ['mv', [`${m}/${gen}`, `${m}/..x`]],
    ['ln', ['-s', 'x', `${m}/link`]],
    ['ln', ['-sf', 'x', `${m}/..data`]],
    ['ln', [`${m}/..data/labels`, `${m}/hard`]],
    ['chmod', ['600', `${m}/..data/labels`]],
    ['chown', ['1', `${m}/..data/labels`]],
    ['truncate', ['-s', '0', `${m}/labels`]],
    ['mkfifo', [`${m}/fifo`]],
    ['python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], "user.k", b"v")', `${m}/..data/labels`]],
    ['python3', ['-c', 'import os,sys; os.removexattr(sys.argv[1], "user.k")', `${m}/..data/labels`]],
  ]
  for (const [cmd, args] of attempts) {
    const r = await run(cmd, args)
    t.not(r.code, 0, `${cmd} ${args.join(' ')} fails`)
    t.match(r.stderr, /Read-only file system/, `${cmd} ${args.join(' ')}: EROFS`)
  }
  t.equal(await cat(`${m}/labels`), 'app="web"', 'nothing changed')
})

t.test('a flip: new bytes through labels and ..data; the old generation goes away', async (t) => {
  const podFile = scratchPod(t, POD({ app: 'web' }))
  const d = await startDaemon(t, ['--pod-file', podFile])
  const before = await dataTarget(d.mnt)
  const from = d.lines.length
  writePod(podFile, POD({ app: 'web', version: 'v2' }))
  await d.waitFor(/flipped to \.\.\S+: "labels" changed$/, from)
  t.equal(await cat(path.join(d.mnt, 'labels')), 'app="web"\nversion="v2"')
  const after = await dataTarget(d.mnt)
  t.not(after, before, '..data points at a new directory')
  const names = (await run('ls', ['-a', d.mnt])).stdout.toString().split('\n')
  t.ok(names.includes(after) && !names.includes(before), 'only the new generation is listed')
  t.equal(await cat(path.join(d.mnt, before, 'labels')), 'app="web"', 'the old one still resolves for readers that raced the flip')
  // The flip's steps ran on threads that hold no descriptor (lib/native/vfs-steps.c): killed while
  // one waits on this mount, the process can still end.
  const tasks = readdirSync(`/proc/${d.proc.pid}/task`)
  const vfs = tasks.filter((tid) => readFileSync(`/proc/${d.proc.pid}/task/${tid}/comm`, 'utf8').trim() === 'dapifs-vfs')
  t.ok(vfs.length > 0, `the flip's threads are there (${vfs.length})`)
  t.same(vfs.map((tid) => readdirSync(`/proc/${d.proc.pid}/task/${tid}/fd`).length), vfs.map(() => 0), 'and hold no descriptor')
  t.ok(readdirSync(`/proc/${d.proc.pid}/fd`).length > 3, 'while the process holds its own')

  // a change that touches no file's bytes does not flip
  const quiet = d.lines.length
  const same = POD({ app: 'web', version: 'v2' }) as { spec: { containers: { image?: string }[] } }
  same.spec.containers[0]!.image = 'nginx:2'
  writePod(podFile, same)
  await new Promise((r) => setTimeout(r, 300))
  t.same(d.lines.slice(quiet).filter((l) => /flipped/.test(l)), [], 'no flip for an unrelated change')
  t.equal(await dataTarget(d.mnt), after)

  // items added and removed add and remove their top-level links
  const fewer = POD({ app: 'web', version: 'v2' }) as { spec: { volumes: { downwardAPI: { items: { path: string }[] } }[] } }
  const items = fewer.spec.volumes[0]!.downwardAPI.items
  items.splice(items.findIndex((i) => i.path === 'cpu'), 1, { path: 'uid', fieldRef: { fieldPath: 'metadata.uid' } } as never)
  const mark = d.lines.length
  writePod(podFile, fewer)
  await d.waitFor(/flipped to/, mark)
  const top = (await run('ls', [d.mnt])).stdout.toString().split('\n').filter(Boolean)
  t.same(top, ['annotations', 'deep', 'empty', 'labels', 'secret', 'uid'])
  t.equal(await cat(path.join(d.mnt, 'uid')), 'uid-123')

  // after the retention time the old generation no longer opens
  await new Promise((r) => setTimeout(r, 5500))
  const gone = await run('cat', [path.join(d.mnt, before, 'labels')])
  t.match(gone.stderr, /No such file or directory/, 'the old generation is gone')
  // and the kernel was told to forget it: no stat from its cache (entries are cached for 60 s)
  t.match((await run('stat', [path.join(d.mnt, before)])).stderr, /No such file or directory/, 'the kernel forgot it too')
})

t.test('a bad pod file later: logged once, the last good generation stays', async (t) => {
  const podFile = scratchPod(t, POD({ app: 'web' }))
  const d = await startDaemon(t, ['--pod-file', podFile])
  const mark = d.lines.length
  writeFileSync(podFile + '.tmp', 'garbage: [')
  renameSync(podFile + '.tmp', podFile)
  await d.waitFor(/not valid YAML or JSON.*\(still serving \.\./, mark)
  t.equal(await cat(path.join(d.mnt, 'labels')), 'app="web"', 'still serving')
  const noContainer = POD({ app: 'x' }) as { spec: { containers: { name: string }[] } }
  noContainer.spec.containers[0]!.name = 'other'
  writePod(podFile, noContainer)
  await d.waitFor(/item "cpu": container app not found \(still serving/, mark)
  writePod(podFile, POD({ app: 'good' }))
  await d.waitFor(/flipped to/, mark)
  t.equal(await cat(path.join(d.mnt, 'labels')), 'app="good"')
  t.notOk(d.lines.some((l) => l.includes('bye')), 'no annotation value in the log')
})

t.test('stress: readers across up to 200 flips see whole generations, and no errors', async (t) => {
  const labelsOf = (i: number): Record<string, string> => ({ app: 'web', gen: String(i), pad: 'x'.repeat(i % 50) })
  const podFile = scratchPod(t, POD(labelsOf(0)))
  const d = await startDaemon(t, ['--pod-file', podFile])
  const bin = await reader()
  const expected = new Set<string>()
  for (let i = 0; i <= 200; i++) {
    expected.add(Object.entries(labelsOf(i)).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}="${v}"`).join('\n'))
  }
  const readers = Array.from({ length: 4 }, () => startReader(bin, ['cat', path.join(d.mnt, 'labels'), '1', '240', '--contents']))
  let flips = 0
  const start = Date.now()
  // 100 to 200 flips while the readers read: as many as 13 s allow, and at least 100 however long they take.
  for (let i = 1; i <= 200 && (flips < 100 || Date.now() - start < 13_000); i++) {
    const mark = d.lines.length
    writePod(podFile, POD(labelsOf(i)))
    await d.waitFor(/flipped to/, mark)
    flips++
  }
  const results = await Promise.all(readers.map((r) => r.stop()))
  t.comment(`${flips} flips while the readers read`)
  for (const [i, r] of results.entries()) {
    t.equal(r.errors, 0, `reader ${i}: no errors ${JSON.stringify([...r.errnos])}`)
    t.ok(r.reads > 100, `reader ${i}: ${r.reads} reads`)
    const foreign = [...r.contents.keys()].filter((c) => !expected.has(c))
    t.same(foreign, [], `reader ${i}: every read was one generation's whole file (${r.contents.size} distinct)`)
  }
  t.ok(results.some((r) => r.contents.size > 20), 'the readers saw many generations')
})

// Every kind of reader at once, as a pod has them: an app reading through the top-level links, a
// sidecar reading ..data/ paths directly, and readers of a nested item both ways. In both flip
// modes: through the VFS (inotify parity, the default) and inside the daemon (--no-inotify).
for (const mode of [[], ['--no-inotify']]) {
  t.test(`stress${mode.length ? ' (--no-inotify)' : ''}: readers of links, of ..data/ paths and of a nested item across flips: 0 failed, 0 torn`, async (t) => {
    const pod = (i: number): unknown => ({
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: 'web-1', namespace: 'shop', uid: 'uid-123', labels: { app: 'web', gen: String(i), pad: 'x'.repeat(i % 50) } },
      spec: {
        containers: [{ name: 'app' }],
        volumes: [{ name: 'podinfo', downwardAPI: { items: [
          { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
          { path: 'meta/labels', fieldRef: { fieldPath: 'metadata.labels' } },
        ] } }],
      },
    })
    const expected = new Set<string>()
    for (let i = 0; i <= 300; i++) expected.add(`app="web"\ngen="${i}"\npad="${'x'.repeat(i % 50)}"`)
    const podFile = scratchPod(t, pod(0))
    const d = await startDaemon(t, ['--pod-file', podFile, ...mode])
    const bin = await reader()
    const paths = ['labels', '..data/labels', 'meta/labels', '..data/meta/labels']
    const readers = paths.flatMap((p) => [0, 1].map(() => startReader(bin, ['cat', path.join(d.mnt, p), '1', '240', '--contents'])))
    let flips = 0
    const start = Date.now()
    // 100 to 300 flips while the readers read: as many as 11 s allow, and at least 100.
    for (let i = 1; i <= 300 && (flips < 100 || Date.now() - start < 11_000); i++) {
      const mark = d.lines.length
      writePod(podFile, pod(i))
      await d.waitFor(/flipped to/, mark)
      flips++
    }
    const results = await Promise.all(readers.map((r) => r.stop()))
    t.comment(`${flips} flips while the readers read`)
    for (const [i, r] of results.entries()) {
      const who = `reader of ${paths[i >> 1]}`
      t.equal(r.errors, 0, `${who}: no failed read in ${r.reads} ${JSON.stringify([...r.errnos])}`)
      t.ok(r.reads > 100, `${who}: ${r.reads} reads`)
      t.same([...r.contents.keys()].filter((c) => !expected.has(c)), [], `${who}: every read was one generation's whole file (${r.contents.size} distinct)`)
    }
    // Nothing stale: once a flip is done, the very next open reads it, through every path, though
    // the kernel has cached the links and pages of the generation before.
    let stale = 0
    for (let i = 301; i <= 350; i++) {
      const mark = d.lines.length
      writePod(podFile, pod(i))
      await d.waitFor(/flipped to/, mark)
      const want = `app="web"\ngen="${i}"\npad="${'x'.repeat(i % 50)}"`
      for (const p of paths) if (await cat(path.join(d.mnt, p)) !== want) stale++
    }
    t.equal(stale, 0, 'after each of 50 flips, the next cat of each path read the new bytes')
  })
}

t.test('lifecycle: SIGTERM unmounts; a SIGKILLed daemon\'s mountpoint is taken over', async (t) => {
  const podFile = scratchPod(t, POD({ app: 'web' }))
  const mnt = path.join(path.dirname(podFile), 'mnt')
  const first = await startDaemon(t, ['--pod-file', podFile], { mnt })
  t.ok(mounted(mnt))
  t.equal(await first.stop('SIGTERM'), 0, 'exit code 0 after SIGTERM')
  t.notOk(mounted(mnt), 'unmounted')

  const killed = await startDaemon(t, ['--pod-file', podFile], { mnt })
  await killed.stop('SIGKILL')
  t.ok(mounted(mnt), 'a killed daemon leaves its mount behind')
  const stale = await run('ls', [mnt])
  t.match(stale.stderr, /Transport endpoint is not connected/)
  const next = await startDaemon(t, ['--pod-file', podFile], { mnt })
  t.ok(next.lines.some((l) => /unmounted a stale mount/.test(l)), 'the stale mount was cleaned up')
  t.equal(await cat(path.join(mnt, 'labels')), 'app="web"', 'and the new daemon serves')
})

t.test('start-up errors: one line, exit 2, nothing mounted', async (t) => {
  const podFile = scratchPod(t, POD({ app: 'web' }))
  const dir = path.dirname(podFile)
  const bad = path.join(dir, 'bad.yaml')
  writeFileSync(bad, 'kind: Pod\nspec: {volumes: [{name: v, downwardAPI: {items: [{path: x, fieldRef: {fieldPath: spec.nodeName}}]}}]}\n')
  const file = path.join(dir, 'file')
  writeFileSync(file, '')
  const mnt = path.join(dir, 'mnt')
  await sh(`mkdir -p ${mnt}`)
  const cases: [string[], RegExp][] = [
    [['mount', mnt, '--pod-file', bad], /^dapifs: .*bad\.yaml: volume "v", item "x": unsupported fieldPath: spec\.nodeName/],
    [['mount', path.join(dir, 'nope'), '--pod-file', podFile], /^dapifs: .*nope: does not exist \(create the directory first\)$/],
    [['mount', file, '--pod-file', podFile], /^dapifs: .*file: is not a directory$/],
    [['mount', mnt], /^dapifs: one of --pod-file FILE or --pod NAMESPACE\/NAME is required/],
    [['mount', '--pod-file', podFile], /^dapifs: mount needs a MOUNTPOINT/],
    [['mount', mnt, '--pod-file', podFile, '--uid', 'root'], /^dapifs: --uid: "root" is not a numeric id/],
  ]
  for (const [args, re] of cases) {
    const r = await run(process.execPath, ['dist/main.js', ...args])
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr.trimEnd(), re)
    t.equal(r.stderr.trimEnd().split('\n').length, 1, 'one line')
    t.notOk(mounted(mnt), 'nothing mounted')
  }
  // a mountpoint with a live mount on it is busy
  const live = await startDaemon(t, ['--pod-file', podFile], { mnt })
  const busy = await run(process.execPath, ['dist/main.js', 'mount', mnt, '--pod-file', podFile])
  t.equal(busy.code, 2)
  t.match(busy.stderr.trimEnd(), /^dapifs: .*mnt: is busy: a fuse\.dapifs filesystem is mounted there; unmount it first$/)
  t.equal(await cat(path.join(live.mnt, 'labels')), 'app="web"', 'the live mount is untouched')
})
