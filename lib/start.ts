// How the command line starts: dist/cli.cjs, the whole command line in one CommonJS file
// (scripts/bundle.mjs), compiled with V8's code cache for it, dist/cli.cjs.cache, when that cache
// was made for these bytes by this Node.
//
// Why: after a crash of `dapifs csi`, the pods' readers wait from the new process's exec until it
// has loaded and taken their volumes over, and most of what it does first is load and compile
// JavaScript (docs/benchmark.md, "A crash"; native-notes, "How long readers wait"). Two things
// made that slow, and this removes them:
// - Node 20's ESM loader: each file resolved through URLs and package scopes, read through libuv's
//   thread pool (on one CPU, a switch to a pool thread and back per file), linked, then run. A
//   CommonJS file is read and compiled at once, synchronously; this one holds our modules and the
//   small packages a start needs (debug, js-yaml, lru-cache). What only comes later (gRPC, the
//   Kubernetes client, prom-client) stays in node_modules, required when first imported.
// - compiling: V8 parses and compiles each function on its first call, and Node 20 keeps no code
//   cache of an ESM module. This cache holds the bytecode that a `dapifs csi` start compiles
//   before it checks its flags (scripts/bundle.mjs makes it at build time by running that much):
//   that is not compiled again.
//
// The cache is only used for the bytes it was made from: it starts with the SHA-1 of its bundle
// (V8 itself checks only the source's length). V8 refuses it for another Node or other V8 flags
// (the shebang's, when dist/main.js runs as a program; the image runs it with none). Then, or
// without a cache, the bundle is compiled as it would be without one; without a bundle, or with one
// older than tsc's cli.js (tsc ran since, without the bundle step), dist/main.js runs the modules
// themselves. Slower, the same: nothing here may fail a start that could run.

import { hash } from 'node:crypto'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import vm from 'node:vm'
import type { main as Main } from './cli.js'

const BUNDLE = fileURLToPath(new URL('./cli.cjs', import.meta.url))
/** The module the bundle starts from (tsc's). */
const CLI = fileURLToPath(new URL('./cli.js', import.meta.url))
const CACHE = `${BUNDLE}.cache`
/** The SHA-1 the cache starts with: its bundle's. */
const HASH_BYTES = 20

/** The bundle, compiled (with the cache if it is this bundle's); undefined without a bundle. */
function compile(cached: boolean): { script: vm.Script; source: string; run: () => typeof Main } | undefined {
  let source: string
  try {
    // A bundle older than the modules it was made from would run code that is no longer the
    // source's. Strictly older: a build that gives every file one time gives both the same.
    if (statSync(CLI).mtimeMs > statSync(BUNDLE).mtimeMs) return undefined
    source = readFileSync(BUNDLE, 'utf8')
  } catch {
    return undefined
  }
  let cachedData: Buffer | undefined
  if (cached) {
    try {
      const file = readFileSync(CACHE)
      if (file.subarray(0, HASH_BYTES).equals(hash('sha1', source, 'buffer'))) cachedData = file.subarray(HASH_BYTES)
    } catch {
      // no cache: compiled without one
    }
  }
  // What Node's own CommonJS loader compiles for a file (its wrapper), so that the bundle runs as
  // `require` would run it. It has no import(): packages are required (scripts/bundle.mjs).
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: BUNDLE,
    ...(cachedData ? { cachedData } : {}),
  })
  const run = (): typeof Main => {
    const module = { exports: {} as { main: typeof Main } }
    ;(script.runInThisContext() as (...args: unknown[]) => void)(module.exports, createRequire(BUNDLE), module, BUNDLE, path.dirname(BUNDLE))
    return module.exports.main
  }
  return { script, source, run }
}

/** The command line's main(), from the bundle; undefined if there is none (then: cli.js). */
export function bundledMain(): typeof Main | undefined {
  return compile(true)?.run()
}

/**
 * Writes the bundle's code cache (scripts/bundle.mjs runs it, in a Node without flags, as the
 * image runs dist/main.js): the bundle run as a `dapifs csi` start without flags runs it, to its
 * refusal (--endpoint is required). That loads and initializes every module a start of the agent
 * loads before its takeover, so their code is in the cache; nothing is mounted or served.
 */
export async function writeCodeCache(): Promise<void> {
  const c = compile(false)
  if (!c) throw new Error(`no bundle at ${BUNDLE}`)
  const code = await c.run()(['csi'])
  if (code !== 2) throw new Error(`the bundle's csi without flags exited ${code}, not 2`)
  writeFileSync(CACHE, Buffer.concat([hash('sha1', c.source, 'buffer'), c.script.createCachedData()]))
}
