// The serving daemon: pods in (from a source), generations out (through the tree and mount).
//
//   1. Each pod that arrives is rendered with the mount's settings (projection.ts).
//   2. If the rendering serves different bytes, modes or group than the current generation, it
//      becomes a new generation with a new directory name, and the tree flips to it at once.
//      Otherwise nothing changes: readers keep the same names and the kernel keeps its caches.
//   3. A pod that cannot be rendered, or a source problem, is reported (once, until the next
//      success or a different problem), and the current generation keeps being served.
// The first pod must render, or there is nothing to serve: start() refuses it.

import createDebug from 'debug'
import { Generations, sameContent, type Generation } from './generation.js'
import { volumeOf, type Settings } from './input.js'
import { Mount, type MountOptions } from './mount.js'
import type { Pod } from './pod.js'
import { project } from './projection.js'
import type { Allocatable } from './resource.js'
import type { PodSink } from './source/file.js'
import type { KubeSink } from './source/kube.js'
import { Tree } from './tree.js'

const log = createDebug('dapifs:daemon')

export interface DaemonOptions extends MountOptions {
  mountpoint: string
  settings: Settings
  uid?: number
  gid?: number
  /** One line for the operator (stderr). */
  say: (line: string) => void
}

export class Daemon implements PodSink, KubeSink {
  readonly tree: Tree
  private readonly generations = new Generations()
  private readonly mount: Mount
  private lastProblem: string | undefined
  flips = 0

  constructor(private readonly opts: DaemonOptions) {
    const treeOpts: { uid?: number; gid?: number } = {}
    if (opts.uid !== undefined) treeOpts.uid = opts.uid
    if (opts.gid !== undefined) treeOpts.gid = opts.gid
    this.tree = new Tree(treeOpts)
    this.mount = new Mount(opts.mountpoint, this.tree, opts)
  }

  get generation(): Generation | undefined {
    return this.tree.generation
  }

  /**
   * Renders the pod (with the node's allocatable, or else the fallback); flips if its files
   * differ. Throws (InputError) if it cannot be rendered.
   */
  apply(pod: Pod, allocatable?: Allocatable): boolean {
    const { settings } = this.opts
    const opts = { allocatable: allocatable ?? settings.allocatable, ...(settings.fsGroup !== undefined ? { fsGroup: settings.fsGroup } : {}) }
    const projection = project(pod, volumeOf(pod, settings), opts)
    const current = this.tree.generation
    if (current && sameContent(current.projection, projection)) return false
    let gen: Generation
    do gen = this.generations.create(projection)
    while (this.tree.has(gen.name))
    this.tree.flip(gen)
    if (current) this.flips++
    return true
  }

  /** Mounts the generation apply() made. */
  async start(): Promise<void> {
    await this.mount.mount()
  }

  async stop(): Promise<void> {
    await this.mount.unmount()
  }

  pod(pod: Pod): void {
    this.update(pod, undefined)
  }

  update(pod: Pod, allocatable: Allocatable | undefined): void {
    const before = this.tree.generation
    try {
      if (this.apply(pod, allocatable)) {
        const changed = changedPaths(before, this.tree.generation!)
        this.opts.say(`flipped to ${this.tree.generation!.name}: ${changed.join(', ') || 'modes or group'} changed`)
      } else {
        log('pod read, files unchanged')
      }
      this.lastProblem = undefined
    } catch (e) {
      this.problem((e as Error).message)
    }
  }

  problem(message: string): void {
    if (message === this.lastProblem) return
    this.lastProblem = message
    const gen = this.tree.generation
    this.opts.say(gen ? `${message} (still serving ${gen.name})` : message)
  }

  info(message: string): void {
    this.lastProblem = undefined
    this.opts.say(message)
  }

  deleted(message: string): void {
    this.opts.say(`${message}; still serving its last generation, ${this.tree.generation?.name}`)
  }
}

/** Paths whose bytes or mode differ between two generations (names only: never contents). */
function changedPaths(a: Generation | undefined, b: Generation): string[] {
  const old = new Map(a?.projection.files.map((f) => [f.path, f]))
  const out: string[] = []
  for (const f of b.projection.files) {
    const o = old.get(f.path)
    if (!o || o.mode !== f.mode || !o.data.equals(f.data)) out.push(f.path)
    old.delete(f.path)
  }
  return [...out, ...[...old.keys()].map((p) => `-${p}`)]
}
