// The last step of `npm run build`: dist/cli.cjs, what the image and `dapifs` run (dist/main.js
// loads it: lib/start.ts), becomes one CommonJS bundle of the modules tsc wrote (dist/, one file
// per module), with esbuild; then dist/cli.cjs.cache, V8's code cache for it.
//
// Why: a start's time is mostly the loading of modules (docs/benchmark.md, "A crash"). Node 20's
// ESM loader resolves each file through URLs and package scopes and reads it through libuv's
// thread pool, one level of imports after the other, and a process that takes a crashed agent's
// volumes over (`dapifs csi`) spent more time in it than running anything. One CommonJS file is
// read and compiled at once, and V8 can be given a code cache for it (vm.Script's cachedData),
// which Node 20 offers for no ESM module. start.ts says how it is loaded, and when the cache is not
// used.
//
// What is in the bundle: our modules, and the small packages a start needs (debug, js-yaml,
// lru-cache). What each command imports dynamically (cli.ts; command.ts `load()`) is in it too,
// and is still run only when it is imported (esbuild wraps such a module in a function).
// What stays as it was:
// - the other packages, loaded from node_modules (EXTERNAL), each when the module that imports it
//   is first imported: fuse-native, which finds its addon from its own directory (native/fuse.ts
//   requires it), and what loads only after the takeover (gRPC, the Kubernetes client, which is
//   ESM and which Node 20.19 and later `require` as it is, prom-client), large and left as published;
// - the other files of dist/: tests import them, and the parser's worker (csi/parser.ts) runs
//   dist/csi/parser-worker.js;
// - each module's import.meta.url: it names the module's own file in dist/, so that the paths
//   computed from it (package.json, the .proto files, the worker, the example, the native build)
//   are the same bundled or not.
//
// The cache is written by a Node without flags, as the image runs dist/main.js (start.ts,
// writeCodeCache). Each run removes the chunks of the ESM bundles of earlier builds (dist/main-*.js).

import { execFileSync } from 'node:child_process'
import { readdirSync, rmSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const DIST = fileURLToPath(new URL('../dist/', import.meta.url))

for (const f of readdirSync(DIST)) if (/^main-.*\.js(\.map)?$|^cli\.cjs(\.map|\.cache)?$/.test(f)) rmSync(path.join(DIST, f))

/** Each module's import.meta.url, as if unbundled: its file in dist/, from the bundle's own (in dist/). */
const ownUrl = {
  name: 'own-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      const rel = path.relative(DIST, args.path)
      if (rel.startsWith('..')) return undefined
      const text = await readFile(args.path, 'utf8')
      const url = `new URL(${JSON.stringify(`./${rel.split(path.sep).join('/')}`)}, bundleUrl_).href`
      return { contents: text.replace(/\bimport\.meta\.url\b/g, url), loader: 'js' }
    })
  },
}

const EXTERNAL = ['fuse-native', '@grpc/*', '@kubernetes/client-node', 'prom-client']

await build({
  entryPoints: [path.join(DIST, 'cli.js')],
  outfile: path.join(DIST, 'cli.cjs'),
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  external: EXTERNAL,
  // import() of a package, as require(): a vm.Script (start.ts) has no ESM loader of its own.
  supported: { 'dynamic-import': false },
  banner: { js: "const bundleUrl_ = require('node:url').pathToFileURL(__filename).href;" },
  sourcemap: true,
  plugins: [ownUrl],
  logLevel: 'warning',
})

// Without NODE_OPTIONS: the image has none, and V8 refuses a cache made with other flags. Without a
// cache, a start compiles the bundle: slower, the same; so a failure here is a warning.
const env = { ...process.env }
delete env.NODE_OPTIONS
try {
  execFileSync(process.execPath, ['--input-type=module', '-e', `(await import(${JSON.stringify(new URL('start.js', `file://${DIST}`).href)})).writeCodeCache().then(() => process.exit(0))`],
    { env, stdio: ['ignore', 'inherit', 'pipe'] })
} catch (e) {
  process.stderr.write(`dapifs: no code cache for dist/cli.cjs (starts will compile it): ${e.message.split('\n')[0]}\n${e.stderr ?? ''}`)
}
