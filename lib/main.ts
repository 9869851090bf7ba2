#!/usr/bin/env -S node --optimize-for-size --max-semi-space-size=2
// The flags: a small young generation, and V8's smaller heap-growing steps. The daemon's garbage
// is small and short-lived; with Node's defaults, RSS drifts up by 20-40 MB over thousands of
// flips with nothing retained (native-notes/README.md, Memory). V8 reads them only at start-up,
// so they are here and not in the code.
//
// What runs is the bundle of the command line, with its code cache (start.ts); without a bundle,
// the modules themselves.
import { bundledMain } from './start.js'

const main = bundledMain() ?? (await import('./cli.js')).main
// exit() rather than exitCode: after an unmount, fuse-native's thread may still hold the loop.
process.exit(await main(process.argv.slice(2)))
