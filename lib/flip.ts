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
// Each call is asynchronous (fs/promises): the request comes back to this process's FUSE
// handlers while the call waits on a libuv thread. A synchronous call would deadlock. The
// handlers accept exactly the one operation pending here (same op, same paths, same target)
// and apply it to the tree; every other mutation, from anyone, still gets EROFS.
//
// The rename has one hazard, in libfuse 2's high-level API that fuse-native uses: a rename
// over ..data unhashes libfuse's node for the old ..data, and every readlink on that node that
// libfuse receives while the rename is in flight (it queues them behind the rename's lock) fails
// with ENOENT, without reaching us. Readers resolve ..data right after a top-level link
// (labels -> ..data/labels), so the rename goes through a gate: answers to readlink of the
// top-level links are held while it runs, and it starts only once every walk let through before
// has asked for ..data (each answered top-level readlink owes one). Readers stall for a moment
// instead of failing. A reader that walks ..data/... directly, not through a top-level link, is
// not held, and can still meet the hazard (native-notes/ has the measurements).
//
// If a step fails (a read-only bind, a non-root daemon in the sticky root, a timeout), the flip
// completes inside the daemon instead (tree.flip), and that is logged. ..data is replaced in
// one step either way, so readers never find it missing.
//
// Flips run one at a time. Requests that arrive meanwhile coalesce: only the latest is flipped to.

import { rename, symlink, unlink } from 'node:fs/promises'
import path from 'node:path'
import createDebug from 'debug'
import type { Generation } from './generation.js'
import type { Tree } from './tree.js'

const log = createDebug('dapifs:flip')

/** How long one VFS step may take before the flip is completed in the daemon instead. */
const STEP_MS = 2_000

export type Mutation =
  | { op: 'symlink'; target: string; path: string }
  | { op: 'rename'; from: string; to: string }
  | { op: 'unlink'; path: string }

const same = (a: Mutation, b: Mutation): boolean => JSON.stringify(a) === JSON.stringify(b)

/**
 * A walk that got a top-level link's target but has not asked for ..data after this long is
 * taken as not a walk at all (`ls -l` reads links without following them) or as gone. On a
 * loaded machine a real walk can take well over 100 ms between the two (164 ms seen with 16
 * readers and 3 CPU hogs on 2 CPUs); the cost of waiting longer is only that a flip right after
 * an `ls -l` waits for it.
 */
const WALK_LOST_MS = 1000

/**
 * But nothing is written off before the rename's wait has itself run this long, counting at most
 * 2 ms per turn of the loop. After a stall of the daemon (CPU throttling under a limit, SIGSTOP,
 * swapping) every debt looks old, while the walks that owe them were only waiting for us: their
 * readlinks of ..data are queued behind the wait's timer.
 */
const WAIT_RUN_MS = 10

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** A failed step, briefly: its errno code, or else its message. */
const why = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? (e as Error).message

/**
 * Holds answers to top-level readlinks while ..data is renamed (see the top of this file), and
 * keeps account of the walks let through before: each answered top-level readlink is a walk
 * that will ask for ..data next. The rename waits until they all have.
 */
export class Gate {
  closed = false
  private held: (() => void)[] = []
  /** When each answered top-level readlink was answered, oldest first, not yet followed by ..data. */
  private owed: number[] = []

  /** A top-level readlink was answered: a walk will ask for ..data. */
  answered(): void {
    this.owed.push(performance.now())
    if (this.owed.length > 4096) this.owed.splice(0, 2048) // only lost walks pile up
  }

  /** A readlink of ..data arrived: the oldest walk owing one has paid. */
  paid(): void {
    this.owed.shift()
  }

  /** Runs `answer` when the gate opens. */
  hold(answer: () => void): void {
    this.held.push(answer)
  }

  close(): void {
    this.closed = true
  }

  open(): void {
    this.closed = false
    for (const answer of this.held.splice(0)) answer()
  }

