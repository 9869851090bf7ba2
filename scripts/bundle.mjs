// The last step of `npm run build`: dist/main.js, what the image and `dapifs` run, becomes one
// bundle of the modules tsc wrote (dist/, one file per module), with esbuild.
//
// Why: a start's time is mostly the loading of modules. Node 20's ESM loader reads each file
// asynchronously, through libuv's thread pool, one level of imports after the other, and the
// thread waits in between; a process that takes a crashed agent's volumes over (`dapifs csi`)
// spent more time waiting on those reads than running anything (docs/benchmark.md, "A crash").
// Bundled, what a command loads at its start is one file; what it loads later (gRPC's server, the
// Kubernetes client: command.ts `load()`), one file per dynamic import (esbuild's splitting).
//
// What is in the bundle: our modules, and the small packages a start needs (debug, js-yaml,
// lru-cache): imported from node_modules, each would be a few more files through that loader, and
// debug, CommonJS, a scan of its source for names to export (cjs-module-lexer). A `require` of the
// chunk's own (the banner) serves the CommonJS that is bundled (debug's require('tty')...).
// What stays as it was:
// - the other packages, loaded from node_modules (EXTERNAL): fuse-native, which finds its addon
//   from its own directory (native/fuse.ts requires it), and what loads only after the takeover
//   (gRPC, the Kubernetes client, prom-client: command.ts `load()`), large and left as published;
// - the other files of dist/: tests import them, and the parser's worker (csi/parser.ts) runs
//   dist/csi/parser-worker.js;
// - each module's import.meta.url: it names the module's own file in dist/, so that the paths
//   computed from it (package.json, the .proto files, the worker, the example, the native build)
//   are the same bundled or not. The outputs are all in dist/ itself, so that one relative URL
//   serves every chunk.
// Each run removes the chunks of the run before (dist/main-*.js).

import { readdirSync, rmSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const DIST = fileURLToPath(new URL('../dist/', import.meta.url))

for (const f of readdirSync(DIST)) if (/^main-.*\.js(\.map)?$/.test(f)) rmSync(path.join(DIST, f))

/** Each module's import.meta.url, as if unbundled: its file in dist/, from the chunk (in dist/). */
const ownUrl = {
  name: 'own-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      const rel = path.relative(DIST, args.path)
      if (rel.startsWith('..')) return undefined
      const text = await readFile(args.path, 'utf8')
      const url = `new URL(${JSON.stringify(`./${rel.split(path.sep).join('/')}`)}, import.meta.url).href`
      return { contents: text.replace(/\bimport\.meta\.url\b/g, url), loader: 'js' }
    })
  },
}

const EXTERNAL = ['fuse-native', '@grpc/*', '@kubernetes/client-node', 'prom-client']

await build({
  entryPoints: [path.join(DIST, 'main.js')],
  outdir: DIST,
  allowOverwrite: true,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: EXTERNAL,
  banner: { js: "import { createRequire as createRequire_ } from 'node:module'; const require = createRequire_(import.meta.url);" },
  chunkNames: 'main-[name]-[hash]',
  sourcemap: true,
  plugins: [ownUrl],
  logLevel: 'warning',
})
