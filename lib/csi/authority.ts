// The kubelet's :authority, and why the driver's sockets are served through this front.
//
// Kubelets before 1.26 dial a unix socket with grpc-go, which sends the socket's path as the
// HTTP/2 `:authority` of every request (kubernetes PR #112597 made it "localhost"). Node's HTTP/2
// (nghttp2, under grpc-js) refuses a '/' in `:authority` and resets each such stream with
// PROTOCOL_ERROR, before grpc-js sees it: the kubelet could neither register the driver nor call
// it. grpc-js has no switch for that check, so the driver listens on its sockets itself and hands
// each connection to grpc-js (Server.createConnectionInjector) through a rewriter:
//   1. The client's bytes go through frame by frame; the server's come back untouched.
//   2. A request's header block (HEADERS and its CONTINUATIONs) is decoded with the client's
//      HPACK table, its `:authority` set to "localhost", and re-encoded as plain literals, so the
//      server's table never holds anything and the client's table stays in step with ours.
//   3. Anything malformed closes the connection, as nghttp2 would.
//   4. Everything it holds is bounded, before it is held: a frame is at most the 16 KiB that the
//      server advertises (SETTINGS_MAX_FRAME_SIZE, grpc-js's default), a header block at most
//      64 KiB over at most 16 CONTINUATIONs, and what a block decodes to at most 64 KiB (an HPACK
//      block can name a 4 KiB table entry in one byte). Over any of them, the connection closes.
//      The socket is root's, but the kubelet is not the only process that could reach it.

import net from 'node:net'
import { Duplex } from 'node:stream'
import { Decoder, encode, type Field } from './hpack.js'

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1')
const HEADERS = 0x1
const CONTINUATION = 0x9
const END_HEADERS = 0x4
const PADDED = 0x8
const PRIORITY = 0x20
/** The smallest SETTINGS_MAX_FRAME_SIZE a server may have, and grpc-js's: no client frame is larger. */
const MAX_FRAME = 16384
/** A request's header block, all its frames together, encoded and decoded. */
export const MAX_HEADER_BLOCK = 65536
/** CONTINUATION frames after one HEADERS. */
export const MAX_CONTINUATIONS = 16

export const AUTHORITY = 'localhost'

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9)
  head.writeUIntBE(payload.length, 0, 3)
  head[3] = type
  head[4] = flags
  head.writeUInt32BE(stream, 5)
  return Buffer.concat([head, payload])
}

/** Rewrites the client-to-server half of one HTTP/2 connection (see the top of this file). */
export class AuthorityRewriter {
  private buf: Buffer = Buffer.alloc(0)
  private prefaceSeen = false
  private readonly decoder = new Decoder()
  /** A header block still waiting for its CONTINUATIONs. */
  private pending: { stream: number; flags: number; priority: Buffer; block: Buffer[]; bytes: number } | undefined

