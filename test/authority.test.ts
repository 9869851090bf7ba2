// The :authority rewriter in front of the driver's sockets (lib/csi/authority.ts, hpack.ts): what
// it changes, the bounds on what it holds, random and hostile HTTP/2 fed to it, and the driver's
// gRPC still answering while a hostile client is connected.
import t from 'tap'
import net from 'node:net'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { AUTHORITY, AuthorityRewriter, MAX_CONTINUATIONS, MAX_HEADER_BLOCK } from '../lib/csi/authority.js'
import { Decoder, encode, type Field } from '../lib/csi/hpack.js'
import { CsiServer, loadCsi } from '../lib/csi/server.js'
import type { Volumes } from '../lib/csi/volumes.js'
import { Rng } from './fixtures/gen.js'
import { scratch } from './fixtures/daemon.js'

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
const HEADERS = 0x1
const CONTINUATION = 0x9
const END_HEADERS = 0x4
const END_STREAM = 0x1

function frame(type: number, flags: number, stream: number, payload: Buffer, length = payload.length): Buffer {
  const head = Buffer.alloc(9)
  head.writeUIntBE(length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(stream, 5)
  return Buffer.concat([head, payload])
}

const REQUEST: Field[] = [
  { name: ':method', value: 'POST', sensitive: false },
  { name: ':scheme', value: 'http', sensitive: false },
  { name: ':path', value: '/csi.v1.Identity/Probe', sensitive: false },
  { name: ':authority', value: '/var/lib/kubelet/plugins/csi.dapifs.dev/csi.sock', sensitive: false },
  { name: 'content-type', value: 'application/grpc', sensitive: false },
]

/** The header blocks the server is given, decoded (each HEADERS and its CONTINUATIONs). */
function serverBlocks(bytes: Buffer): Field[][] {
  const out: Field[][] = []
  const decoder = new Decoder()
  let pos = PREFACE.length
  let block: Buffer[] = []
  while (pos + 9 <= bytes.length) {
    const len = bytes.readUIntBE(pos, 3)
    const type = bytes[pos + 3]!
    const flags = bytes[pos + 4]!
    const payload = bytes.subarray(pos + 9, pos + 9 + len)
    pos += 9 + len
    if (type !== HEADERS && type !== CONTINUATION) continue
    block.push(payload)
    if (flags & END_HEADERS) { out.push(decoder.decode(Buffer.concat(block))); block = [] }
  }
  return out
}

t.test('a request\'s :authority becomes localhost; everything else goes through', async (t) => {
  const r = new AuthorityRewriter()
  const settings = frame(0x4, 0, 0, Buffer.alloc(0))
  const input = Buffer.concat([PREFACE, settings, frame(HEADERS, END_HEADERS, 1, encode(REQUEST)), frame(0x0, END_STREAM, 1, Buffer.from('\0\0\0\0\0'))])
  // Byte by byte: frames split anywhere still come out whole.
  const out = Buffer.concat([...input].map((b) => r.push(Buffer.from([b]))))
  const [fields] = serverBlocks(out)
  t.same(fields!.map((f) => [f.name, f.value]), REQUEST.map((f) => [f.name, f.name === ':authority' ? AUTHORITY : f.value]))
  t.ok(out.includes(settings), 'other frames pass untouched')
})

t.test('what it holds is bounded: frames, header blocks, CONTINUATIONs, decoded headers', async (t) => {
  const start = (): AuthorityRewriter => { const r = new AuthorityRewriter(); r.push(PREFACE); return r }
  t.throws(() => start().push(frame(0x0, 0, 1, Buffer.alloc(0), 16385)), /a frame of 16385 bytes, over SETTINGS_MAX_FRAME_SIZE/, 'a frame over 16 KiB is refused from its header alone')
  const r1 = start()
  r1.push(frame(HEADERS, 0, 1, Buffer.alloc(10)))
  t.throws(() => { for (let i = 0; i <= MAX_CONTINUATIONS; i++) r1.push(frame(CONTINUATION, 0, 1, Buffer.alloc(0))) }, /too many CONTINUATION frames/, 'an endless run of empty CONTINUATIONs is cut off')
  const r2 = start()
  r2.push(frame(HEADERS, 0, 1, Buffer.alloc(16384)))
  t.throws(() => { for (let i = 0; i < 4; i++) r2.push(frame(CONTINUATION, 0, 1, Buffer.alloc(16384))) }, /a header block over 64 KiB/, 'a header block over 64 KiB is refused')
  // An HPACK bomb: one 4 KiB entry in the table, then a byte for each copy of it.
  const value = 'v'.repeat(4000)
  const bomb = Buffer.concat([Buffer.from([0x40]), encode([{ name: 'x', value, sensitive: false }]).subarray(1), Buffer.alloc(100, 0xbe)])
  t.throws(() => start().push(frame(HEADERS, END_HEADERS, 1, bomb)), new RegExp(`header list over ${MAX_HEADER_BLOCK} bytes`), 'a block that decodes to over 64 KiB is refused')
})

/** A whole number from lo to hi, both included. */
const between = (rng: Rng, lo: number, hi: number): number => lo + rng.int(hi - lo + 1)

/** A plausible frame: a known type, sometimes a header block built from random fields. */
function randomFrame(rng: Rng): Buffer {
  const type = rng.pick([0x0, 0x1, 0x1, 0x2, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9, 0x9, 0xa, between(rng, 0, 255)])
  const flags = between(rng, 0, 255)
  const stream = rng.pick([0, 1, 3, between(rng, 0, 2 ** 31 - 1)])
  let payload: Buffer
  if ((type === 0x1 || type === 0x9) && between(rng, 0, 1) === 0) {
    const fields = Array.from({ length: between(rng, 0, 8) }, () => ({ name: rng.pick([':authority', ':path', 'x-y', '']), value: 'a'.repeat(between(rng, 0, 300)), sensitive: between(rng, 0, 1) === 1 }))
    payload = encode(fields)
  } else {
    payload = Buffer.from(Array.from({ length: rng.pick([0, 1, 5, between(rng, 0, 64), between(rng, 0, 3000)]) }, () => between(rng, 0, 255)))
  }
  const length = between(rng, 0, 20) === 0 ? between(rng, 0, 2 ** 24 - 1) : payload.length
  return frame(type, flags, stream, payload, length)
}

t.test('random and hostile input: it passes frames or refuses the connection, never holding more than its bounds', async (t) => {
  const rng = new Rng(Number(process.env.DAPIFS_FUZZ_SEED ?? 11))
  const CASES = Number(process.env.DAPIFS_FUZZ_CASES ?? 3000)
  let refused = 0
  let passed = 0
  for (let i = 0; i < CASES; i++) {
    const r = new AuthorityRewriter()
    const parts: Buffer[] = [between(rng, 0, 9) === 0 ? Buffer.from(Array.from({ length: between(rng, 0, 40) }, () => between(rng, 0, 255))) : PREFACE]
    for (let n = between(rng, 0, 30); n > 0; n--) parts.push(between(rng, 0, 9) === 0 ? Buffer.from(Array.from({ length: between(rng, 1, 50) }, () => between(rng, 0, 255))) : randomFrame(rng))
    const input = Buffer.concat(parts)
    let out = 0
    try {
      for (let at = 0; at < input.length;) {
        const n = rng.pick([1, 7, 100, 5000, input.length])
        out += r.push(input.subarray(at, at + n)).length
        at += n
        // Bytes held for a frame still coming: at most one frame's header and the largest payload.
        const held = (r as unknown as { buf: Buffer }).buf.length
        if (held > 16384 + 9) throw new Error(`holds ${held} bytes`)
      }
      passed++
    } catch (e) {
      if (!(e instanceof Error) || /holds \d+ bytes/.test(e.message)) {
        t.fail(`case ${i}: ${String(e)}`)
        break
      }
      refused++
    }
    // What reaches the server: at most what came in, plus what the decoded blocks re-encode to.
    if (out > input.length + 4 * MAX_HEADER_BLOCK) { t.fail(`case ${i}: ${out} bytes out for ${input.length} in`); break }
  }
  t.ok(refused > 0 && passed > 0, `${CASES} cases: ${passed} passed through, ${refused} refused with an error`)
})

t.test('the driver answers while a hostile client is connected', async (t) => {
  const dir = scratch(t)
  const socket = path.join(dir, 'csi.sock')
  const server = new CsiServer({} as Volumes, { nodeName: 'node-1', version: 'test', ready: () => true })
  await server.listen(socket)
  t.teardown(() => server.stop())
  // A client that sends a huge frame header, then trickles its payload.
  const hostile = net.connect(socket)
  await new Promise((r) => hostile.once('connect', r))
  hostile.write(Buffer.concat([PREFACE, frame(HEADERS, 0, 1, Buffer.alloc(0), 2 ** 24 - 1)]))
  const closed = new Promise<void>((r) => hostile.once('close', () => r()))
  hostile.on('error', () => {}).resume() // reads what the server says, or its close is never seen
  // And one that opens a header block and never ends it, in empty CONTINUATIONs.
  const flood = net.connect(socket)
  await new Promise((r) => flood.once('connect', r))
  flood.on('error', () => {}).resume()
  const floodClosed = new Promise<void>((r) => flood.once('close', () => r()))
  flood.write(Buffer.concat([PREFACE, frame(HEADERS, 0, 1, Buffer.alloc(3)), ...Array.from({ length: 1000 }, () => frame(CONTINUATION, 0, 1, Buffer.alloc(0)))]))
  await closed
  await floodClosed
  t.pass('both connections are closed by the driver')
  const { Identity } = loadCsi()
  const client = new Identity(`unix://${socket}`, grpc.credentials.createInsecure())
  t.teardown(() => client.close())
  const res = await new Promise<{ ready?: { value: boolean } }>((resolve, reject) => (client as unknown as { Probe: (req: object, cb: (e: Error | null, r: { ready?: { value: boolean } }) => void) => void })
    .Probe({}, (e, r) => (e ? reject(e) : resolve(r))))
  t.equal(res.ready?.value, true, 'a Probe from the kubelet is answered')
})
