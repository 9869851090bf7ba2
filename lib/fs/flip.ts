// Flips that inotify can see.
//
// A FUSE daemon that only changes its answers produces no inotify events: the kernel reports
// what goes through the VFS, not what a filesystem decides on its own. Programs that watch a
// downward API volume (fsnotify, Spring Cloud Kubernetes, configmap-reload) wait for the
// kubelet's atomic writer: CREATE ..data_tmp, MOVED_FROM ..data_tmp, MOVED_TO ..data. So the
// daemon performs each flip on its own mount, through the VFS, as the writer does on tmpfs:
//
//   1. stage the new generation (its directory appears, in the daemon);
//   2. symlink(<generation>, MOUNT/..data_tmp)          -> CREATE ..data_tmp
//   3. rename(MOUNT/..data_tmp, MOUNT/..data)            -> MOVED_FROM ..data_tmp, MOVED_TO ..data
//   4. symlink(..data/<name>, MOUNT/<name>) for each new top-level name   -> CREATE <name>
//      unlink(MOUNT/<name>) for each top-level name no longer wanted      -> DELETE <name>
//
// That is the order of Kubernetes 1.23 and later. Up to 1.22 the writer makes the new top-level
// links first, before ..data_tmp (each points into the old ..data for an instant, where its name
// is not yet: kubernetes/kubernetes#93686, fixed by #97642), so there the CREATE of a new name
// comes before CREATE ..data_tmp; the unlinks still come last. The release decides (release.ts,
// linksAfterRename).
//
// With an fsGroup, the kubelet from 1.21 also Lchowns every link at each write (release.ts,
// linkChown), and a watcher sees an ATTRIB per link: before ..data_tmp from 1.27, after the
// write up to 1.26. dapifs's links have their group already, so it makes the same calls for their
// events alone: lchown(MOUNT/<link>, -1, fsGroup) for ..data and each top-level link, which the
// handlers accept as they accept the other steps (root only, as the kubelet; a failed one is
// logged and the flip goes on).
//
// The calls are made on threads of their own (native/vfs-steps.ts; the symlink and the rename in
// one go): each request comes back to this process's FUSE handlers while the call waits. A
// synchronous call from Node's thread would deadlock. The handlers accept exactly the next
// operation pending here (same op, same paths, same target), in order, and apply it to the tree;
// every other mutation, from anyone, still gets EROFS.
//
// The rename cannot fail a reader. With libfuse 3 (lib/native/), the kernel caches each
// link's target, so a reader that resolved the old ..data a moment before reads its target from
// the page cache; and a readlink of the old ..data that does reach libfuse after the rename gets
// ESTALE (libfuse 2 answered ENOENT), on which the kernel walks the path again and finds the new
// ..data (native-notes/, The rename). No reader is held, and the rename waits for nobody.
//
// If a step fails (a read-only bind, a non-root daemon in the sticky root, a timeout), the flip
// completes inside the daemon instead (tree.flip), and that is logged. ..data is replaced in
// one step either way, so readers never find it missing. A flip inside the daemon (that, and
// --no-inotify) then tells the kernel to drop its entries for ..data and the names that went or
// came (invalidate), and the root's listing it keeps (relisted), and counts as done once the
// kernel has that: the very next open reads the new generation. Names the kernel holds as absent (mount.ts) are replaced by the VFS steps
// themselves; a new generation's directory, which appears inside the daemon, is invalidated
// before ..data_tmp points at it, if a lookup of its name was answered absent (mount.ts).
//
// Flips run one at a time. Requests that arrive meanwhile coalesce: only the latest is flipped to.

import path from 'node:path'
import createDebug from 'debug'
import type { Generation } from '../volume/generation.js'
import type { Tree } from './tree.js'
import { vfsSteps, type VfsStep } from '../native/vfs-steps.js'

const log = createDebug('dapifs:flip')

/** How long one VFS step may take before the flip is completed in the daemon instead. */
const STEP_MS = 2_000

export type Mutation =
  | { op: 'symlink'; target: string; path: string }
  | { op: 'rename'; from: string; to: string }
  | { op: 'unlink'; path: string }
  | { op: 'chown'; path: string; gid: number }

const same = (a: Mutation, b: Mutation): boolean => JSON.stringify(a) === JSON.stringify(b)

/** A failed step, briefly: its errno code, or else its message. */
const why = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? (e as Error).message

