// What the node agent keeps on disk about each published volume, so that the next agent (after an
// upgrade, a crash, a kill) can serve it again: in the state directory (by default beside the CSI
// socket, in the kubelet's plugin directory), per target,
//
//   <key>.0.json, <key>.1.json   the record, in two slots written in turn: small, rewritten at
//                                publish and at every flip
//     seq                 which slot is the newer: the larger
//     volumeId, target    the publish call's
//     volumeContext       the publish call's volume_context: the items and the pod's identity
//     seen                when the agent first saw the pod (its kubernetes.io/config.seen), kept
//                         so that a restart does not change the annotations a volume shows
//     kubelet             the kubelet release the volume renders as ("1.37": release.ts), kept so
//                         that the next agent, before it knows the Node, goes on as that kubelet
//     generation          the generation the mount serves: its name, and each file's path, mode,
//                         size and the SHA-256 of its bytes; and the bytes themselves (base64),
//                         for a file of up to INLINE_BYTES
//   <key>/<sha256>    the bytes of each larger file, one file per distinct content: written once,
//                     when a generation first has them, and removed when no recorded generation
//                     has them any more
//
// The generation is there because the kernel may hold pages, attributes and ids of its files:
// the next agent must answer for exactly that directory, with exactly those bytes, until the pod
// says otherwise (then it flips, as ever). A flip that changes one label writes that file's new
// bytes and a record of paths and hashes, not the whole volume again; a thousand items with the
// same bytes are one file.
//
// What a save costs the file system is what a change of the Node costs the agent, which saves a
// thousand records at once, on the node's own disk. A new file and a rename over the old one (the
// usual atomic replace) cost ext4 here about 1 ms each, most of it the flush that ext4 starts when
// a file is renamed over another (auto_da_alloc), where overwriting a file in place costs 17 µs.
// So a record is overwritten in place, in the slot that does not hold the newest record: a kill in
// the middle of a write (it is one write) tears that slot only, and the next agent reads the other,
// the record before. And small files' bytes are in the record itself: most items are a few bytes
// (a name, a limit) or a few hundred (labels), and a blob of their own would cost a new file and a
// removed one at every change. Saves are synchronous: a handful of system calls cost less than a
// trip through libuv's thread pool each, which a thousand saves of a dozen operations filled, the
// flips' own notifications waiting behind them.
//
// The bytes a record names are written before it, and removed only after a record that no longer
// names them: what is on disk is always whole. A blob is written under its final name (its hash):
// one torn by a kill is named by no record yet, and is written again. A record that cannot be
// read, or whose bytes are missing or do not match their size and hash, is reported and skipped:
// its volume is then served again only when the kubelet publishes it. Records of earlier formats
// (one file, <key>.json: version 1, the bytes inline in base64; version 2, every file's bytes in
// a blob) are still read, so that an upgrade takes its volumes over; the first save moves them to
// the slots.

