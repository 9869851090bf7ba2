// A pod from a file, watched: each change to the file is read again and handed on as a Pod.
//
// The watch is on the file's directory, not the file: editors and `kubectl … > pod.yaml` may
// replace the file (rename over it) or truncate and rewrite it, and a watch on the old inode
// would go quiet. A read that fails (garbage, a file caught half-written, a deleted file) is
// reported to the sink, which keeps what it had; the next good read goes through.

import { watch, type FSWatcher } from 'node:fs'
import path from 'node:path'
import createDebug from 'debug'
import { readPodFile } from '../volume/input.js'
import type { Pod } from '../volume/pod.js'

const log = createDebug('dapifs:source:file')

export interface PodSink {
  pod(pod: Pod): void
  /** A problem with the input: the last good pod stays in force. */
  problem(message: string): void
}

export class FileSource {
  private watcher: FSWatcher | undefined
  private reading = false
  private again = false

  constructor(readonly file: string, private readonly sink: PodSink) {}

  start(): void {
    const dir = path.dirname(path.resolve(this.file))
    const base = path.basename(this.file)
    this.watcher = watch(dir, { persistent: true }, (_event, name) => {
      if (name === null || name === base) this.changed()
    })
    this.watcher.on('error', (e) => this.sink.problem(`watching ${dir}: ${e.message}`))
  }

  stop(): void {
    this.watcher?.close()
    this.watcher = undefined
  }

  /** One read at a time; events during a read cause exactly one more. */
  private changed(): void {
    if (this.reading) {
      this.again = true
      return
    }
    this.reading = true
    void this.read().finally(() => {
      this.reading = false
      if (this.again && this.watcher) {
        this.again = false
        this.changed()
      }
    })
  }

  private async read(): Promise<void> {
    let pod: Pod
    const t0 = performance.now()
    try {
      pod = await readPodFile(this.file)
      log('read and parsed %s in %s ms', this.file, (performance.now() - t0).toFixed(2))
    } catch (e) {
      this.sink.problem((e as Error).message)
      return
    }
    this.sink.pod(pod)
  }
}