export interface FlipperOptions {
  /** Called after each completed flip. */
  flipped(gen: Generation): void
  /**
   * Links changed inside the daemon: the kernel must drop the root entries `names` (each now
   * names another node, or none). Resolves once it has.
   */
  invalidate(names: string[]): Promise<void>
  /** The root's entries changed inside the daemon: the kernel must drop the listing it keeps. Resolves once it has. */
  relisted(): Promise<void>
  /** Whether the kernel may hold a root name as absent, so that it must be told before the name appears (yes if not given). */
  mayHoldAbsent?(name: string): boolean
  /** A step failed and the flip was completed in the daemon (said once per distinct reason). */
  fellBack(reason: string): void
}

/** A step of a flip: the mutation the handlers are to accept, what it does to the tree, the call that makes it. */
interface Step { m: Mutation; apply: () => void; vfs: VfsStep }

export class Flipper {
  /** The steps under way, in order: accept() takes the first not yet done. */
  private pending: Array<Step & { done: boolean }> | undefined
  private wanted: Generation | undefined
  private running: Promise<void> | undefined
  /** Whether the mount is up: before it is, flips happen in the daemon. */
  live = false
  /** false: every flip happens in the daemon (--no-inotify). */
  vfs = true
  /** false: new top-level links are made before ..data_tmp, as Kubernetes up to 1.22 does. */
  linksAfterRename = true
  /** When, with an fsGroup, every link is Lchowned at a flip, for its ATTRIB event (release.ts). */
  linkChown: 'never' | 'after-write' | 'before-rename' = 'before-rename'

  constructor(private readonly tree: Tree, private readonly mountpoint: string, private readonly opts: FlipperOptions) {}

  /** The FUSE handlers ask: is this mutation ours? If so it is applied, and they answer 0. */
  accept(m: Mutation): boolean {
    const p = this.pending?.find((s) => !s.done)
    if (!p || !same(p.m, m)) {
      log('refused %j', m)
      return false
    }
    p.done = true
    p.apply()
    return true
  }

  /** Flips to `gen` (or to a later request, if one comes first). Resolves when flipped. */
  request(gen: Generation): Promise<void> {
    this.wanted = gen
    this.running ??= this.drain().finally(() => { this.running = undefined })
    return this.running
  }

  /**
   * Serves `gen` at once, before the mount is up (a takeover's recorded generation): the flip
   * inside the daemon, without its turns of the event loop. There is nothing to tell the kernel
   * yet (invalidate), and a thousand volumes taken over at a restart would each wait for them.
   * Once mounted, or with a flip under way, it is request().
   */
  restore(gen: Generation): void {
    if (this.live || this.running) { void this.request(gen); return }
    this.tree.flip(gen)
    this.opts.flipped(gen)
  }

  /** Resolves when no flip is in progress. */
  idle(): Promise<void> {
    return this.running ?? Promise.resolve()
  }

  private async drain(): Promise<void> {
    while (this.wanted) {
      const gen = this.wanted
      this.wanted = undefined
      await this.flipOne(gen)
    }
  }

  private at(p: string): string {
    return path.join(this.mountpoint, p)
  }

