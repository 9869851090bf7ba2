// The serving daemon: pods in (from a source), generations out (through the tree and mount).
//
//   1. Each pod that arrives is rendered with the mount's settings (projection.ts).
//   2. If the rendering serves different bytes, modes or group than the latest generation, it
//      becomes a new generation with a new directory name, and the mount flips to it at once,
//      through the VFS so that inotify watchers see it (flip.ts). Otherwise nothing changes:
//      readers keep the same names and the kernel keeps its caches.
//   3. A pod that cannot be rendered, or a source problem, is reported (once, until the next
//      success or a different problem), and the current generation keeps being served.
// The first pod must render, or there is nothing to serve: start() refuses it.

import createDebug from 'debug'
import { Flipper } from './flip.js'
import { Generations, sameContent, type Generation } from '../volume/generation.js'
import { renderVolume, type Settings } from '../volume/input.js'
import { Mount, nativeLayer, type MountOptions } from './mount.js'
import type { NodeView, Pod } from '../volume/pod.js'
import type { Projection } from '../volume/projection.js'
import type { KeptBytes } from './kept.js'
import type { Allocatable } from '../volume/resource.js'
import { causeOf } from '../volume/budget.js'
import type { PodSink } from '../source/file.js'
import type { KubeSink } from '../source/kube.js'
import { Tree } from './tree.js'
import type { Say } from '../logline.js'
import { NEWEST } from '../volume/release.js'

const log = createDebug('dapifs:daemon')
const logMemory = createDebug('dapifs:memory')

export interface DaemonOptions extends MountOptions {
  mountpoint: string
  settings: Settings
  uid?: number
  gid?: number
  /** One line for the operator (stderr). */
  say: Say
  /**
   * A problem said for the first time (problem(): once per cause), with the generation still
   * served: for those who cannot read the operator's log (a Warning event on the pod).
   */
  reported?: (message: string, cause: string, serving: Generation | undefined) => void
  /** Flip inside the daemon only, without inotify events (--no-inotify). */
  noInotify?: boolean
  /** Called after each flip, with the generation now served. */
  flipped?: (gen: Generation) => void
  /** What this volume keeps of past generations (tree.ts): bytes, for how long, and the node's budget. */
  kept?: { bytes: number; ms: number; node?: KeptBytes }
}

export class Daemon implements PodSink, KubeSink {
  readonly tree: Tree
  private readonly generations = new Generations()
  private readonly flipper: Flipper
  private readonly mount: Mount
  /** The latest generation asked for: current, or on its way. */
  private latest: Generation | undefined
  private lastProblem: string | undefined
  private lastFallback: string | undefined
  private flips = 0

  constructor(private readonly opts: DaemonOptions) {
    const treeOpts: { uid?: number; gid?: number } = {}
    if (opts.uid !== undefined) treeOpts.uid = opts.uid
    if (opts.gid !== undefined) treeOpts.gid = opts.gid
    const kept = opts.kept ? { keptBytes: opts.kept.bytes, keptMs: opts.kept.ms, ...(opts.kept.node ? { node: opts.kept.node } : {}) } : {}
    const release = opts.settings.release ?? NEWEST
    this.tree = new Tree({ ...treeOpts, ...kept, linksTakeFsGroup: release.linksTakeFsGroup, dropped: (name) => this.mount.forgetEntry(name) })
    let shown: Generation | undefined
    this.flipper = new Flipper(this.tree, opts.mountpoint, {
      flipped: (gen) => {
        if (++this.flips % 1000 === 0) this.logMemory()
        if (shown) opts.say(`flipped to ${gen.name}: ${changedPaths(shown, gen).map((p) => JSON.stringify(p)).join(', ') || 'modes or group'} changed`)
        shown = gen
        opts.flipped?.(gen)
      },
      fellBack: (reason) => {
        if (reason !== this.lastFallback) opts.say(reason, { level: 'warning' })
        this.lastFallback = reason
      },
      invalidate: (names) => this.mount.invalidate(names),
      relisted: () => this.mount.invalidateListing(),
      mayHoldAbsent: (name) => this.mount.mayHoldAbsent(name),
    })
    // With fuse-native's prebuilt libfuse 2 addon, a rename over ..data fails readers (ENOENT):
    // flips then happen inside the daemon, unseen by inotify (serve.ts says so).
    if (opts.noInotify || !nativeLayer()) this.flipper.vfs = false
    this.flipper.linksAfterRename = release.linksAfterRename
    this.flipper.linkChown = release.linkChown
    this.mount = new Mount(opts.mountpoint, this.tree, { ...opts, accept: (m) => this.flipper.accept(m) })
  }

