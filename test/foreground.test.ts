// A takeover first (foreground.ts): the process's other threads go to nice 19 while it runs, and
// back to their own after; this thread keeps its own.
import { readdirSync, readFileSync } from 'node:fs'
import t from 'tap'
import { lowerOtherThreads } from '../lib/csi/foreground.js'

/** Each thread's nice value, from /proc (field 19 of stat). */
function nices(): Map<number, number> {
  const out = new Map<number, number>()
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      out.set(Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]))
    } catch {
      // gone meanwhile
    }
  }
  return out
}

const capSysNice = ((BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`) >> 23n) & 1n) === 1n

t.test('other threads wait at nice 19, then come back', { skip: capSysNice ? false : 'needs CAP_SYS_NICE (to raise a priority back)' }, async (t) => {
  const before = nices()
  t.ok(before.size > 1, 'Node has threads of its own (V8\'s, libuv\'s)')
  const putBack = lowerOtherThreads()
  const during = nices()
  t.equal(during.get(process.pid), before.get(process.pid), 'this thread keeps its priority')
  for (const [tid, nice] of during) if (tid !== process.pid && before.has(tid)) t.equal(nice, 19, `thread ${tid} at nice 19`)
  putBack()
  const after = nices()
  for (const [tid, nice] of after) if (before.has(tid)) t.equal(nice, before.get(tid), `thread ${tid} back at ${before.get(tid)}`)
  putBack() // a second time changes nothing
  t.same(nices(), after)
})
