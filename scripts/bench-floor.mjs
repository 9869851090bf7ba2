// The old floor: the least any filesystem on fuse-native as shipped (its prebuilt libfuse 2
// addon) can do to serve the kubelet's layout. It serves precomputed bytes and stats from maps,
// with the mount options dapifs used on it, and nothing else: no pod, no generations, no flips.
// scripts/bench.mjs runs it with PREBUILDS_ONLY=1 (node-gyp-build then loads the prebuilt addon)
// and compares dapifs with it.
//   PREBUILDS_ONLY=1 node scripts/bench-floor.mjs MOUNTPOINT LAYOUT.json
// LAYOUT.json: {"gen": "..2026_…", "files": {"labels": {"content": "…", "mode": 420}}}.
// Says "ready" on stdout; prints request counts on SIGUSR2; unmounts on SIGTERM.
import Fuse from 'fuse-native'
import { readFileSync } from 'node:fs'

const [mnt, layoutFile] = process.argv.slice(2)
const layout = JSON.parse(readFileSync(layoutFile, 'utf8'))
const now = Date.now()
const st = (mode, size, nlink = 1) => ({ mode, uid: 0, gid: 0, size, nlink, mtime: now, atime: now, ctime: now })
const nodes = new Map()
const dirs = new Map([['/', new Set()], [`/${layout.gen}`, new Set()]])
nodes.set('/..data', { stat: st(0o120777, layout.gen.length), target: layout.gen })
dirs.get('/').add(layout.gen).add('..data')
for (const [p, f] of Object.entries(layout.files)) {
  const data = Buffer.from(f.content)
  nodes.set(`/${layout.gen}/${p}`, { stat: st(0o100000 | f.mode, data.length), data })
  const parts = p.split('/')
  const top = parts[0]
  nodes.set(`/${top}`, { stat: st(0o120777, `..data/${top}`.length), target: `..data/${top}` })
  dirs.get('/').add(top)
  for (let i = 0; i < parts.length; i++) {
    const parent = `/${[layout.gen, ...parts.slice(0, i)].join('/')}`
    if (!dirs.has(parent)) dirs.set(parent, new Set())
    dirs.get(parent).add(parts[i])
    if (i < parts.length - 1 && !dirs.has(`${parent}/${parts[i]}`)) dirs.set(`${parent}/${parts[i]}`, new Set())
  }
}
for (const [p, entries] of dirs) nodes.set(p, { stat: st(p === '/' ? 0o41777 : 0o40755, 4096, 2), entries: [...entries] })

const counts = {}
const count = (op) => { counts[op] = (counts[op] || 0) + 1 }
const handles = new Map()
let fd = 1
const fuse = new Fuse(mnt, {
  getattr (p, cb) { count('getattr'); const n = nodes.get(p); n ? cb(0, n.stat) : cb(Fuse.ENOENT) },
  readlink (p, cb) { count('readlink'); const n = nodes.get(p); n && n.target ? cb(0, n.target) : cb(Fuse.ENOENT) },
  readdir (p, cb) { count('readdir'); const n = nodes.get(p); n && n.entries ? cb(0, ['.', '..', ...n.entries]) : cb(Fuse.ENOENT) },
  open (p, flags, cb) { count('open'); const n = nodes.get(p); if (!n || !n.data) return cb(Fuse.ENOENT); handles.set(fd, n.data); cb(0, fd++) },
  read (p, h, buf, len, pos, cb) { count('read'); const d = handles.get(h); if (pos >= d.length) return cb(0); cb(d.copy(buf, 0, pos, Math.min(d.length, pos + len))) },
  release (p, h, cb) { count('release'); handles.delete(h); cb(0) },
}, {
  force: true, allowOther: true, defaultPermissions: true, kernelCache: true,
  entryTimeout: '60', attrTimeout: '60', fsname: 'floor,noatime', subtype: 'floor', timeout: false,
})
fuse.mount((err) => {
  if (err) { console.error(err.message); process.exit(1) }
  console.log('ready')
})
process.on('SIGUSR2', () => console.log(`requests ${JSON.stringify(counts)}`))
process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)))
