// Fuzzing the engine: adversarial pods and volume definitions (arbitrary Unicode, lone
// surrogates, values up to the API's 256 KiB annotation limit, random field paths, quantities,
// divisors and modes, item paths with '..', '/', empty segments and very long names). Each one
// either renders, and then the invariants hold, or fails with a one-line error that names the
// item (or the field) and the rule. Nothing crashes or hangs.
import t from 'tap'
import { Rng } from './fixtures/gen.js'
import { readPod, pickVolume } from '../lib/volume/pod.js'
import { project } from '../lib/volume/projection.js'
import { InputError } from '../lib/volume/shape.js'
import { byteCompare } from '../lib/volume/fieldpath.js'
import { Quantity } from '../lib/volume/quantity.js'

const CASES = Number(process.env.DAPIFS_FUZZ_CASES ?? 10_000)
const SEED = Number(process.env.DAPIFS_FUZZ_SEED ?? 7)

/** Go's strconv.Unquote, for the escapes %q produces: the inverse of goQuote, on bytes. */
function goUnquote(q: string): Buffer {
  if (!q.startsWith('"') || !q.endsWith('"')) throw new Error(`not quoted: ${q}`)
  const s = q.slice(1, -1)
  const out: number[] = []
  const simple: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11, '\\': 92, '"': 34 }
  for (let i = 0; i < s.length;) {
    const c = s[i]!
    if (c !== '\\') {
      const cp = s.codePointAt(i)!
      out.push(...Buffer.from(String.fromCodePoint(cp)))
      i += cp > 0xffff ? 2 : 1
      continue
    }
    const e = s[i + 1]!
    if (e in simple) { out.push(simple[e]!); i += 2 } else if (e === 'x') { out.push(parseInt(s.slice(i + 2, i + 4), 16)); i += 4 } else if (e === 'u') { out.push(...Buffer.from(String.fromCodePoint(parseInt(s.slice(i + 2, i + 6), 16)))); i += 6 } else if (e === 'U') { out.push(...Buffer.from(String.fromCodePoint(parseInt(s.slice(i + 2, i + 10), 16)))); i += 10 } else throw new Error(`bad escape \\${e} in ${q}`)
  }
  return Buffer.from(out)
}

const SUFFIXES = ['', 'n', 'u', 'm', 'k', 'M', 'G', 'T', 'P', 'E', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei', 'e3', 'e-30', 'E18', 'e+400', 'K', 'i', 'x', '', '']
const FIELD_PATHS = ['metadata.name', 'metadata.namespace', 'metadata.uid', 'metadata.labels', 'metadata.annotations',
  "metadata.labels['a']", "metadata.annotations['x/y']", "metadata.labels['']", "metadata.labels['A B']", 'spec.nodeName',
  'status.podIP', "metadata.foo['x']", "metadata.labels['a'", '', 'metadata.labels ', "metadata.annotations['a[b']c']"]
const RESOURCES = ['limits.cpu', 'requests.cpu', 'limits.memory', 'requests.memory', 'limits.ephemeral-storage',
  'requests.hugepages-2Mi', 'limits.gpu', 'limits.', '']
const DIVISORS: unknown[] = [undefined, '1', '1m', '0', '1k', '1Mi', '1e3', '1024', 'x', 3, null, '1Ei', '0.001', -1]
const PATH_PARTS = ['a', 'b', '..', '.', '', 'labels', '..data', '...', 'x'.repeat(300), 'é', '\u0000', ' ', '..x', 'a..b']

function randomString(r: Rng, max: number): string {
  const n = r.int(max + 1)
  let s = ''
  for (let i = 0; i < n; i++) {
    const k = r.int(10)
    if (k < 5) s += String.fromCharCode(32 + r.int(95))
    else if (k < 7) s += String.fromCharCode(r.int(32))
    else if (k < 8) s += String.fromCharCode(0xd800 + r.int(0x800)) // lone surrogates
    else s += String.fromCodePoint(r.int(0x10ffff + 1) & ~(r.chance(0.9) ? 0 : 0x800))
  }
  return s
}

function genPod(r: Rng): unknown {
  const map = (n: number, valueMax: number): Record<string, unknown> => {
    const m: Record<string, unknown> = {}
    for (let i = 0; i < n; i++) m[r.chance(0.8) ? `k${r.int(50)}` : randomString(r, 10)] = r.chance(0.98) ? randomString(r, valueMax) : r.pick([1, null, [], {}])
    return m
  }
  const huge = r.chance(0.01) ? { big: 'v'.repeat(256 * 1024) } : {}
  const quantity = (): unknown => r.chance(0.9) ? `${r.chance(0.1) ? '-' : ''}${r.int(10 ** (1 + r.int(15)))}${r.chance(0.2) ? '.' + r.int(1000) : ''}${r.pick(SUFFIXES)}` : r.pick([1, 0.5, null, {}, 'Inf'])
  const items = Array.from({ length: r.int(6) }, () => {
    const item: Record<string, unknown> = {
      path: Array.from({ length: 1 + r.int(3) }, () => r.pick(PATH_PARTS)).join(r.chance(0.9) ? '/' : '//'),
    }
    if (r.chance(0.3)) item.mode = r.pick([0, 0o400, 0o644, 0o777, 0o1000, -1, 420, '0644', 1.5])
    const kind = r.int(10)
    if (kind < 6) item.fieldRef = { fieldPath: r.pick(FIELD_PATHS), ...(r.chance(0.1) ? { apiVersion: r.pick(['v1', 'v2', '']) } : {}) }
    else if (kind < 9) item.resourceFieldRef = { containerName: r.pick(['c', 'd', '']), resource: r.pick(RESOURCES), ...(r.chance(0.7) ? { divisor: r.pick(DIVISORS) } : {}) }
    else if (r.chance(0.5)) { item.fieldRef = { fieldPath: 'metadata.name' }; item.resourceFieldRef = { containerName: 'c', resource: 'limits.cpu' } }
    return item
  })
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: randomString(r, 20), namespace: 'ns', uid: 'u', labels: map(r.int(5), 20), annotations: { ...map(r.int(5), r.chance(0.1) ? 5000 : 50), ...huge } },
    spec: {
      ...(r.chance(0.2) ? { securityContext: { fsGroup: r.pick([0, 1000, 65534]) } } : {}),
      containers: [{ name: 'c', resources: { limits: { cpu: quantity(), memory: quantity() }, requests: { cpu: quantity(), 'hugepages-2Mi': quantity() } } }],
      volumes: [{ name: 'v', downwardAPI: { items, ...(r.chance(0.2) ? { defaultMode: r.pick([0o600, 0o2000, -5]) } : {}) } }],
    },
  }
}

