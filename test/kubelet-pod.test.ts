// The kubelet's own copy of a pod: its two annotations, and Go's RFC 3339 with nanoseconds.
import t from 'tap'
import { asKubeletSeesIt, rfc3339Nano } from '../lib/volume/kubelet-pod.js'

t.test('rfc3339Nano prints as Go\'s time.RFC3339Nano in UTC: trailing zeros of the fraction dropped', async (t) => {
  const ms = Date.UTC(2026, 11, 2, 22, 7, 4)
  t.equal(rfc3339Nano(ms), '2026-12-02T22:07:04Z', 'no fraction at all on a whole second')
  t.equal(rfc3339Nano(ms + 52), '2026-12-02T22:07:04.052Z')
  // A double near 1.8e12 ms holds sub-ms parts to about 0.2 µs: these are exact.
  t.equal(rfc3339Nano(ms + 52.25), '2026-12-02T22:07:04.05225Z')
  t.equal(rfc3339Nano(ms + 999.5), '2026-12-02T22:07:04.9995Z')
})

t.test('asKubeletSeesIt adds config.seen and config.source, over any of the same names', async (t) => {
  const pod = { metadata: { name: 'p', annotations: { a: '1', 'kubernetes.io/config.source': 'file' } }, spec: {} }
  t.same(asKubeletSeesIt(pod, 'T'), { metadata: { name: 'p', annotations: { a: '1', 'kubernetes.io/config.source': 'api', 'kubernetes.io/config.seen': 'T' } }, spec: {} })
  t.same(pod.metadata.annotations, { a: '1', 'kubernetes.io/config.source': 'file' }, 'the object given is not changed')
  t.same(asKubeletSeesIt({ metadata: {} }, 'T'), { metadata: { annotations: { 'kubernetes.io/config.seen': 'T', 'kubernetes.io/config.source': 'api' } } })
  t.equal(asKubeletSeesIt(null, 'T'), null, 'not an object: left for readPod to refuse')
})
