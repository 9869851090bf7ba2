// dapifs-keeper (lib/keeper/keeper.c) on its own: its protocol through the addon's calls
// (keeperPut, keeperTake, keeperDrop: lib/native/keeper-client), its letting go, and its bad input.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, closeSync, fstatSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { keeperDrop, keeperPut, keeperTake } from '../lib/native/keeper-client.js'
import { run, scratch, until } from './fixtures/daemon.js'
import { startKeeper } from './fixtures/csi.js'

const KEEPER = path.resolve('dist/dapifs-keeper')

/** One request line on a fresh connection, and what comes back until END or OK. */
function ask(socket: string, line: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket)
    let got = ''
    s.on('connect', () => s.write(`${line}\n`))
    s.setEncoding('utf8').on('data', (d: string) => {
      got += d
      if (/(^|\n)(END|OK|ERR[^\n]*)\n$/.test(got)) { s.destroy(); resolve(got) }
    })
    s.on('error', reject)
  })
}

t.test('PUT, TAKE, LIST, DROP: the keeper holds descriptors by key and hands back duplicates', async (t) => {
  const dir = scratch(t)
  const k = await startKeeper(t, path.join(dir, 'keeper.sock'))
  const files = ['a', 'b'].map((n) => { const f = path.join(dir, n); writeFileSync(f, n); return f })
  const fds = files.map((f) => openSync(f, 'r'))
  keeperPut(k.socket, '/mnt/a', fds[0]!)
  keeperPut(k.socket, '/mnt/b', fds[1]!)
  keeperPut(k.socket, '/mnt/a', fds[0]!) // again: replaces
  for (const fd of fds) closeSync(fd) // the keeper's duplicates keep the files open
  t.equal(await ask(k.socket, 'LIST'), 'KEY /mnt/a\nKEY /mnt/b\nEND\n')
  const taken = keeperTake(k.socket)
  t.same(taken.map((x) => x.key).sort(), ['/mnt/a', '/mnt/b'])
  for (const { key, fd } of taken) {
    t.equal(fstatSync(fd).ino, fstatSync(openSync(files[key === '/mnt/a' ? 0 : 1]!, 'r')).ino, `${key}: the same open file`)
    closeSync(fd)
  }
  t.equal(await ask(k.socket, 'LIST'), 'KEY /mnt/a\nKEY /mnt/b\nEND\n', 'TAKE leaves the keeper its own')
  keeperDrop(k.socket, '/mnt/a')
  keeperDrop(k.socket, '/mnt/nothing')
  t.equal(await ask(k.socket, 'LIST'), 'KEY /mnt/b\nEND\n')
  t.equal(await ask(k.socket, 'PUT /mnt/c'), 'ERR PUT without a descriptor\n')
  t.equal(await ask(k.socket, 'HELLO'), 'ERR unknown request (PUT, DROP, TAKE, LIST, AGENT)\n')
  t.throws(() => keeperTake(path.join(dir, 'nobody.sock')), /nobody\.sock/, 'no keeper: an error naming the socket')
})

t.test('with no agent connected for --abandon-after, it lets go; an agent connection keeps them', async (t) => {
  const dir = scratch(t)
  const k = await startKeeper(t, path.join(dir, 'keeper.sock'), ['--abandon-after', '0.5'])
  const agent = net.connect(k.socket)
  await new Promise((resolve) => agent.on('connect', resolve))
  agent.write('AGENT\n')
  writeFileSync(path.join(dir, 'a'), 'a')
  const fd = openSync(path.join(dir, 'a'), 'r')
  keeperPut(k.socket, '/mnt/a', fd)
  closeSync(fd)
  await new Promise((resolve) => setTimeout(resolve, 1000))
  t.equal(await ask(k.socket, 'LIST'), 'KEY /mnt/a\nEND\n', 'kept while an agent is connected')
  agent.destroy()
  await new Promise((resolve) => setTimeout(resolve, 1000))
  t.equal(await ask(k.socket, 'LIST'), 'END\n', 'let go 0.5 s after the agent left')
  t.ok(await until(async () => k.lines.some((l) => l === 'dapifs-keeper: no agent for 0.5s: letting go of 1 descriptors (their reads now fail instead of waiting)')), 'and says so')
})

