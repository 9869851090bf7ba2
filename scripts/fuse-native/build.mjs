#!/usr/bin/env node
// Builds fuse-native from its source with fuse-native.patch applied (run by npm's postinstall):
// its addon ported to libfuse 3, with dapifs's fixes (the patch's header says what and why).
//
// 1. Apply each hunk of the patch to the file it names (fuse-native.c, binding.gyp, index.js) as
//    fuse-native ships it (kept as FILE.orig). A hunk's old text must occur exactly once.
// 2. Compile with the node-gyp that npm ships, against Node's own headers when they are installed
//    beside it (Debian's and nodejs.org's layouts), else node-gyp's default. The addon links the
//    system's libfuse3 (Debian's libfuse3-3; headers from libfuse3-dev, found with pkg-config).
// 3. Check that the built addon loads and is the patched build. (An addon already built from
//    the same patched sources, by their hash in build/dapifs-patch.sha256, is not built again.)
//
// node-gyp-build prefers build/Release over fuse-native's prebuilds, so the patched addon is what
// `import 'fuse-native'` loads from then on. Anything failing leaves fuse-native's prebuilt addon
// (libfuse 2) in use and prints one warning line: dapifs runs with it, degraded (README,
// "Installing"). Exit code 1 only with --strict, as scripts/setup.sh runs it after `npm ci`.
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { copyFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const strict = process.argv.includes('--strict')
const require = createRequire(path.join(here, '../../package.json'))

function fail(why) {
  console.error(`dapifs: fuse-native not built from patched source: ${why}; its prebuilt libfuse 2 addon stays in use, with which dapifs runs degraded (README, "Installing")`)
  process.exit(strict ? 1 : 0)
}

let dir
try {
  dir = path.dirname(require.resolve('fuse-native/package.json'))
} catch {
  fail('fuse-native is not installed')
}
const version = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')).version
if (version !== '2.2.6') fail(`the patch is for fuse-native 2.2.6, found ${version}`)

/** The hunks of a unified diff, by file: {file: [[old text, new text], …]}, line numbers ignored. */
function hunks(patch) {
  const out = {}
  let file
  let cur
  for (const line of patch.replace(/\n+$/, '').split('\n')) {
    if (line.startsWith('--- a/')) { file = line.slice(6); cur = undefined; out[file] ??= [] }
    else if (line.startsWith('+++ ')) continue
    else if (line.startsWith('@@') && file) out[file].push((cur = { old: [], new: [] }))
    else if (!cur) continue
    else if (line.startsWith(' ')) cur.old.push(line.slice(1)), cur.new.push(line.slice(1))
    else if (line.startsWith('-')) cur.old.push(line.slice(1))
    else if (line.startsWith('+')) cur.new.push(line.slice(1))
    else if (line === '') cur.old.push(''), cur.new.push('') // an empty context line, whitespace trimmed
  }
  return Object.fromEntries(Object.entries(out).map(([f, hs]) => [f, hs.map((h) => [h.old.join('\n') + '\n', h.new.join('\n') + '\n'])]))
}

// The patch applies to fuse-native's own files, each kept as FILE.orig on the first run.
const patched = {}
for (const [file, fileHunks] of Object.entries(hunks(readFileSync(path.join(here, 'fuse-native.patch'), 'utf8')))) {
  const source = path.join(dir, file)
  if (!existsSync(source + '.orig')) copyFileSync(source, source + '.orig')
  let text = readFileSync(source + '.orig', 'utf8')
  for (const [i, [before, after]] of fileHunks.entries()) {
    const n = text.split(before).length - 1
    if (n !== 1) fail(`hunk ${i + 1} of fuse-native.patch for ${file} matches ${n} places, not 1`)
    text = text.replace(before, () => after)
  }
  patched[source] = text
}

const addon = path.join(dir, 'build/Release/fuse.node')
/** true when the addon loads and is this patch's build, else why not. */
function check() {
  const r = spawnSync(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(addon)}).dapifs_patch))`], { encoding: 'utf8' })
  return r.stdout === '3' ? true : r.stderr.trim().split('\n').find((l) => /Error/.test(l)) ?? 'it is not the patched build'
}
// The hash of the patched sources the addon was last built from, kept beside it.
const stamp = path.join(dir, 'build/dapifs-patch.sha256')
const hash = createHash('sha256').update(JSON.stringify(Object.values(patched))).digest('hex')
if (existsSync(stamp) && readFileSync(stamp, 'utf8') === hash && existsSync(addon) && check() === true) process.exit(0) // built before
for (const [f, text] of Object.entries(patched)) {
  writeFileSync(f + '.tmp', text)
  renameSync(f + '.tmp', f)
}

const nodeGyp = process.env.npm_config_node_gyp ?? path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js')
if (!existsSync(nodeGyp)) fail(`node-gyp not found at ${nodeGyp}`)
const args = [nodeGyp, 'rebuild', '--loglevel=warn']
const prefix = path.join(path.dirname(process.execPath), '..')
if (!process.env.npm_config_nodedir && existsSync(path.join(prefix, 'include/node/node_api.h'))) args.push(`--nodedir=${prefix}`)
const built = spawnSync(process.execPath, args, { cwd: dir, encoding: 'utf8' })
if (built.status !== 0) {
  process.stderr.write(built.stdout + built.stderr)
  fail(`node-gyp rebuild exited ${built.status} (it needs python3, make, a C compiler, pkg-config and libfuse3-dev)`)
}

const loaded = check()
if (loaded !== true) fail(`the built addon does not load: ${loaded}`)
writeFileSync(stamp, hash)
console.error('dapifs: built fuse-native 2.2.6 for libfuse 3 from source with fuse-native.patch')