  /** Resolves once every walk let through before the gate closed has read ..data (or is lost). */
  async settled(): Promise<void> {
    let ran = 0
    let last = performance.now()
    for (;;) {
      const now = performance.now()
      ran += Math.min(now - last, 2)
      last = now
      if (ran >= WAIT_RUN_MS) {
        const owed = this.owed.length
        while (this.owed.length > 0 && this.owed[0]! < now - WALK_LOST_MS) this.owed.shift()
        if (this.owed.length < owed) log('wrote off %d walks that never asked for ..data', owed - this.owed.length)
      }
      if (this.owed.length === 0) return
      await sleep(1)
    }
  }
}

export interface FlipperOptions {
  /** Called after each completed flip. */
  flipped(gen: Generation): void
  /** A step failed and the flip was completed in the daemon (said once per distinct reason). */
  fellBack(reason: string): void
}

export class Flipper {
  private pending: { m: Mutation; apply: () => void; done: boolean } | undefined
  private wanted: Generation | undefined
  private running: Promise<void> | undefined
  /** Whether the mount is up: before it is, flips happen in the daemon. */
  live = false
  /** false: every flip happens in the daemon (--no-inotify). */
  vfs = true
  readonly gate = new Gate()

  constructor(private readonly tree: Tree, private readonly mountpoint: string, private readonly opts: FlipperOptions) {}

  /** The FUSE handlers ask: is this mutation ours? If so it is applied, and they answer 0. */
  accept(m: Mutation): boolean {
    const p = this.pending
    if (!p || p.done || !same(p.m, m)) {
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

  /** One step through the VFS, which the tree must take (accept()); throws if it doesn't. */
  private async step(m: Mutation, apply: () => void, call: () => Promise<void>): Promise<void> {
    const p = { m, apply, done: false }
    this.pending = p
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([call(), new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('timed out')), STEP_MS) })])
    } catch (e) {
      if (!p.done) throw e
      // Applied, but the call still failed (the kernel's follow-up lookup, say): the tree is right.
    } finally {
      clearTimeout(timer)
      this.pending = undefined
    }
    if (!p.done) throw new Error(`${m.op} succeeded without reaching the daemon`)
  }

  private async flipOne(gen: Generation): Promise<void> {
    const { tree } = this
    if (!this.live || !this.vfs || !tree.generation) {
      tree.flip(gen)
      this.opts.flipped(gen)
      return
    }
    const t0 = performance.now()
    tree.stage(gen)
    try {
      await this.step({ op: 'symlink', target: gen.name, path: '/..data_tmp' }, () => tree.setTmp(gen.name),
        () => symlink(gen.name, this.at('..data_tmp')))
      const t1 = performance.now()
      this.gate.close()
      await this.gate.settled()
      const t2 = performance.now()
      await this.step({ op: 'rename', from: '/..data_tmp', to: '/..data' }, () => tree.commit(),
        () => rename(this.at('..data_tmp'), this.at('..data')))
      this.gate.open()
      log('%s: symlink %s ms, gate %s ms, rename %s ms', gen.name, (t1 - t0).toFixed(2), (t2 - t1).toFixed(2), (performance.now() - t2).toFixed(2))
    } catch (e) {
      tree.setTmp(undefined)
      tree.flip(gen)
      this.gate.open()
      this.opts.fellBack(`the flip through the VFS failed (${why(e)}); flipped inside the daemon, unseen by inotify`)
      this.opts.flipped(gen)
      return
    }
    const wanted = tree.wantedLinks()
    const have = new Set(tree.linkNames())
    try {
      for (const name of wanted) {
        if (have.has(name)) continue
        await this.step({ op: 'symlink', target: `..data/${name}`, path: `/${name}` }, () => tree.addLink(name),
          () => symlink(`..data/${name}`, this.at(name)))
      }
      for (const name of have) {
        if (wanted.has(name)) continue
        await this.step({ op: 'unlink', path: `/${name}` }, () => tree.removeLink(name), () => unlink(this.at(name)))
      }
    } catch (e) {
      tree.syncLinks()
      this.opts.fellBack(`a top-level link change through the VFS failed (${why(e)}); made inside the daemon`)
    }
    this.opts.flipped(gen)
  }
}