t.test('bad arguments: one line naming the flag, exit 2', async (t) => {
  for (const [args, line] of [
    [[], 'dapifs-keeper: --socket: is required'],
    [['--socket', 'relative.sock'], 'dapifs-keeper: --socket: must be an absolute path of at most 107 bytes'],
    [['--socket', '/tmp/x.sock', '--abandon-after', '0'], 'dapifs-keeper: --abandon-after: must be a number of seconds above 0'],
    [['--socket'], 'dapifs-keeper: --socket: needs a value: the unix socket to listen on'],
    [['--socket', '/tmp/x.sock', '--abandon-after', 'soon'], 'dapifs-keeper: --abandon-after: must be a number of seconds above 0'],
    [['--bogus'], 'dapifs-keeper: --bogus: unknown argument (allowed: --socket, --abandon-after)'],
  ] as const) {
    const r = await run(KEEPER, [...args])
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.equal(r.stderr.split('\n')[0], line)
  }
})

/** CPU seconds a process has used (utime + stime from /proc). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

function connect(socket: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket)
    s.once('connect', () => resolve(s))
    s.once('error', reject)
  })
}

t.test('only root may use it, whatever the socket\'s mode', async (t) => {
  const dir = scratch(t)
  const k = await startKeeper(t, path.join(dir, 'keeper.sock'))
  writeFileSync(path.join(dir, 'a'), 'a')
  const fd = openSync(path.join(dir, 'a'), 'r')
  keeperPut(k.socket, '/mnt/a', fd)
  closeSync(fd)
  chmodSync(k.socket, 0o666)
  // It connects, and reads what it is told until the keeper hangs up.
  const client = `const s = require('net').connect(${JSON.stringify(k.socket)}); let got = ''
    s.setEncoding('utf8').on('data', (d) => { got += d }); s.on('close', () => process.stdout.write(got)); s.on('error', (e) => { got += 'error ' + e.code })`
  const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'env', 'NODE_OPTIONS=', process.execPath, '-e', client])
  t.equal(r.stdout.toString(), 'ERR only root may use the keeper\n', `uid 65534 is answered so, and hung up on ${r.stderr}`)
  t.ok(await until(async () => k.lines.includes('dapifs-keeper: refused a connection from uid 65534: only root may use the keeper')), 'and the keeper says so')
  t.equal(await ask(k.socket, 'LIST'), 'KEY /mnt/a\nEND\n', 'root is served as before')
})

t.test('a client that does not read holds one reply, and never the keeper', async (t) => {
  const dir = scratch(t)
  const k = await startKeeper(t, path.join(dir, 'keeper.sock'))
  writeFileSync(path.join(dir, 'a'), 'a')
  const fd = openSync(path.join(dir, 'a'), 'r')
  const N = 2000 // more descriptors than a socket's buffer takes messages
  for (let i = 0; i < N; i++) {
    keeperPut(k.socket, `/mnt/${i}`, fd)
    if (i % 100 === 0) await new Promise((r) => setImmediate(r)) // the keeper's log lines go through our pipe
  }
  closeSync(fd)
  const stuck = await connect(k.socket)
  stuck.pause() // never reads: its socket buffer fills
  stuck.write('TAKE\nTAKE\nTAKE\n')
  await new Promise((r) => setTimeout(r, 500))
  const list = await Promise.race([ask(k.socket, 'LIST'), new Promise<string>((r) => setTimeout(() => r('no answer within 10 s'), 10_000))])
  t.equal(list.split('\n').length, N + 2, 'another client is answered meanwhile, in full')
  const taken = keeperTake(k.socket)
  t.equal(taken.length, N, 'and can take every descriptor')
  for (const x of taken) closeSync(x.fd)
  stuck.destroy()
})

t.test('out of descriptors, it refuses what it cannot serve and goes on', async (t) => {
  const dir = scratch(t)
  // Its own limit, soft and hard, so that it cannot raise it: a few dozen descriptors.
  const k = await startKeeper(t, path.join(dir, 'keeper.sock'), [], ['prlimit', '--nofile=24:24'])
  // Connections until it runs out: on a busy machine some connects find the backlog full and fail
  // before the keeper has taken the earlier ones, so a fixed number may not be enough.
  const held: Array<net.Socket | undefined> = []
  t.ok(await until(async () => {
    if (k.lines.some((l) => l === 'dapifs-keeper: out of descriptors: refused a connection')) return true
    held.push(...await Promise.all(Array.from({ length: 10 }, () => connect(k.socket).catch(() => undefined))))
    return false
  }), 'it says it is out of descriptors')
  const before = cpuSeconds(k.pid)
  await new Promise((r) => setTimeout(r, 1000))
  t.ok(cpuSeconds(k.pid) - before < 0.5, `it does not spin on the connections it cannot take (${(cpuSeconds(k.pid) - before).toFixed(2)} s of CPU in 1 s)`)
  for (const s of held) s?.destroy()
  writeFileSync(path.join(dir, 'a'), 'a')
  t.ok(await until(async () => {
    try {
      const fd = openSync(path.join(dir, 'a'), 'r')
      try { keeperPut(k.socket, '/mnt/a', fd) } finally { closeSync(fd) }
      return true
    } catch { return false }
  }), 'once they are gone, it takes descriptors again')
  t.equal(await ask(k.socket, 'LIST'), 'KEY /mnt/a\nEND\n')
})

/** A child's stdout so far, and a wait for a line of it. */
function lines(child: ChildProcess): { out: () => string; line: (text: string) => Promise<boolean> } {
  let out = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d })
  return { out: () => out, line: (text) => until(async () => out.split('\n').includes(text)) }
}

