// A takeover first: while a restarted agent takes its volumes over, the process's other threads
// wait for it.
//
// Readers of every volume wait for the takeover, and nothing else the process does is needed to
// answer them. Yet a thousand volumes taken over in a row make the same few functions hot, and
// V8 compiles them on its own threads (TurboFan's background jobs), marks and sweeps on others:
// on a node with little CPU to spare (the benchmark runs the agent on one), those threads took
// about a third of the CPU while the takeover ran, most of it compiling code that the takeover
// is over before it gets to use. So the threads the process has when the takeover starts (V8's,
// and libuv's pool: Node's thread and the FUSE pool, which starts later, are not among them) go
// to the lowest priority (nice 19) until it is done, and then back to their own. On a node with
// idle CPUs this changes nothing: they run beside it as before.
//
// Only with CAP_SYS_NICE (the agent's privileged container has it): lowering a thread's priority
// is allowed to anyone, but raising it back needs that capability, without which they would stay
// low for good. Linux only: elsewhere a thread's id is not what setpriority(2) takes.

import { readdirSync, readFileSync } from 'node:fs'
import os from 'node:os'

/**
 * Lowers every thread of the process but this one to nice 19; returns what puts them back. A
 * thread that is gone meanwhile, or refuses, is left alone.
 */
export function lowerOtherThreads(): () => void {
  if (process.platform !== 'linux') return () => {}
  let tids: number[]
  try {
    if (!mayRaise()) return () => {}
    tids = readdirSync('/proc/self/task').map(Number).filter((tid) => tid !== process.pid)
  } catch {
    return () => {}
  }
  const lowered: Array<[tid: number, before: number]> = []
  for (const tid of tids) {
    try {
      const before = os.getPriority(tid)
      os.setPriority(tid, 19)
      lowered.push([tid, before])
    } catch {
      // gone, or not ours to change
    }
  }
  return () => {
    for (const [tid, before] of lowered.splice(0)) {
      try {
        os.setPriority(tid, before)
      } catch {
        // gone
      }
    }
  }
}

const CAP_SYS_NICE = 23n

/** Whether this process may raise a thread's priority back: CAP_SYS_NICE in its effective set. */
function mayRaise(): boolean {
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]
  return hex !== undefined && ((BigInt(`0x${hex}`) >> CAP_SYS_NICE) & 1n) === 1n
}