import crypto, { createHash } from 'node:crypto'
import createDebug from 'debug'
import { closeSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import path from 'node:path'
import type { Generation } from '../volume/generation.js'
import type { ProjectedFile } from '../volume/projection.js'

export interface VolumeRecord {
  volumeId: string
  target: string
  volumeContext: Record<string, string>
  seen?: string
  /** The kubelet release the volume renders as (KubeletRelease.name). */
  kubelet?: string
  generation: Generation
}

interface StoredFile { path: string; mode: number; size: number; sha256: string; data?: string }

interface StoredGeneration {
  name: string
  createdMs: number
  gid?: number
  files: StoredFile[]
}

const log = createDebug('dapifs:csi:state')

const VERSION = 3
/** A record's file: <key>.0.json or <key>.1.json (version 3), or <key>.json (an earlier one). */
const RECORD_FILE = /^([0-9a-f]{32})(?:\.[01])?\.json$/
/** A slot's seq, at the head of its text as save() writes it. */
const SEQ = /^\{"version":\d+,"seq":(\d+),/

interface Parsed { record: VolumeRecord; version: number; seq: number; inline: boolean[]; slot: number }
/** The largest file whose bytes are kept in its record (base64), not in a blob of its own. */
export const INLINE_BYTES = 512

/** Each buffer's hash, computed once however many records name it. */
const hashes = new WeakMap<Buffer, string>()
function sha256(data: Buffer): string {
  let h = hashes.get(data)
  if (h === undefined) hashes.set(data, h = hex256(data))
  return h
}

/** SHA-256 in hex: crypto.hash where Node has it (20.12: one call, no Hash object), else a Hash. */
const hex256: (data: Buffer) => string = typeof (crypto as { hash?: unknown }).hash === 'function'
  ? (data) => (crypto as unknown as { hash(alg: string, data: Buffer, enc: 'hex'): string }).hash('sha256', data, 'hex')
  : (data) => createHash('sha256').update(data).digest('hex')

/**
 * A file's bytes, read with the size its record gives (open, one read, close: readFileSync asks
 * its size first); one byte more is asked for, so that a longer file shows.
 */
function readSized(file: string, size: number): Buffer {
  const fd = openSync(file, 'r')
  try {
    const buf = Buffer.allocUnsafe(size + 1)
    let n = 0
    for (;;) {
      const r = readSync(fd, buf, n, size + 1 - n, null)
      n += r
      if (r === 0 || n > size) return buf.subarray(0, n)
    }
  } finally {
    closeSync(fd)
  }
}

export class VolumeStore {
  /** The hashes each target's directory holds, as this process wrote or read them. */
  private readonly stored = new Map<string, Set<string>>()
  /** Each target's newest record: its slot and seq. */
  private readonly newest = new Map<string, { slot: number; seq: number }>()

  constructor(readonly dir: string) {}

  private key(target: string): string {
    return createHash('sha256').update(target).digest('hex').slice(0, 32)
  }

  /** Records a volume, synchronously (the header says why); throws if it cannot. */
  save(r: VolumeRecord): void {
    const g = r.generation
    const key = this.key(r.target)
    const blobs = path.join(this.dir, key)
    const files: StoredFile[] = g.projection.files.map((f) => ({ path: f.path, mode: f.mode, size: f.data.length, sha256: sha256(f.data),
      ...(f.data.length <= INLINE_BYTES ? { data: f.data.toString('base64') } : {}) }))
    const before = this.stored.get(r.target) ?? new Set<string>()
    const after = new Set<string>()
    for (const [i, f] of files.entries()) {
      if (f.data !== undefined) continue
      if (!before.has(f.sha256) && !after.has(f.sha256)) {
        mkdirSync(blobs, { recursive: true, mode: 0o700 }) // rare: a large file's new bytes
        writeBlob(path.join(blobs, f.sha256), g.projection.files[i]!.data)
      }
      after.add(f.sha256)
    }
    const last = this.newest.get(r.target)
    if (!last) mkdirSync(this.dir, { recursive: true, mode: 0o700 })
    const next = { slot: last ? 1 - last.slot : 0, seq: (last?.seq ?? 0) + 1 }
    const generation: StoredGeneration = { name: g.name, createdMs: g.createdMs, ...(g.projection.gid !== undefined ? { gid: g.projection.gid } : {}), files }
    const text = JSON.stringify({ version: VERSION, seq: next.seq, volumeId: r.volumeId, target: r.target, volumeContext: r.volumeContext, seen: r.seen, kubelet: r.kubelet, generation })
    overwrite(path.join(this.dir, `${key}.${next.slot}.json`), text)
    // The other slot made now too, as an older copy: its first overwrite then creates no file (the
    // first change of the Node after a start would make a thousand).
    if (!last) overwrite(path.join(this.dir, `${key}.1.json`), text.replace(`"seq":${next.seq},`, '"seq":0,'))
    this.newest.set(r.target, next)
    // A record of an earlier format, now older than the slots.
    if (!last) rmSync(path.join(this.dir, `${key}.json`), { force: true })
    this.stored.set(r.target, after)
    for (const h of before) if (!after.has(h)) rmSync(path.join(blobs, h), { force: true })
  }

  async remove(target: string): Promise<void> {
    const key = this.key(target)
    for (const name of [`${key}.0.json`, `${key}.1.json`, `${key}.json`]) rmSync(path.join(this.dir, name), { force: true })
    rmSync(path.join(this.dir, key), { recursive: true, force: true })
    this.stored.delete(target)
    this.newest.delete(target)
  }

  /**
   * Every record; `bad` hears of each file that is not one (it is then removed, bytes and all).
   * Read with synchronous calls: it runs first of all at a restart (command.ts), when nothing else
   * waits on this thread, and readers wait for it. A thousand records and their bytes take tens
   * of milliseconds so, where libuv's thread pool, four hops a file, took most of a second. The
   * state directory is the node's (the kubelet's plugin directory), never a dapifs mount.
   */
  async load(bad: (file: string, why: string) => void): Promise<VolumeRecord[]> {
    let names: string[]
    try {
      names = readdirSync(this.dir)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw e
    }
    // Each target's files: its two slots, or a record of an earlier format.
    const byKey = new Map<string, string[]>()
    for (const name of names.sort()) {
      const m = RECORD_FILE.exec(name)
      if (!m) continue
      if (!byKey.has(m[1]!)) byKey.set(m[1]!, [])
      byKey.get(m[1]!)!.push(name)
    }
    const out: VolumeRecord[] = []
    for (const [key, files] of byKey) {
      // The newest first, by the seq at the head of each slot's text, so that a takeover parses
      // one record a volume; a slot torn by a kill leaves the record before it.
      const texts: Array<{ name: string; text: string; seq: number }> = []
      const failed: [string, string][] = []
      for (const name of files) {
        try {
          const text = readFileSync(path.join(this.dir, name), 'utf8')
          texts.push({ name, text, seq: name === `${key}.json` ? -1 : Number(SEQ.exec(text)?.[1] ?? -2) })
        } catch (e) {
          failed.push([path.join(this.dir, name), (e as Error).message])
        }
      }
      let p: Parsed | undefined
      for (const { name, text } of texts.sort((x, y) => y.seq - x.seq)) {
        try {
          const parsed = this.parse(text, path.join(this.dir, key))
          if (this.key(parsed.record.target) !== key) throw new Error('its name is not its target\'s')
          if ((parsed.version === VERSION) !== (name !== `${key}.json`)) throw new Error(`version ${parsed.version} in ${name}`)
          p = { ...parsed, slot: name === `${key}.1.json` ? 1 : 0 }
          break
        } catch (e) {
          failed.push([path.join(this.dir, name), (e as Error).message])
        }
      }
      if (!p) {
        for (const [file, why] of failed) bad(file, why)
        continue
      }
      if (failed.length > 0) log('%s: a newer record is not whole (%s); the one before is read', key, failed.map(([, why]) => why).join('; '))
      const r = p.record
      const inline = p.inline
      // A version 1 record's bytes were in it, not in the target's directory: its first save
      // writes them all. Bytes in the record were not read from a blob.
      if (p.version !== 1) this.stored.set(r.target, new Set(r.generation.projection.files.filter((f, i) => !inline[i]).map((f) => sha256(f.data))))
      if (p.version === VERSION) this.newest.set(r.target, { slot: p.slot, seq: p.seq })
      out.push(r)
    }
    return out
  }

  /** A record file's record, its version and seq, and for each file whether its bytes were in the record. */
  private parse(text: string, blobs: string): Omit<Parsed, 'slot'> {
    const o = JSON.parse(text) as { version?: unknown; seq?: unknown; volumeId?: unknown; target?: unknown; volumeContext?: unknown; seen?: unknown; kubelet?: unknown; generation?: unknown }
    if (o.version !== VERSION && o.version !== 2 && o.version !== 1) throw new Error(`version ${String(o.version)}, expected ${VERSION} (or 2, or 1)`)
    if (o.version === VERSION && (typeof o.seq !== 'number' || !Number.isSafeInteger(o.seq))) throw new Error('no seq')
    const g = o.generation as { name?: unknown; createdMs?: unknown; gid?: unknown; files?: unknown } | undefined
    if (typeof o.volumeId !== 'string' || typeof o.target !== 'string' || !isStringMap(o.volumeContext) ||
      !g || typeof g.name !== 'string' || typeof g.createdMs !== 'number' || !Array.isArray(g.files) ||
      (g.gid !== undefined && typeof g.gid !== 'number') || (o.seen !== undefined && o.seen !== null && typeof o.seen !== 'string')) {
      throw new Error('not a volume record')
    }
    const files: ProjectedFile[] = []
    const read = new Map<string, Buffer>()
    const inline: boolean[] = []
    for (const f of g.files as unknown[]) {
      inline.push(o.version === 1 || (o.version === VERSION && typeof (f as { data?: unknown } | null)?.data === 'string'))
      files.push(o.version === 1 ? inlineFile(f) : storedFile(f, blobs, read))
    }
    const record: VolumeRecord = {
      volumeId: o.volumeId,
      target: o.target,
      volumeContext: o.volumeContext,
      ...(typeof o.seen === 'string' ? { seen: o.seen } : {}),
      ...(typeof o.kubelet === 'string' ? { kubelet: o.kubelet } : {}),
      generation: { name: g.name, createdMs: g.createdMs, projection: { files, ...(g.gid !== undefined ? { gid: g.gid as number } : {}) } },
    }
    return { record, version: o.version, seq: o.version === VERSION ? o.seq as number : 0, inline }
  }
}

/**
 * Overwrites a record file in place, with one write (the header says why not a rename): only the
 * slot that does not hold the newest record is written, so a kill in the middle tears that one.
 */
function overwrite(file: string, text: string): void {
  const data = Buffer.from(text)
  let fd: number
  try {
    fd = openSync(file, 'r+')
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
    fd = openSync(file, 'wx', 0o600)
  }
  try {
    let n = 0
    while (n < data.length) n += writeSync(fd, data, n, data.length - n, n)
    ftruncateSync(fd, data.length)
  } finally {
    closeSync(fd)
  }
}

/** A blob, under its final name; one left torn by a kill (named by no record yet) is written over. */
function writeBlob(file: string, data: Buffer): void {
  try {
    writeFileSync(file, data, { mode: 0o600, flag: 'wx' })
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
    writeFileSync(file, data, { mode: 0o600 })
  }
}

function isStringMap(v: unknown): v is Record<string, string> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string')
}

function fileFields(f: unknown): { path: string; mode: number } & Record<string, unknown> {
  const o = f as Record<string, unknown> | null
  if (typeof o !== 'object' || o === null || typeof o.path !== 'string' || typeof o.mode !== 'number') throw new Error('a file of its generation is not a file')
  return o as { path: string; mode: number } & Record<string, unknown>
}

/** A file of a version 1 record: its bytes inline. */
function inlineFile(f: unknown): ProjectedFile {
  const o = fileFields(f)
  if (typeof o.data !== 'string') throw new Error(`file ${JSON.stringify(o.path)}: no bytes`)
  return { path: o.path, mode: o.mode, data: Buffer.from(o.data, 'base64') }
}

/**
 * A file of a version 2 or 3 record: its bytes from the record (version 3, a small file) or from
 * the target's directory, checked against its size and hash either way.
 */
function storedFile(f: unknown, blobs: string, read: Map<string, Buffer>): ProjectedFile {
  const o = fileFields(f)
  if (typeof o.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(o.sha256) || typeof o.size !== 'number') throw new Error(`file ${JSON.stringify(o.path)}: no hash`)
  if (!Number.isSafeInteger(o.size) || o.size < 0) throw new Error(`file ${JSON.stringify(o.path)}: no size`)
  const wrongSize = (): Error => new Error(`file ${JSON.stringify(o.path)}: its bytes do not match its size`)
  let data = read.get(o.sha256)
  if (typeof o.data === 'string') {
    data = Buffer.from(o.data, 'base64')
    if (data.length !== o.size) throw wrongSize()
    if (sha256(data) !== o.sha256) throw new Error(`file ${JSON.stringify(o.path)}: its bytes do not match its hash`)
  } else if (data === undefined) {
    try {
      data = readSized(path.join(blobs, o.sha256), o.size)
    } catch (e) {
      throw new Error(`file ${JSON.stringify(o.path)}: its bytes are missing (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`)
    }
    // Every byte is checked: a blob of the right size and other bytes is refused, not served.
    if (data.length !== o.size) throw wrongSize()
    if (sha256(data) !== o.sha256) throw new Error(`file ${JSON.stringify(o.path)}: its bytes do not match its hash`)
    read.set(o.sha256, data)
  }
  if (data.length !== o.size) throw wrongSize()
  return { path: o.path, mode: o.mode, data }
}
