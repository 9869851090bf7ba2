// A generation: one immutable rendering of the volume, under the directory name the kubelet's
// atomic writer would give it: `..<UTC YYYY_MM_DD_HH_MM_SS>.<random uint32 in decimal>`.
//
// Names are never reused, and this is what makes kernel caching safe (see tree.ts): a changed
// file is always reached under a new directory name, so the kernel never has a cached page or
// attribute for it.

import { randomInt } from 'node:crypto'
import { overBudget, type VolumeBudget } from './budget.js'
import { cleanPath, pathProblem } from './itempath.js'
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

/** A generation directory's name, as Generations.create gives it. */
export const GENERATION_NAME = /^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d{1,10}$/

/**
 * Checks a generation that did not come from this process's own rendering (a record read back
 * after a restart) as a rendering would have been checked: its name, each path (clean, allowed,
 * no file where another needs a directory), each mode, its group, and the budgets. Throws an
 * Error saying what is wrong.
 */
export function checkGeneration(gen: Generation, budget: VolumeBudget): void {
  const fail = (why: string): never => { throw new Error(why) }
  if (!GENERATION_NAME.test(gen.name)) fail(`${JSON.stringify(gen.name)} is not a generation's name`)
  if (!Number.isFinite(gen.createdMs)) fail('its time is not a time')
  const { files, gid } = gen.projection
  if (gid !== undefined && !(Number.isInteger(gid) && gid >= 0 && gid <= 0xfffffffe)) fail(`group ${gid} is not a group id`)
  if (files.length > budget.items) fail(overBudget('', 'it has', files.length, budget.items, 'items', 'items').message)
  const paths = new Set<string>()
  let total = 0
  for (const f of files) {
    const where = `file ${JSON.stringify(f.path)}`
    const problem = pathProblem(f.path)
    if (problem) fail(`${where}: path ${problem}`)
    if (cleanPath(f.path) !== f.path) fail(`${where}: is not a clean path`)
    if (paths.has(f.path)) fail(`${where}: is there twice`)
    paths.add(f.path)
    if (!Number.isInteger(f.mode) || f.mode < 0 || f.mode > 0o777) fail(`${where}: mode ${f.mode} is not a file mode`)
    if (f.data.length > budget.file) fail(overBudget(where, 'has', f.data.length, budget.file, 'file', 'bytes').message)
    total += f.data.length
  }
  if (total > budget.volume) fail(overBudget('', 'it has', total, budget.volume, 'volume', 'bytes').message)
  for (const p of paths) {
    const parts = p.split('/')
    for (let i = 1; i < parts.length; i++) if (paths.has(parts.slice(0, i).join('/'))) fail(`file ${JSON.stringify(p)}: is below another file`)
  }
}