  /** Takes bytes from the client; returns the bytes to give the server. Throws on bad input. */
  push(chunk: Buffer): Buffer {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk])
    const out: Buffer[] = []
    if (!this.prefaceSeen) {
      if (this.buf.length < PREFACE.length) {
        if (!PREFACE.subarray(0, this.buf.length).equals(this.buf)) throw new Error('not an HTTP/2 connection')
        return Buffer.alloc(0)
      }
      if (!this.buf.subarray(0, PREFACE.length).equals(PREFACE)) throw new Error('not an HTTP/2 connection')
      out.push(PREFACE)
      this.buf = this.buf.subarray(PREFACE.length)
      this.prefaceSeen = true
    }
    while (this.buf.length >= 9) {
      const length = this.buf.readUIntBE(0, 3)
      if (length > MAX_FRAME) throw new Error(`a frame of ${length} bytes, over SETTINGS_MAX_FRAME_SIZE`)
      if (this.buf.length < 9 + length) break
      const type = this.buf[3]!
      const flags = this.buf[4]!
      const stream = this.buf.readUInt32BE(5) & 0x7fffffff
      const payload = this.buf.subarray(9, 9 + length)
      const whole = this.buf.subarray(0, 9 + length)
      this.buf = this.buf.subarray(9 + length)
      if (this.pending) {
        if (type !== CONTINUATION || stream !== this.pending.stream) throw new Error('a header block was interrupted')
        this.pending.bytes += payload.length
        if (this.pending.block.length > MAX_CONTINUATIONS) throw new Error('too many CONTINUATION frames')
        if (this.pending.bytes > MAX_HEADER_BLOCK) throw new Error('a header block over 64 KiB')
        this.pending.block.push(Buffer.from(payload))
        if (flags & END_HEADERS) out.push(this.finish())
      } else if (type === HEADERS) {
        let p = payload
        let padding = 0
        if (flags & PADDED) {
          if (p.length < 1) throw new Error('bad HEADERS padding')
          padding = p[0]!
          p = p.subarray(1)
        }
        if (padding > p.length) throw new Error('bad HEADERS padding')
        p = p.subarray(0, p.length - padding)
        let priority = Buffer.alloc(0)
        if (flags & PRIORITY) {
          if (p.length < 5) throw new Error('bad HEADERS priority')
          priority = Buffer.from(p.subarray(0, 5))
          p = p.subarray(5)
        }
        this.pending = { stream, flags, priority, block: [Buffer.from(p)], bytes: p.length }
        if (flags & END_HEADERS) out.push(this.finish())
      } else if (type === CONTINUATION) {
        throw new Error('CONTINUATION without HEADERS')
      } else {
        out.push(Buffer.from(whole))
      }
    }
    if (this.buf.length > 0) this.buf = Buffer.from(this.buf) // don't pin the caller's chunk
    return out.length === 1 ? out[0]! : Buffer.concat(out)
  }

  private finish(): Buffer {
    const { stream, flags, priority, block } = this.pending!
    this.pending = undefined
    const fields: Field[] = this.decoder.decode(Buffer.concat(block), MAX_HEADER_BLOCK)
      .map((f) => (f.name === ':authority' ? { ...f, value: AUTHORITY } : f))
    const encoded = Buffer.concat([priority, encode(fields)])
    const keep = flags & ~(PADDED | END_HEADERS) // END_STREAM and PRIORITY stay
    const frames: Buffer[] = []
    for (let at = 0; at === 0 || at < encoded.length; at += MAX_FRAME) {
      const last = at + MAX_FRAME >= encoded.length
      frames.push(frame(at === 0 ? HEADERS : CONTINUATION, (at === 0 ? keep : 0) | (last ? END_HEADERS : 0), stream, encoded.subarray(at, at + MAX_FRAME)))
    }
    return Buffer.concat(frames)
  }
}

/** One client connection as grpc-js sees it: what the client sends, rewritten. */
function rewritten(socket: net.Socket): Duplex {
  const rewriter = new AuthorityRewriter()
  const duplex = new Duplex({
    read() { socket.resume() },
    write(chunk: Buffer, _enc, cb) { socket.write(chunk, cb) },
    final(cb) { socket.end(); cb() },
    destroy(err, cb) { socket.destroy(); cb(err) },
  })
  socket.on('data', (chunk: Buffer) => {
    let out: Buffer
    try {
      out = rewriter.push(chunk)
    } catch {
      socket.destroy()
      duplex.destroy()
      return
    }
    if (out.length > 0 && !duplex.push(out)) socket.pause()
  })
  socket.on('end', () => duplex.push(null))
  socket.on('error', () => duplex.destroy())
  socket.on('close', () => duplex.destroy())
  return duplex
}

/**
 * Listens on a unix socket and gives each connection to `inject` (a grpc-js connection
 * injector) through the rewriter. Resolves once listening.
 */
export async function serveRewritten(socket: string, inject: (connection: Duplex) => void): Promise<net.Server> {
  const server = net.createServer((c) => inject(rewritten(c)))
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(socket, () => { server.off('error', reject); resolve() })
  })
  return server
}