  get generation(): Generation | undefined {
    return this.tree.generation
  }

  /**
   * The files this volume serves for the pod and what its source knows of its Node; what it does
   * not know, the settings stand in for (--node-allocatable or this machine's, --node-labels).
   * Throws (InputError) if it cannot be rendered. Changes nothing: serve() does.
   */
  render(pod: Pod, node?: Partial<NodeView>): Projection {
    return renderVolume(pod, this.opts.settings, node)
  }


  /** Flips to a rendering if its files differ from the latest generation's; whether it does. */
  serve(projection: Projection): boolean {
    if (this.latest && sameContent(this.latest.projection, projection)) return false
    let gen: Generation
    do gen = this.generations.create(projection)
    while (this.tree.has(gen.name))
    this.latest = gen
    void this.flipper.request(gen)
    return true
  }

  /** render(), then serve(). */
  apply(pod: Pod, node?: Partial<NodeView>): boolean {
    return this.serve(this.render(pod, node))
  }

  /** The latest generation asked for: the one served, or the one on its way. */
  get latestGeneration(): Generation | undefined {
    return this.latest
  }

  /**
   * Serves a generation that a previous process served, under its name and with its files,
   * before start() takes over that process's connection (adoptFd). A pod that renders the same
   * files then changes nothing; one that does not, flips.
   */
  restore(gen: Generation): void {
    this.latest = gen
    this.flipper.restore(gen)
  }

  /** The connection's /dev/fuse descriptor (for the keeper). */
  sessionFd(): number {
    return this.mount.sessionFd()
  }

  /** Mounts the generation apply() made; flips go through the VFS from now on. */
  async start(): Promise<void> {
    await this.flipper.idle()
    await this.mount.mount()
    this.flipper.live = true
  }

  async stop(): Promise<void> {
    this.logMemory()
    await this.flipper.idle()
    this.flipper.live = false
    await this.mount.unmount()
    this.tree.close()
  }

  /**
   * Stops flipping, and leaves the mount to whoever holds its connection (the keeper): its
   * requests wait for the next process from now on.
   */
  async detach(): Promise<void> {
    await this.flipper.idle()
    this.flipper.live = false
    this.mount.detach()
  }

  /** Every 1,000 flips and at stop, with DEBUG=dapifs:memory. */
  private logMemory(): void {
    if (!logMemory.enabled) return
    const m = process.memoryUsage()
    logMemory('%d flips: rss %d MB, heap %d/%d MB, external %d MB, arrayBuffers %d MB, fuse threads set up %d', this.flips,
      ...[m.rss, m.heapUsed, m.heapTotal, m.external, m.arrayBuffers].map((x) => Math.round(x / 1048576)), this.mount.threadsSetUp())
  }

  pod(pod: Pod): void {
    this.update(pod, undefined)
  }

  update(pod: Pod, node: Partial<NodeView> | undefined): void {
    try {
      this.served(this.render(pod, node))
    } catch (e) {
      this.problem((e as Error).message, causeOf(e as Error))
    }
  }

  /**
   * serve(), for a rendering that came in as an update: a problem reported before is over.
   * Whether it flips (to latestGeneration: opts.flipped says when it has).
   */
  served(projection: Projection): boolean {
    const flips = this.serve(projection)
    if (!flips) log('pod read, files unchanged')
    this.lastProblem = undefined
    return flips
  }

  /** Said once for each cause (the message, unless told), until the next success or another cause. */
  problem(message: string, cause = message): void {
    if (cause === this.lastProblem) return
    this.lastProblem = cause
    const gen = this.tree.generation
    this.opts.say(gen ? `${message} (still serving ${gen.name})` : message, { level: 'warning' })
    this.opts.reported?.(message, cause, gen)
  }

  info(message: string): void {
    this.lastProblem = undefined
    this.opts.say(message)
  }

  deleted(message: string): void {
    this.opts.say(`${message}; still serving its last generation, ${this.tree.generation?.name}`, { level: 'warning' })
  }
}

/** Paths whose bytes or mode differ between two generations (names only: never contents); "-" before a path that went. */
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
