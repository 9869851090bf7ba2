// The directory model of a mount: the kubelet's layout, as nodes, for the current generation.
//
//   /                         drwxrwxrwt  the volume root (a tmpfs root on the kubelet: 1777)
//   /..data -> ..<gen>        the current generation
//   /labels -> ..data/labels  one link per first path segment of the items
//   /..<gen>/                 drwxr-xr-x  the files, with nested item paths as directories
//
// A flip makes a new generation current. The one it replaces, and those before it, stay
// resolvable for a while (`retainMs`, at most `retainMax` of them) without being listed: a
// reader that read `..data` just before a flip still finds the directory it was pointed at, as
// on the kubelet's tmpfs, where the old directory goes only after the rename. Each generation's
// nodes are built once, at its flip, and never change: lookups on the hot path are a map get.
//
// Ownership follows the kubelet: everything is owned by `uid`/`gid` (root by default); with
// an fsGroup, every entry's group is the fsGroup and directories are setgid
// (SetVolumeOwnership: files `| 0440`, done in projection.ts; directories `| 02550`).

import { LRUCache } from 'lru-cache'
import type { Generation } from './generation.js'

export const S_IFDIR = 0o040000
export const S_IFREG = 0o100000
export const S_IFLNK = 0o120000

export interface Stat {
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
  retainMs?: number
  retainMax?: number
}

const DIR_SIZE = 4096

function stat(mode: number, uid: number, gid: number, size: number, nlink: number, ms: number): Stat {
  return { mode, uid, gid, size, nlink, mtime: ms, atime: ms, ctime: ms }
}

/** A generation's own nodes, by path below its directory ('' is the directory itself). */
function buildNodes(gen: Generation, uid: number, defaultGid: number): Map<string, Node> {
  const gid = gen.projection.gid ?? defaultGid
  const dirMode = S_IFDIR | (gen.projection.gid !== undefined ? 0o2755 : 0o755)
  const ms = gen.createdMs
  const nodes = new Map<string, Node>()
  const dirs = new Map<string, Set<string>>([['', new Set()]])
  for (const f of gen.projection.files) {
    nodes.set(f.path, { kind: 'file', stat: stat(S_IFREG | f.mode, uid, gid, f.data.length, 1, ms), data: f.data })
    const parts = f.path.split('/')
    for (let i = 0; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/')
      let children = dirs.get(parent)
      if (!children) dirs.set(parent, (children = new Set()))
      children.add(parts[i]!)
      if (i < parts.length - 1 && !dirs.has(parts.slice(0, i + 1).join('/'))) dirs.set(parts.slice(0, i + 1).join('/'), new Set())
    }
  }
  for (const [path, children] of dirs) {
    const entries = [...children]
    const subdirs = entries.filter((e) => dirs.has(path ? `${path}/${e}` : e)).length
    nodes.set(path, { kind: 'dir', stat: stat(dirMode, uid, gid, DIR_SIZE, 2 + subdirs, ms), entries })
  }
  return nodes
}

interface Built { gen: Generation; nodes: Map<string, Node> }

export class Tree {
  private readonly uid: number
  private readonly gid: number
  private current: Built | undefined
  private readonly retained: LRUCache<string, Built>
  private root: Node | undefined
  private dataLink: Node | undefined
  /** The top-level links, by name; a name keeps its node (and time) across flips. */
  private links = new Map<string, Node>()

  constructor(opts: TreeOptions = {}) {
    this.uid = opts.uid ?? 0
    this.gid = opts.gid ?? 0
    this.retained = new LRUCache<string, Built>({
      max: opts.retainMax ?? 256,
      ttl: opts.retainMs ?? 5_000,
      ttlAutopurge: true,
    })
  }

  /** The current generation. */
  get generation(): Generation | undefined {
    return this.current?.gen
  }

  /** Whether a generation name is current or still resolvable. */
  has(name: string): boolean {
    return this.current?.gen.name === name || this.retained.has(name)
  }

  /** Makes `gen` current; the generation it replaces stays resolvable but unlisted. */
  flip(gen: Generation, now = Date.now()): void {
    if (this.current) this.retained.set(this.current.gen.name, this.current)
    this.current = { gen, nodes: buildNodes(gen, this.uid, this.gid) }
    const gid = gen.projection.gid ?? this.gid
    const linkStat = (target: string): Stat => stat(S_IFLNK | 0o777, this.uid, gid, Buffer.byteLength(target), 1, now)
    const top = new Set(gen.projection.files.map((f) => f.path.split('/')[0]!))
    const links = new Map<string, Node>()
    for (const name of top) {
      const old = this.links.get(name)
      const target = `..data/${name}`
      links.set(name, old && old.stat.gid === gid ? old : { kind: 'link', stat: linkStat(target), target })
    }
    this.links = links
    this.dataLink = { kind: 'link', stat: linkStat(gen.name), target: gen.name }
    const rootMode = S_IFDIR | (gen.projection.gid !== undefined ? 0o3777 : 0o1777)
    this.root = {
      kind: 'dir',
      stat: stat(rootMode, this.uid, gid, DIR_SIZE, 3, now),
      entries: [gen.name, '..data', ...top],
    }
  }

  /** The node at an absolute path in the mount ('/', '/labels', '/..2026_…/a/b'). */
  lookup(path: string): Node | undefined {
    if (!this.current) return undefined
    if (path === '/') return this.root
    const slash = path.indexOf('/', 1)
    const first = slash < 0 ? path.slice(1) : path.slice(1, slash)
    if (slash < 0) {
      if (first === '..data') return this.dataLink
      const link = this.links.get(first)
      if (link) return link
    }
    const built = first === this.current.gen.name ? this.current : this.retained.get(first)
    if (!built) return undefined
    return built.nodes.get(slash < 0 ? '' : path.slice(slash + 1))
  }
}
