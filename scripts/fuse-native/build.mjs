#!/usr/bin/env node
// Builds fuse-native from its source with fuse-native.patch applied (run by npm's postinstall).
//
// 1. Apply each hunk of the patch to node_modules/fuse-native/fuse-native.c as fuse-native
//    ships it (kept as fuse-native.c.orig). A hunk's old text must occur exactly once.
// 2. Compile with the node-gyp that npm ships, against Node's own headers when they are installed
//    beside it (Debian's and nodejs.org's layouts), else node-gyp's default. The addon links the
//    system's libfuse.so.2 (Debian's libfuse2) like the prebuilt one does.
// 3. Check that the built addon loads and is the patched build. (An addon already built from
//    the same patched source is not built again.)
//
// node-gyp-build prefers build/Release over fuse-native's prebuilds, so the patched addon is what
// `import 'fuse-native'` loads from then on. Anything failing leaves the prebuilt addon in use and
// prints one warning line: dapifs works with it, but leaks memory under sustained concurrent reads.
// Exit code 1 only with --strict, as scripts/setup.sh runs it after `npm ci`.
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const strict = process.argv.includes('--strict')
const require = createRequire(path.join(here, '../../package.json'))

function fail(why) {
  console.error(`dapifs: fuse-native not built from patched source: ${why}; the prebuilt addon stays in use, which leaks memory under sustained concurrent reads (README, "Installing")`)
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

/** The hunks of a unified diff, as [old text, new text] pairs, line numbers ignored. */
function hunks(patch) {
  const out = []
  let cur
  for (const line of patch.replace(/\n+$/, '').split('\n')) {
    if (line.startsWith('@@')) out.push((cur = { old: [], new: [] }))
    else if (!cur) continue
    else if (line.startsWith(' ')) cur.old.push(line.slice(1)), cur.new.push(line.slice(1))
    else if (line.startsWith('-')) cur.old.push(line.slice(1))
    else if (line.startsWith('+')) cur.new.push(line.slice(1))
    else if (line === '') cur.old.push(''), cur.new.push('') // an empty context line, whitespace trimmed
  }
  return out.map((h) => [h.old.join('\n') + '\n', h.new.join('\n') + '\n'])
}

// The patch applies to fuse-native's own source, kept as fuse-native.c.orig on the first run.
const source = path.join(dir, 'fuse-native.c')
if (!existsSync(source + '.orig')) copyFileSync(source, source + '.orig')
let text = readFileSync(source + '.orig', 'utf8')
for (const [i, [before, after]] of hunks(readFileSync(path.join(here, 'fuse-native.patch'), 'utf8')).entries()) {
  const n = text.split(before).length - 1
  if (n !== 1) fail(`hunk ${i + 1} of fuse-native.patch matches ${n} places in fuse-native.c, not 1`)
  text = text.replace(before, () => after)
}

const addon = path.join(dir, 'build/Release/fuse.node')
/** '1' when the addon loads and is the patched build, else why not. */
function check() {
  const r = spawnSync(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(addon)}).dapifs_patch))`], { encoding: 'utf8' })
  return r.stdout === '1' ? '1' : r.stderr.trim().split('\n').find((l) => /Error/.test(l)) ?? 'it is not the patched build'
}
if (readFileSync(source, 'utf8') === text && existsSync(addon) && check() === '1') process.exit(0) // built before
writeFileSync(source + '.tmp', text)
renameSync(source + '.tmp', source)

const nodeGyp = process.env.npm_config_node_gyp ?? path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js')
if (!existsSync(nodeGyp)) fail(`node-gyp not found at ${nodeGyp}`)
const args = [nodeGyp, 'rebuild', '--loglevel=warn']
const prefix = path.join(path.dirname(process.execPath), '..')
if (!process.env.npm_config_nodedir && existsSync(path.join(prefix, 'include/node/node_api.h'))) args.push(`--nodedir=${prefix}`)
const built = spawnSync(process.execPath, args, { cwd: dir, encoding: 'utf8' })
if (built.status !== 0) {
  process.stderr.write(built.stdout + built.stderr)
  fail(`node-gyp rebuild exited ${built.status} (it needs python3, make and a C compiler)`)
}

const loaded = check()
if (loaded !== '1') fail(`the built addon does not load: ${loaded}`)
console.error('dapifs: built fuse-native 2.2.6 from source with fuse-native.patch')