  /**
   * Steps through the VFS, one after another in one call (vfs-steps.ts), each of which the tree
   * must take (accept()); throws if one is not taken.
   */
  private async steps(list: Step[]): Promise<void> {
    const queue = list.map((s) => ({ ...s, done: false }))
    this.pending = queue
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Error('timed out')
    const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(timedOut), STEP_MS * list.length) })
    try {
      let from = 0
      while (from < queue.length) {
        try {
          await Promise.race([vfsSteps(queue.slice(from).map((s) => s.vfs)), timeout])
          from = queue.length
        } catch (e) {
          const at = from + ((e as { step?: number }).step ?? 0)
          if (e === timedOut || !queue[at]!.done) throw e
          // Applied, but the call still failed (the kernel's follow-up lookup, say): the tree is
          // right, and the steps after it were not made.
          from = at + 1
        }
      }
    } finally {
      clearTimeout(timer)
      this.pending = undefined
    }
    const missed = queue.find((s) => !s.done)
    if (missed) throw new Error(`${missed.m.op} succeeded without reaching the daemon`)
  }

  /** The whole flip inside the daemon; the kernel is told what changed. */
  private async flipInDaemon(gen: Generation): Promise<void> {
    const before = this.tree.linkNames()
    this.tree.stage(gen)
    await this.opts.invalidate([gen.name])
    this.tree.flip(gen)
    await this.syncedLinks(before, ['..data_tmp'])
  }

  /**
   * After links changed inside the daemon: invalidates ..data (a link's node is its target, so a
   * new ..data is a new node: tree.ts, inoOf), the names no longer there, and the names new
   * there, which the kernel may hold as absent (mount.ts, negative entries); and the root's
   * listing, which the kernel keeps.
   */
  private async syncedLinks(before: string[], changed: string[] = []): Promise<void> {
    const now = new Set(this.tree.linkNames())
    const was = new Set(before)
    await Promise.all([
      this.opts.invalidate(['..data', ...changed, ...before.filter((name) => !now.has(name)), ...[...now].filter((name) => !was.has(name))]),
      this.opts.relisted(),
    ])
  }

  private async flipOne(gen: Generation): Promise<void> {
    const { tree } = this
    if (!this.live || !this.vfs || !tree.generation) {
      await this.flipInDaemon(gen)
      this.opts.flipped(gen)
      return
    }
    const t0 = performance.now()
    tree.stage(gen)
    // The kernel may hold the new directory's name as absent, if a reader guessed it: it must not.
    // The mount knows whether one did (lib/native/absent-names.c); nearly always not.
    if (this.opts.mayHoldAbsent?.(gen.name) ?? true) await this.opts.invalidate([gen.name])
    if (!this.linksAfterRename && !(await this.addLinks(tree.wantedLinks(gen)))) {
      this.opts.flipped(gen)
      return
    }
    if (this.linkChown === 'before-rename') await this.chownLinks(gen)
    try {
      await this.steps([
        { m: { op: 'symlink', target: gen.name, path: '/..data_tmp' }, apply: () => tree.setTmp(gen.name), vfs: { op: 'symlink', target: gen.name, path: this.at('..data_tmp') } },
        { m: { op: 'rename', from: '/..data_tmp', to: '/..data' }, apply: () => tree.commit(), vfs: { op: 'rename', from: this.at('..data_tmp'), to: this.at('..data') } },
      ])
      log('%s: symlink and rename %s ms', gen.name, (performance.now() - t0).toFixed(2))
    } catch (e) {
      await this.flipInDaemon(gen)
      this.opts.fellBack(`the flip through the VFS failed (${why(e)}); flipped inside the daemon, unseen by inotify`)
      this.opts.flipped(gen)
      return
    }
    const wanted = tree.wantedLinks()
    if (await this.addLinks(wanted)) {
      try {
        for (const name of tree.linkNames()) {
          if (wanted.has(name)) continue
          await this.steps([{ m: { op: 'unlink', path: `/${name}` }, apply: () => tree.removeLink(name), vfs: { op: 'unlink', path: this.at(name) } }])
        }
      } catch (e) {
        await this.linksInDaemon(e)
      }
    }
    if (this.linkChown === 'after-write') await this.chownLinks(gen)
    tree.finishWrite()
    this.opts.flipped(gen)
  }

  /**
   * lchown(link, -1, fsGroup) through the VFS for ..data and each top-level link: their group is
   * already that, and the calls are for the ATTRIB events the kubelet's make (linkChown). By name:
   * the kubelet's walk takes the order its filesystem lists the directory in (1.37.2's walkDeep
   * does not sort), which no watcher can rely on. Only as root, with an fsGroup; a failure is
   * logged.
   */
  private async chownLinks(gen: Generation): Promise<void> {
    const gid = gen.projection.gid
    if (gid === undefined || process.getuid?.() !== 0) return
    for (const name of ['..data', ...this.tree.linkNames()].sort()) {
      if (!this.tree.lookup(`/${name}`)) continue
      try {
        await this.steps([{ m: { op: 'chown', path: `/${name}`, gid }, apply: () => {}, vfs: { op: 'chgrp', path: this.at(name), gid } }])
      } catch (e) {
        log('lchown %s: %s', name, why(e))
      }
    }
  }

  /** Makes the wanted top-level links that are missing; false if that failed and the flip was finished in the daemon. */
  private async addLinks(wanted: Set<string>): Promise<boolean> {
    const { tree } = this
    const have = tree.linkNames()
    try {
      for (const name of wanted) {
        if (have.includes(name)) continue
        await this.steps([{ m: { op: 'symlink', target: `..data/${name}`, path: `/${name}` }, apply: () => tree.addLink(name),
          vfs: { op: 'symlink', target: `..data/${name}`, path: this.at(name) } }])
      }
      return true
    } catch (e) {
      await this.linksInDaemon(e)
      return false
    }
  }

  /**
   * A top-level link step failed: the rest of the flip is made inside the daemon (the staged
   * generation, if any, committed first), and the kernel told.
   */
  private async linksInDaemon(e: unknown): Promise<void> {
    const { tree } = this
    const before = tree.linkNames()
    const staged = tree.stagedGeneration
    if (staged) {
      await this.opts.invalidate([staged.name])
      tree.flip(staged)
    } else {
      tree.syncLinks()
      tree.finishWrite()
    }
    await this.syncedLinks(before, staged ? ['..data_tmp'] : [])
    this.opts.fellBack(`a top-level link change through the VFS failed (${why(e)}); made inside the daemon`)
  }
}
