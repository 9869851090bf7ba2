// What the node agent keeps on disk about each published volume, so that the next agent (after an
// upgrade, a crash, a kill) can serve it again: one small JSON file per target, in the state
// directory (by default beside the CSI socket, in the kubelet's plugin directory).
//
//   volumeId, target       the publish call's
//   volumeContext          the publish call's volume_context: the items and the pod's identity
//   seen                   when the agent first saw the pod (its kubernetes.io/config.seen), kept
//                          so that a restart does not change the annotations a volume shows
//   generation             the generation the mount serves: its name and files
//
// The generation is there because the kernel may hold pages, attributes and ids of its files:
// the next agent must answer for exactly that directory, with exactly those bytes, until the pod
// says otherwise (then it flips, as ever). Each file is replaced atomically (written aside, then
// renamed), at publish and at every flip, and removed at unpublish. A record that cannot be read
// is reported and skipped: its volume is then served again only when the kubelet publishes it.

import { createHash } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { Generation } from '../volume/generation.js'

export interface VolumeRecord {
  volumeId: string
  target: string
  volumeContext: Record<string, string>
  seen?: string
  generation: Generation
}

interface StoredGeneration {
  name: string
  createdMs: number
  gid?: number
  files: { path: string; mode: number; data: string }[]
}

const VERSION = 1

export class VolumeStore {
  constructor(readonly dir: string) {}

  private file(target: string): string {
    return path.join(this.dir, `${createHash('sha256').update(target).digest('hex').slice(0, 32)}.json`)
  }

  async save(r: VolumeRecord): Promise<void> {
    const g = r.generation
    const generation: StoredGeneration = {
      name: g.name,
      createdMs: g.createdMs,
      ...(g.projection.gid !== undefined ? { gid: g.projection.gid } : {}),
      files: g.projection.files.map((f) => ({ path: f.path, mode: f.mode, data: f.data.toString('base64') })),
    }
    const text = JSON.stringify({ version: VERSION, volumeId: r.volumeId, target: r.target, volumeContext: r.volumeContext, seen: r.seen, generation })
    const file = this.file(r.target)
    await mkdir(this.dir, { recursive: true, mode: 0o700 })
    await writeFile(`${file}.tmp`, text, { mode: 0o600 })
    await rename(`${file}.tmp`, file)
  }

  async remove(target: string): Promise<void> {
    await rm(this.file(target), { force: true })
  }

  /** Every record; `bad` hears of each file that is not one. */
  async load(bad: (file: string, why: string) => void): Promise<VolumeRecord[]> {
    let names: string[]
    try {
      names = await readdir(this.dir)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw e
    }
    const out: VolumeRecord[] = []
    for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
      const file = path.join(this.dir, name)
      try {
        out.push(parse(await readFile(file, 'utf8')))
      } catch (e) {
        bad(file, (e as Error).message)
      }
    }
    return out
  }
}

function parse(text: string): VolumeRecord {
  const o = JSON.parse(text) as { version?: unknown; volumeId?: unknown; target?: unknown; volumeContext?: unknown; seen?: unknown; generation?: StoredGeneration }
  if (o.version !== VERSION) throw new Error(`version ${String(o.version)}, expected ${VERSION}`)
  const g = o.generation
  if (typeof o.volumeId !== 'string' || typeof o.target !== 'string' || typeof o.volumeContext !== 'object' || o.volumeContext === null ||
    !g || typeof g.name !== 'string' || typeof g.createdMs !== 'number' || !Array.isArray(g.files)) {
    throw new Error('not a volume record')
  }
  return {
    volumeId: o.volumeId,
    target: o.target,
    volumeContext: o.volumeContext as Record<string, string>,
    ...(typeof o.seen === 'string' ? { seen: o.seen } : {}),
    generation: {
      name: g.name,
      createdMs: g.createdMs,
      projection: {
        files: g.files.map((f) => ({ path: f.path, mode: f.mode, data: Buffer.from(f.data, 'base64') })),
        ...(g.gid !== undefined ? { gid: g.gid } : {}),
      },
    },
  }
}