const exited = (child: ChildProcess, ms: number): Promise<boolean> => new Promise((resolve) => {
  if (child.exitCode !== null || child.signalCode !== null) return resolve(true)
  const timer = setTimeout(() => resolve(false), ms)
  child.on('exit', () => { clearTimeout(timer); resolve(true) })
})

t.test('an agent killed while its own rename waits on its mount ends; a pod\'s read waits for the next agent', async (t) => {
  const dir = scratch(t)
  const bin = path.join(dir, 'stuck-agent')
  const cc = await run('cc', ['-O2', '-Wall', '-pthread', '-I', path.resolve('lib/native'), '-o', bin, path.resolve('test/fixtures/stuck-agent.c'), path.resolve('lib/native/keeper-wire.c')])
  t.equal(cc.code, 0, cc.stderr)
  const k = await startKeeper(t, path.join(dir, 'keeper.sock'))
  const mnt = path.join(dir, 'mnt')
  mkdirSync(mnt)
  const started: ChildProcess[] = []
  t.teardown(async () => {
    for (const c of started) c.kill('SIGKILL')
    await run('umount', ['-l', mnt])
  })
  // Its rename's request read by its worker, and left unanswered; then a pod's stat of the root,
  // which nobody reads.
  const agent = spawn(bin, ['hold', mnt, k.socket], { stdio: ['ignore', 'pipe', 'inherit'] })
  started.push(agent)
  t.ok(await lines(agent).line('holding RENAME'), 'the agent holds its own rename')
  const stat = spawn('stat', ['-c', '%f', mnt], { stdio: ['ignore', 'pipe', 'pipe'] })
  started.push(stat)
  const statOut = lines(stat)
  t.notOk(await exited(stat, 300), 'a pod\'s stat waits for an agent')

  agent.kill('SIGKILL')
  t.ok(await exited(agent, 10_000), 'the killed agent ends: its process does not stay behind, waiting on its own mount')
  t.ok(await until(async () => k.lines.includes('dapifs-keeper: the agent left: answered 1 requests of its own flips (EIO), left 1 for the next agent')),
    `the keeper answered its rename, and left the pod's request: ${k.lines.join('; ')}`)
  t.notOk(await exited(stat, 300), 'the pod\'s stat still waits, not failed')

  const next = spawn(bin, ['serve', k.socket], { stdio: ['ignore', 'pipe', 'inherit'] })
  started.push(next)
  t.ok(await lines(next).line('serving'), 'a next agent takes the mount')
  t.ok(await exited(stat, 10_000), 'the pod\'s stat is answered')
  t.equal(stat.exitCode, 0, 'and succeeds')
  t.equal(statOut.out(), '41ed\n', 'with the next agent\'s answer (a directory, 0755)')
})
