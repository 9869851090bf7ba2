// A generation: one immutable rendering of the volume, under the directory name the kubelet's
// atomic writer would give it: `..<UTC YYYY_MM_DD_HH_MM_SS>.<random uint32 in decimal>`.
//
// Names are never reused, and this is what makes kernel caching safe (see tree.ts): a changed
// file is always reached under a new directory name, so the kernel never has a cached page or
// attribute for it.

import { randomInt } from 'node:crypto'
import type { Projection } from './projection.js'

export interface Generation {
  readonly name: string
  readonly projection: Projection
  readonly createdMs: number
}

const pad = (n: number): string => String(n).padStart(2, '0')

/** The timestamp part: Go's time.Now().UTC().Format("..2006_01_02_15_04_05."). */
export function stamp(d: Date): string {
  return `..${d.getUTCFullYear()}_${pad(d.getUTCMonth() + 1)}_${pad(d.getUTCDate())}_` +
    `${pad(d.getUTCHours())}_${pad(d.getUTCMinutes())}_${pad(d.getUTCSeconds())}.`
}

export class Generations {
  private lastStamp = ''
  /** Names handed out under lastStamp: a new second cannot collide with an older one. */
  private issued = new Set<string>()

  create(projection: Projection, now = new Date()): Generation {
    const s = stamp(now)
    if (s !== this.lastStamp) {
      this.lastStamp = s
      this.issued.clear()
    }
    let name: string
    do name = s + randomInt(0, 2 ** 32) // os.MkdirTemp: a random uint32, no padding
    while (this.issued.has(name))
    this.issued.add(name)
    return { name, projection, createdMs: now.getTime() }
  }
}

/** Whether two renderings would serve the same bytes, modes and group. */
export function sameContent(a: Projection, b: Projection): boolean {
  if (a.gid !== b.gid || a.files.length !== b.files.length) return false
  return a.files.every((f, i) => {
    const g = b.files[i]!
    return f.path === g.path && f.mode === g.mode && f.data.equals(g.data)
  })
}