t.test(`${CASES} adversarial pods: render with invariants, or fail with one line naming the item`, async (t) => {
  const rng = new Rng(SEED)
  const allocatable = new Map([['cpu', Quantity.parse('4')], ['memory', Quantity.parse('8Gi')]])
  let rendered = 0, refused = 0
  const problems: string[] = []
  const start = Date.now()
  for (let i = 0; i < CASES; i++) {
    const raw = genPod(rng)
    try {
      const pod = readPod(raw)
      const p = project(pod, pickVolume(pod), { node: { allocatable, labels: new Map() } })
      rendered++
      const paths = p.files.map((f) => f.path)
      if (new Set(paths).size !== paths.length) problems.push(`case ${i}: duplicate paths`)
      for (const f of p.files) {
        if (f.mode < 0 || f.mode > 0o777) problems.push(`case ${i}: mode ${f.mode}`)
        if (f.path.split('/').some((e) => e === '' || e === '.' || e === '..') || f.path.startsWith('..')) problems.push(`case ${i}: path ${JSON.stringify(f.path)}`)
        if (f.data.toString('utf8') !== Buffer.from(f.data.toString('utf8')).toString('utf8')) problems.push(`case ${i}: invalid UTF-8 in ${f.path}`)
      }
      const meta = (raw as { metadata: { labels: Record<string, unknown>; annotations: Record<string, unknown> } }).metadata
      for (const f of p.files) {
        const item = (raw as { spec: { volumes: { downwardAPI: { items: { path: string; fieldRef?: { fieldPath: string } }[] } }[] } }).spec.volumes[0]!.downwardAPI.items
          .filter((it) => it.fieldRef && (it.fieldRef.fieldPath === 'metadata.labels' || it.fieldRef.fieldPath === 'metadata.annotations'))
          .find((it) => f.path === it.path.split('/').filter((e) => e && e !== '.').join('/'))
        if (!item || f.data.length === 0) continue
        const rawMap = item.fieldRef!.fieldPath === 'metadata.labels' ? meta.labels : meta.annotations
        // Keys are written raw, as the kubelet writes them: one with a newline or '="' in it
        // cannot be parsed back out of its line, so only files without such keys are checked.
        // A lone surrogate in a key is written as U+FFFD, as Go's JSON decoder would have it.
        const utf8 = (k: string): string => Buffer.from(k, 'utf8').toString('utf8')
        if (Object.keys(rawMap).some((k) => /[\n]|="/.test(k))) continue
        const map = Object.fromEntries(Object.entries(rawMap).map(([k, v]) => [utf8(k), v]))
        const lines = f.data.toString('utf8').split('\n')
        const keys = lines.map((l) => l.slice(0, l.indexOf('="')))
        if (keys.some((k, j) => j > 0 && byteCompare(keys[j - 1]!, k) >= 0)) problems.push(`case ${i}: keys not byte-sorted`)
        for (const [j, l] of lines.entries()) {
          const back = goUnquote(l.slice(keys[j]!.length + 1))
          const want = Buffer.from(String(map[keys[j]!] ?? ''), 'utf8')
          if (!back.equals(want)) problems.push(`case ${i}: ${keys[j]} does not unquote to its value`)
        }
      }
    } catch (e) {
      refused++
      if (!(e instanceof InputError)) problems.push(`case ${i}: ${(e as Error).constructor.name}: ${(e as Error).message}`)
      else if (e.message.includes('\n')) problems.push(`case ${i}: a multi-line message`)
      else if (!/^volume "v", (item ".*"|defaultMode)|^spec\.|^metadata\./s.test(e.message)) problems.push(`case ${i}: the message names no item or field: ${e.message.slice(0, 200)}`)
    }
  }
  t.comment(`${rendered} rendered, ${refused} refused, in ${Date.now() - start} ms`)
  // Each pod has four random quantities, read or not, and one that does not parse refuses the
  // whole pod, as the API server would: fewer render than items alone would let through.
  t.ok(rendered > CASES / 20, 'a fair share renders')
  t.ok(refused > CASES / 10, 'a fair share is refused')
  t.same(problems.slice(0, 10), [], `${problems.length} problems`)
})
