#!/usr/bin/env node
// Builds the native layer (npm's postinstall runs it): the addon in this folder, fuse-native's
// ported to libfuse 3's low-level API (fuse-native.c says what it adds, native-notes/ why), and
// puts it where fuse-native's index.js loads its addon from.
//
// 1. Compile here (into ./build) with the node-gyp that npm ships, against Node's own headers
//    when they are installed beside it (Debian's and nodejs.org's layouts), else node-gyp's
//    default. The addon links the system's libfuse3 (Debian's libfuse3-3; headers from
//    libfuse3-dev, found with pkg-config). An addon already built from the same sources (their
//    hash in build/sources.sha256) is not built again.
// 2. Copy it into fuse-native as build/Release/fuse.node. node-gyp-build, with which fuse-native's
//    index.js loads its addon, prefers that to fuse-native's prebuilds: fuse-native's JS then
//    drives our addon, and fuse.ts (a subclass of its Fuse) adds what the port offers.
// 3. Check that it loads from there and is ours (it exports dapifs_native).
//
// Anything failing leaves fuse-native's prebuilt addon (libfuse 2) in use and prints one warning
// line: dapifs runs with it, degraded (docs/cli.md, "Installing"). With --strict, as scripts/setup.sh
// and the Dockerfile run it after `npm ci`, it also prints node-gyp's output, and exits 1.
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const strict = process.argv.includes('--strict')
const require = createRequire(path.join(here, '../../package.json'))
/** Where fuse-native's index.js looks first; set once fuse-native is found. */
let installed

function fail(why) {
  // An addon of ours from earlier sources must not stay in use: the prebuilt one is the fallback.
  if (installed) rmSync(installed, { force: true })
  console.error(`dapifs: the native layer (lib/native) was not built: ${why}; fuse-native's prebuilt libfuse 2 addon stays in use, with which dapifs runs degraded (docs/cli.md, "Installing")`)
  process.exit(strict ? 1 : 0)
}

let dir
try {
  dir = path.dirname(require.resolve('fuse-native/package.json'))
} catch {
  fail('fuse-native is not installed')
}
installed = path.join(dir, 'build/Release/fuse.node')
// fuse.ts overrides fuse-native's internals, and the addon answers its index.js.
const version = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')).version
if (version !== '2.2.6') fail(`it is written for fuse-native 2.2.6, found ${version}`)

/** true when the addon at `file` loads and is ours, else why not. */
function check(file) {
  const r = spawnSync(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(file)}).dapifs_native))`], { encoding: 'utf8' })
  return r.stdout === '1' ? true : r.stderr.trim().split('\n').find((l) => /Error/.test(l)) ?? 'it is not the native layer\'s build'
}

const sources = ['binding.gyp', ...readdirSync(here).filter((f) => /\.[ch]$/.test(f)).sort()]
const hash = createHash('sha256')
for (const f of sources) hash.update(`${f}\0${readFileSync(path.join(here, f), 'utf8')}\0`)
const digest = hash.digest('hex')
const built = path.join(here, 'build/Release/fuse.node')
const stamp = path.join(here, 'build/sources.sha256')
let compiled = false
if (!(existsSync(stamp) && readFileSync(stamp, 'utf8') === digest && existsSync(built))) {
  const nodeGyp = process.env.npm_config_node_gyp ?? path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js')
  if (!existsSync(nodeGyp)) fail(`node-gyp not found at ${nodeGyp}`)
  const args = [nodeGyp, 'rebuild', '--loglevel=warn']
  const prefix = path.join(path.dirname(process.execPath), '..')
  if (!process.env.npm_config_nodedir && existsSync(path.join(prefix, 'include/node/node_api.h'))) args.push(`--nodedir=${prefix}`)
  const gyp = spawnSync(process.execPath, args, { cwd: here, encoding: 'utf8' })
  if (gyp.status !== 0) {
    if (strict) process.stderr.write(gyp.stdout + gyp.stderr)
    fail(`node-gyp rebuild exited ${gyp.status ?? gyp.signal} (it needs python3, make, a C compiler, pkg-config and libfuse3-dev${strict ? '' : '; with --strict it shows why'})`)
  }
  writeFileSync(stamp, digest)
  compiled = true
}

mkdirSync(path.dirname(installed), { recursive: true })
copyFileSync(built, installed + '.tmp')
renameSync(installed + '.tmp', installed)
const loaded = check(installed)
if (loaded !== true) fail(`the built addon does not load: ${loaded}`)
if (compiled) console.error('dapifs: built the native layer (lib/native) for libfuse 3')
