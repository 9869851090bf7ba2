// The directory model of a mount: the kubelet's layout, as nodes, for the current generation.
//
//   /                         drwxrwxrwt  the volume root (a tmpfs root on the kubelet: 1777)
//   /..data -> ..<gen>        the current generation
//   /labels -> ..data/labels  one link per first path segment of the items
//   /..<gen>/                 drwxr-xr-x  the files, with nested item paths as directories
//
// A flip makes a new generation current, in the atomic writer's steps (stage, ..data_tmp,
// commit, links: see flip.ts, which performs them through the VFS so that inotify sees them),
// or all at once (flip()). The one it replaces, and those before it, stay
// resolvable for a while (`retainMs`, at most `retainMax` of them) without being listed: a
// reader that read `..data` just before a flip still finds the directory it was pointed at, as
// on the kubelet's tmpfs, where the old directory goes only after the rename. After that, the
// bytes of the last `retainMax` dropped generations can still be read by path (file()) for
// `keptMs`, for files held open whose pages the kernel let go: reads come by path, not by open
// file. All of these past generations together keep at most `keptBytes` (the oldest go first),
// and count towards the node's budget (kept.ts). Each generation's nodes are built once, at its
// flip, and never change: lookups on the hot path are a map get.
//
// Ownership follows the kubelet: everything is owned by `uid`/`gid` (root by default); with
// an fsGroup, the group of the root, the directories and the files is the fsGroup and
// directories are setgid (SetVolumeOwnership: files `| 0440`, done in projection.ts; directories
// `| 02550`). The links depend on the release (release.ts, linksTakeFsGroup). From 1.21 the
// kubelet Lchowns them too, so every link has the fsGroup. On 1.20 SetVolumeOwnership skips
// symlinks and runs after the first write: that write's links keep `gid` (seen on kubelet
// 1.20.2), and a link made by a later write, in the by-then setgid root, takes the fsGroup from
// it, as any new entry of a setgid directory does (..data at every flip, a new top-level name).

import crypto, { createHash } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { Generation } from '../volume/generation.js'
import type { KeptBytes, KeptHolder } from './kept.js'

export const S_IFDIR = 0o040000
export const S_IFREG = 0o100000
export const S_IFLNK = 0o120000

export interface Stat {
  /** The node id the kernel knows the node by: see inoOf. */
  ino: number
  mode: number
  uid: number
  gid: number
  size: number
  nlink: number
  mtime: number
  atime: number
  ctime: number
}

export type Node =
  | { kind: 'dir'; stat: Stat; entries: string[] }
  | { kind: 'file'; stat: Stat; data: Buffer }
  | { kind: 'link'; stat: Stat; target: string }

export interface TreeOptions {
  uid?: number
  gid?: number
  /** How long a replaced generation stays resolvable (5 s). */
  retainMs?: number
  /** At most this many resolvable, and as many more readable by path (64). */
  retainMax?: number
  /** How long a dropped generation's bytes stay readable by path (5 min). */
  keptMs?: number
  /** Bytes of past generations kept at most, resolvable or not (4 MiB). */
  keptBytes?: number
  /** The node's budget, shared by every volume of this process. */
  node?: KeptBytes
  /** Called when a generation's directory can no longer be looked up. */
  dropped?: (name: string) => void
  /**
   * Whether every link has the fsGroup (Kubernetes 1.21 on, the default), or only those made
   * after the first write (1.20): release.ts, linksTakeFsGroup.
   */
  linksTakeFsGroup?: boolean
}

export const DEFAULT_KEPT_MS = 5 * 60_000
export const DEFAULT_KEPT_BYTES = 4 * 1024 * 1024

const DIR_SIZE = 4096

function stat(ino: number, mode: number, uid: number, gid: number, size: number, nlink: number, ms: number): Stat {
  return { ino, mode, uid, gid, size, nlink, mtime: ms, atime: ms, ctime: ms }
}

/**
 * A node's id, from what the node is rather than from when it was first looked up, so that a new
 * process serving the same connection after a restart answers the ids the kernel already holds
 * (native-notes/, Restarts). A generation's directory and files are named by their path, which no
 * other generation ever has. A link is named by its target: ..data_tmp becomes ..data by a
 * rename, and keeps its id, while the ..data it replaces (another target) had another. 52 bits, so
 * that it is a safe integer; 0 and 1 (the root) are never given.
 */
