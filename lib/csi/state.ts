// What the node agent keeps on disk about each published volume, so that the next agent (after an
// upgrade, a crash, a kill) can serve it again: in the state directory (by default beside the CSI
// socket, in the kubelet's plugin directory), per target,
//
//   <key>.json        the record: small, rewritten at publish and at every flip
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
// same bytes are one file. Small files' bytes are in the record: most items are a few bytes (a
// name, a limit) or a few hundred (labels), and a change of the Node rewrites every volume's
// record at once. A blob costs the file system a new file and a removed one at each change, which
// on the node's disk (ext4 here) cost about as much CPU as the rest of the flip; the record is
// rewritten anyway, and a few hundred bytes more in it cost nothing. The record is replaced atomically (written aside, then renamed) after
// the bytes it names are written, and bytes are removed only after a record that no longer names
// them: what is on disk is always whole. A record that cannot be read, or whose bytes are missing
// or do not match their hashes, is reported and skipped: its volume is then served again only
// when the kubelet publishes it. Records of the previous format (version 1: the bytes inline, in
// base64) and of version 2 (every file's bytes in a blob) are still read, so that an upgrade takes
// its volumes over.
//
// Saves take turns, a few at a time (SAVING): a change of the Node flips every volume of the node
// at once, and a thousand saves of a dozen file operations each would otherwise fill libuv's
// thread pool, where the flips' own steps (flip.ts) wait their turn behind them. A volume's first
// save (its publish, which answers the kubelet only once its record is on disk) goes before the
// others.

import crypto, { createHash } from 'node:crypto'
import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs'
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
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

const VERSION = 3
/** The largest file whose bytes are kept in its record (base64), not in a blob of its own. */
export const INLINE_BYTES = 512
/** Saves under way at once. */
const SAVING = 2

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
  private saving = 0
  /** Saves waiting for their turn: first saves at the front. */
  private readonly turns: (() => void)[] = []

  constructor(readonly dir: string) {}

  private key(target: string): string {
    return createHash('sha256').update(target).digest('hex').slice(0, 32)
  }

  /** Waits for a turn to save (SAVING at once); first saves go ahead of the others. */
  private async turn(first: boolean): Promise<() => void> {
    if (this.saving >= SAVING) await new Promise<void>((resolve) => (first ? this.turns.unshift(resolve) : this.turns.push(resolve)))
    else this.saving++
    return () => {
      const next = this.turns.shift()
      if (next) next() // the turn passes on
      else this.saving--
    }
  }

  async save(r: VolumeRecord): Promise<void> {
    const done = await this.turn(!this.stored.has(r.target))
    try {
      await this.write(r)
    } finally {
      done()
    }
  }

  private async write(r: VolumeRecord): Promise<void> {
    const g = r.generation
    const key = this.key(r.target)
    const blobs = path.join(this.dir, key)
    const files: StoredFile[] = g.projection.files.map((f) => ({ path: f.path, mode: f.mode, size: f.data.length, sha256: sha256(f.data),
      ...(f.data.length <= INLINE_BYTES ? { data: f.data.toString('base64') } : {}) }))
    // The bytes in the target's directory: none until its first save, or a version 1 record's load.
    const before = this.stored.get(r.target)
    if (!before) await mkdir(blobs, { recursive: true, mode: 0o700 })
    const after = new Set<string>()
    for (const [i, f] of files.entries()) {
      if (f.data !== undefined) continue
      if (before?.has(f.sha256) || after.has(f.sha256)) { after.add(f.sha256); continue }
      await writeFile(path.join(blobs, `${f.sha256}.tmp`), g.projection.files[i]!.data, { mode: 0o600 })
      await rename(path.join(blobs, `${f.sha256}.tmp`), path.join(blobs, f.sha256))
      after.add(f.sha256)
    }
    const generation: StoredGeneration = { name: g.name, createdMs: g.createdMs, ...(g.projection.gid !== undefined ? { gid: g.projection.gid } : {}), files }
    const text = JSON.stringify({ version: VERSION, volumeId: r.volumeId, target: r.target, volumeContext: r.volumeContext, seen: r.seen, kubelet: r.kubelet, generation })
    const file = path.join(this.dir, `${key}.json`)
    await writeFile(`${file}.tmp`, text, { mode: 0o600 })
    await rename(`${file}.tmp`, file)
    this.stored.set(r.target, after)
    for (const h of before ?? []) if (!after.has(h)) await rm(path.join(blobs, h), { force: true })
  }

  async remove(target: string): Promise<void> {
    const key = this.key(target)
    await rm(path.join(this.dir, `${key}.json`), { force: true })
    await rm(path.join(this.dir, key), { recursive: true, force: true })
    this.stored.delete(target)
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
    const out: VolumeRecord[] = []
    for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
      const file = path.join(this.dir, name)
      try {
        const [r, version, inline] = this.parse(readFileSync(file, 'utf8'), path.join(this.dir, name.slice(0, -'.json'.length)))
        if (`${this.key(r.target)}.json` !== name) throw new Error('its name is not its target\'s')
        // A version 1 record's bytes were in it, not in the target's directory: its first save
        // writes them all. Bytes in the record were not read from a blob.
        if (version !== 1) this.stored.set(r.target, new Set(r.generation.projection.files.filter((f, i) => !inline[i]).map((f) => sha256(f.data))))
        out.push(r)
      } catch (e) {
        bad(file, (e as Error).message)
      }
    }
    return out
  }

  /** The record, its version, and for each file whether its bytes were in the record. */
  private parse(text: string, blobs: string): [VolumeRecord, number, boolean[]] {
    const o = JSON.parse(text) as { version?: unknown; volumeId?: unknown; target?: unknown; volumeContext?: unknown; seen?: unknown; kubelet?: unknown; generation?: unknown }
    if (o.version !== VERSION && o.version !== 2 && o.version !== 1) throw new Error(`version ${String(o.version)}, expected ${VERSION} (or 2, or 1)`)
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
    return [{
      volumeId: o.volumeId,
      target: o.target,
      volumeContext: o.volumeContext,
      ...(typeof o.seen === 'string' ? { seen: o.seen } : {}),
      ...(typeof o.kubelet === 'string' ? { kubelet: o.kubelet } : {}),
      generation: { name: g.name, createdMs: g.createdMs, projection: { files, ...(g.gid !== undefined ? { gid: g.gid as number } : {}) } },
    }, o.version, inline]
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
