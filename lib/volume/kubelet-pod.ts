// The kubelet's own copy of a pod differs from the API server's by two annotations, and its
// downward API volumes are rendered from that copy, so `metadata.annotations` shows them
// (pkg/kubelet/config/config.go; seen on a real kubelet 1.20.2):
//   kubernetes.io/config.source  where the pod came from: "api" for the API server;
//   kubernetes.io/config.seen    when this kubelet first saw the pod (its uid), as Go's
//                                time.RFC3339Nano prints it; kept through later updates.
// Both overwrite any annotations of the same names. A node agent that stands in for the
// kubelet adds them too; its "seen" is its own first sight of the pod, milliseconds from the
// kubelet's.

export const CONFIG_SOURCE = 'kubernetes.io/config.source'
export const CONFIG_SEEN = 'kubernetes.io/config.seen'

/** A wall-clock time (ms since the epoch, fractional) as Go's time.RFC3339Nano prints it in UTC. */
export function rfc3339Nano(ms: number): string {
  const whole = Math.floor(ms)
  const iso = new Date(whole).toISOString() // 2026-12-02T22:07:04.052Z
  const ns = Math.round((ms - Math.floor(ms / 1000) * 1000) * 1e6)
  const frac = String(Math.min(ns, 999_999_999)).padStart(9, '0').replace(/0+$/, '')
  return `${iso.slice(0, 19)}${frac ? `.${frac}` : ''}Z`
}

/** The pod object as the kubelet keeps it, for a pod from the API server first seen at `seen`. */
export function asKubeletSeesIt(obj: unknown, seen: string): unknown {
  if (typeof obj !== 'object' || obj === null) return obj
  const o = obj as { metadata?: unknown }
  if (typeof o.metadata !== 'object' || o.metadata === null) return obj
  const meta = o.metadata as { annotations?: unknown }
  const annotations = typeof meta.annotations === 'object' && meta.annotations !== null ? meta.annotations : {}
  return { ...o, metadata: { ...meta, annotations: { ...annotations, [CONFIG_SEEN]: seen, [CONFIG_SOURCE]: 'api' } } }
}