export function inoOf(identity: string): number {
  // The first 52 bits of the SHA-1: its first 13 hex digits (no Buffer, no BigInt).
  const n = parseInt(sha1(identity).slice(0, 13), 16)
  return n < 2 ? n + 2 : n
}

/** SHA-1 of a string, in hex: crypto.hash where Node has it (20.12: one call, no Hash object), else a Hash. */
const sha1: (s: string) => string = typeof (crypto as { hash?: unknown }).hash === 'function'
  ? (s) => (crypto as unknown as { hash(alg: string, data: string, enc: 'hex'): string }).hash('sha1', s, 'hex')
  : (s) => createHash('sha1').update(s).digest('hex')

const ROOT_INO = 1

/** A generation's own nodes, by path below its directory ('' is the directory itself). */
function buildNodes(gen: Generation, uid: number, defaultGid: number): Map<string, Node> {
  const gid = gen.projection.gid ?? defaultGid
  const dirMode = S_IFDIR | (gen.projection.gid !== undefined ? 0o2755 : 0o755)
  const ms = gen.createdMs
  const nodes = new Map<string, Node>()
  const dirs = new Map<string, Set<string>>([['', new Set()]])
  for (const f of gen.projection.files) {
    nodes.set(f.path, { kind: 'file', stat: stat(inoOf(`/${gen.name}/${f.path}`), S_IFREG | f.mode, uid, gid, f.data.length, 1, ms), data: f.data })
    // Each prefix of the path is a directory that holds the next segment.
    const parts = f.path.split('/')
    for (let i = 0; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/')
      dirs.set(parent, (dirs.get(parent) ?? new Set()).add(parts[i]!))
    }
  }
  for (const [path, children] of dirs) {
    const entries = [...children]
    const subdirs = entries.filter((e) => dirs.has(path ? `${path}/${e}` : e)).length
    const abs = path ? `/${gen.name}/${path}` : `/${gen.name}`
    nodes.set(path, { kind: 'dir', stat: stat(inoOf(abs), dirMode, uid, gid, DIR_SIZE, 2 + subdirs, ms), entries })
  }
  return nodes
}

interface Built { gen: Generation; nodes: Map<string, Node>; bytes: number }

/** The memory a generation's files hold: each buffer once, however many files share it. */
function bytesOf(gen: Generation): number {
  let n = 0
  for (const data of new Set(gen.projection.files.map((f) => f.data))) n += data.length
  return n
}

export class Tree implements KeptHolder {
  private readonly uid: number
  private readonly gid: number
  private current: Built | undefined
  /** A generation whose directory exists but that ..data does not point at yet. */
  private staged: Built | undefined
  private retainedCache: LRUCache<string, Built> | undefined
  /** Dropped generations, for reads of files held open (file()). */
  private archivedCache: LRUCache<string, Built> | undefined
  private readonly dropped: ((name: string) => void) | undefined
  private root: Node | undefined
  private dataLink: Node | undefined
  private tmpLink: Node | undefined
  /** The top-level links, by name; a name keeps its node (and time) across flips. */
  private links = new Map<string, Node>()
  private readonly keptBytes: number
  private readonly node: KeptBytes | undefined
  private readonly leaveNode: () => void
  private readonly linksTakeFsGroup: boolean
  /** Whether a write has completed: the kubelet's SetVolumeOwnership has made the root setgid. */
  private written = false
  /** Bytes of the generations in `retained` and `archived`, kept up to date as they come and go. */
  private keptNow = 0

  constructor(private readonly opts: TreeOptions = {}) {
    this.uid = opts.uid ?? 0
    this.gid = opts.gid ?? 0
    this.linksTakeFsGroup = opts.linksTakeFsGroup ?? true
    this.dropped = opts.dropped
    this.keptBytes = opts.keptBytes ?? DEFAULT_KEPT_BYTES
    this.node = opts.node
    this.leaveNode = this.node?.add(this) ?? ((): void => {})
  }

