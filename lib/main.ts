#!/usr/bin/env node
import { main } from './cli.js'

// exit() rather than exitCode: after an unmount, fuse-native's thread may still hold the loop.
process.exit(await main(process.argv.slice(2)))
