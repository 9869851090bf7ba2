// dapifs-keeper (lib/keeper/keeper.c) on its own: its protocol through the addon's calls
// (keeperPut, keeperTake, keeperDrop: lib/native/keeper-client), its letting go, and its bad input.
import t from 'tap'
import { closeSync, fstatSync, openSync, writeFileSync } from 'node:fs'
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