  /**
   * Replaced generations, still resolvable. Made when the first is replaced: a node's thousand
   * volumes, most of which never flip, keep none (and a restart makes them faster).
   */
  private get retained(): LRUCache<string, Built> {
    return (this.retainedCache ??= new LRUCache<string, Built>({
      max: this.opts.retainMax ?? 64,
      ttl: this.opts.retainMs ?? 5_000,
      ttlAutopurge: true,
      dispose: (built, name, reason) => {
        if (reason === 'set' || this.inUse(name)) { this.keep(-built.bytes); return }
        this.archived.set(name, built) // its bytes stay kept
        this.dropped?.(name)
      },
    }))
  }

  /** Dropped generations, for reads of files held open (file()); made as `retained` is. */
  private get archived(): LRUCache<string, Built> {
    return (this.archivedCache ??= new LRUCache<string, Built>({
      max: this.opts.retainMax ?? 64,
      ttl: this.opts.keptMs ?? DEFAULT_KEPT_MS,
      ttlAutopurge: true,
      dispose: (built) => this.keep(-built.bytes),
    }))
  }

  /** Bytes of past generations kept now, resolvable or readable by path (KeptHolder). */
  kept(): number {
    return this.keptNow
  }

  /** Every generation that comes into `retained` or `archived` counts here, and with the node. */
  private keep(delta: number): void {
    this.keptNow += delta
    this.node?.changed(delta)
  }

  /** Lets go of the oldest past generation: readable by path first, then resolvable (KeptHolder). */
  shed(): boolean {
    if ((this.archivedCache?.size ?? 0) > 0) { this.archived.pop(); return true }
    if ((this.retainedCache?.size ?? 0) === 0) return false
    this.retained.pop() // its dispose moves it to archived, and reports it dropped
    this.archived.pop()
    return true
  }

  /** After a generation was kept: this volume's budget, then the node's. */
  private enforceKept(): void {
    while (this.kept() > this.keptBytes && this.shed()) { /* the oldest goes first */ }
    this.node?.enforce()
  }

  /** Lets go of everything kept, and of the node's budget (the volume is gone). */
  close(): void {
    this.leaveNode()
    this.retainedCache?.clear()
    this.archivedCache?.clear()
  }

  /** The current generation: the one ..data points at. */
  get generation(): Generation | undefined {
    return this.current?.gen
  }

  /** The generation staged and not yet current, if any. */
  get stagedGeneration(): Generation | undefined {
    return this.staged?.gen
  }

  private inUse(name: string): boolean {
    return this.current?.gen.name === name || this.staged?.gen.name === name
  }

  /** Whether a generation name is in use: current, staged or still resolvable. */
  has(name: string): boolean {
    return this.inUse(name) || (this.retainedCache?.has(name) ?? false)
  }

  /** The top-level link names a generation's items need: the current one's, or the one given. */
  wantedLinks(gen: Generation | undefined = this.current?.gen): Set<string> {
    return new Set(gen?.projection.files.map((f) => f.path.split('/')[0]!))
  }

  /** A write (a flip, with its links) is complete: links made from now on are made in a setgid root. */
  finishWrite(): void {
    this.written = true
  }

  linkNames(): string[] {
    return [...this.links.keys()]
  }

  // The steps of a flip, in the atomic writer's order; flip() takes them all at once.

  /** 1. The new generation's directory appears; ..data is unchanged. */
  stage(gen: Generation, now = Date.now()): void {
    if (this.staged?.gen.name === gen.name) return // staged already: a name is only ever one generation
    if (this.staged) this.dropped?.(this.staged.gen.name)
    this.staged = { gen, nodes: buildNodes(gen, this.uid, this.gid), bytes: bytesOf(gen) }
    this.rebuildRoot(now)
  }

  /** 2. ..data_tmp appears, pointing at the staged generation (or goes, with undefined). */
  setTmp(target: string | undefined, now = Date.now()): void {
    this.tmpLink = target === undefined ? undefined : this.link(target, now)
    this.rebuildRoot(now)
  }

  /** 3. The rename of ..data_tmp over ..data: the staged generation becomes current. */
  commit(now = Date.now()): void {
    const staged = this.staged
    if (!staged) throw new Error('no staged generation to commit')
    const replaced = this.current && this.current.gen.name !== staged.gen.name ? this.current : undefined
    this.current = staged
    this.staged = undefined
    this.dataLink = this.tmpLink ?? this.link(staged.gen.name, now)
    this.tmpLink = undefined
    this.rebuildRoot(now)
    if (replaced) {
      this.keep(replaced.bytes)
      this.retained.set(replaced.gen.name, replaced)
      this.enforceKept()
    }
  }

  /** 4. A top-level link for a first path segment appears or goes. */
  addLink(name: string, now = Date.now()): void {
    this.links.set(name, this.link(`..data/${name}`, now))
    this.rebuildRoot(now)
  }

  removeLink(name: string, now = Date.now()): void {
    this.links.delete(name)
    this.rebuildRoot(now)
  }

  /** The whole flip at once, inside the daemon (no inotify events). */
  flip(gen: Generation, now = Date.now()): void {
    this.stage(gen, now)
    this.setTmp(undefined, now)
    this.commit(now)
    this.syncLinks(now)
    this.finishWrite()
  }

  /** Adds and removes top-level links, inside the daemon, to match the current generation. */
  syncLinks(now = Date.now()): void {
    const wanted = this.wantedLinks()
    for (const name of this.links.keys()) if (!wanted.has(name)) this.links.delete(name)
    for (const name of wanted) if (!this.links.has(name)) this.links.set(name, this.link(`..data/${name}`, now))
    this.rebuildRoot(now)
  }

  private link(target: string, now: number): Node {
    const fsGroup = (this.current ?? this.staged)?.gen.projection.gid
    const gid = fsGroup !== undefined && (this.linksTakeFsGroup || this.written) ? fsGroup : this.gid
    return { kind: 'link', stat: stat(inoOf(`-> ${target}`), S_IFLNK | 0o777, this.uid, gid, Buffer.byteLength(target), 1, now), target }
  }

  private rebuildRoot(now: number): void {
    const gen = (this.current ?? this.staged)?.gen
    const gid = gen?.projection.gid ?? this.gid
    const rootMode = S_IFDIR | (gen?.projection.gid !== undefined ? 0o3777 : 0o1777)
    const entries = [
      ...(this.current ? [this.current.gen.name] : []),
      ...(this.staged ? [this.staged.gen.name] : []),
      ...(this.dataLink ? ['..data'] : []),
      ...(this.tmpLink ? ['..data_tmp'] : []),
      ...this.links.keys(),
    ]
    const subdirs = (this.current ? 1 : 0) + (this.staged ? 1 : 0)
    this.root = { kind: 'dir', stat: stat(ROOT_INO, rootMode, this.uid, gid, DIR_SIZE, 2 + subdirs, now), entries }
  }

  /**
   * Every node that can be looked up, as [absolute path, ino]: what a new process taking over a
   * mount tells the kernel layer it may be asked about by id.
   */
  inodes(): [string, number][] {
    const out: [string, number][] = []
    for (const name of this.root?.kind === 'dir' ? this.root.entries : []) {
      const node = this.lookup(`/${name}`)
      if (node?.kind === 'link') out.push([`/${name}`, node.stat.ino])
    }
    const built = [this.current, this.staged, ...this.retainedCache?.values() ?? []]
    for (const b of built) {
      if (!b) continue
      for (const [rel, node] of b.nodes) out.push([rel ? `/${b.gen.name}/${rel}` : `/${b.gen.name}`, node.stat.ino])
    }
    return out
  }

  /** The bytes of the file at an absolute path: in a resolvable generation, or a dropped one. */
  file(path: string): Buffer | undefined {
    let node = this.lookup(path)
    const slash = path.indexOf('/', 1)
    if (!node && slash > 0) node = this.archivedCache?.get(path.slice(1, slash))?.nodes.get(path.slice(slash + 1))
    return node?.kind === 'file' ? node.data : undefined
  }

  /** The node at an absolute path in the mount ('/', '/labels', '/..2026_…/a/b'). */
  lookup(path: string): Node | undefined {
    if (!this.root) return undefined
    if (path === '/') return this.root
    const slash = path.indexOf('/', 1)
    const first = slash < 0 ? path.slice(1) : path.slice(1, slash)
    if (slash < 0) {
      if (first === '..data') return this.dataLink
      if (first === '..data_tmp') return this.tmpLink
      const link = this.links.get(first)
      if (link) return link
    }
    const built = first === this.current?.gen.name ? this.current
      : first === this.staged?.gen.name ? this.staged : this.retainedCache?.get(first)
    if (!built) return undefined
    return built.nodes.get(slash < 0 ? '' : path.slice(slash + 1))
  }
}
