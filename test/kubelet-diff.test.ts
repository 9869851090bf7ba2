// The engine against the kubelet's own code, on each supported release that is built here:
// random pods (test/fixtures/gen.ts) rendered by dapifs as that release's kubelet and by
// scripts/kubelet-diff built against that release (its API server's defaulting and volume
// validation, then its kubelet's downwardapi.CollectData, built with the Go its kubelet is built
// with), compared byte for byte: files, modes, and which pods are refused.
//
// Nothing is left out: values draw from code points Unicode assigned after 13.0 too, which the two
// releases' Gos print differently, and the pods use what newer releases added (hugepages in a
// volume, which 1.20's API server refuses; pod-level resources; a resized pod's status).
// Quantities beyond int64 are compared too: their wrapped results must match. First, dapifs's
// printable table for the release (lib/volume/printable.ts) must be its Go's strconv.IsPrint at
// every code point.
// Without Go and the Kubernetes source (scripts/k8s-source.sh) or modules the test is skipped,
// except in CI, where .ci/run provides them.
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { genAllocatable, genPod, Rng } from './fixtures/gen.js'
import { readPod, pickVolume } from '../lib/volume/pod.js'
import { project } from '../lib/volume/projection.js'
import { allocatableFromNode } from '../lib/volume/allocatable.js'
import { isPrint } from '../lib/volume/quote.js'
import { parseRelease } from '../lib/volume/release.js'

const CASES = Number(process.env.DAPIFS_DIFF_CASES ?? 3000)
const SEED = Number(process.env.DAPIFS_DIFF_SEED ?? 20261121)
const RELEASES = (process.env.DAPIFS_DIFF_RELEASES ?? '1.20.2,1.37.2').split(',')

function harness(release: string): string | undefined {
  const r = spawnSync('bash', ['scripts/kubelet-diff/build.sh', release], { encoding: 'utf8', timeout: 580_000 })
  if (r.status === 0) return r.stdout.trim()
  const why = (r.stderr || String(r.error)).trim().split('\n').slice(-3).join(' / ')
  if (process.env.CI) t.fail(`cannot build the kubelet-diff harness for ${release} in CI: ${why}`)
  else t.test(`against the kubelet of ${release}`, { skip: `harness unavailable (needs Go and the release's source or modules): ${why}` }, async () => {})
  return undefined
}

interface Out { files?: Record<string, { data: string; mode: number }>; invalid?: string; error?: string }

for (const name of RELEASES) {
  const bin = harness(name)
  if (!bin) continue
  const release = parseRelease(name, 'DAPIFS_DIFF_RELEASES')

  t.test(`${name}: dapifs's printable table is its Go's strconv.IsPrint at every code point`, async (t) => {
    t.equal(execFileSync(bin, ['version'], { encoding: 'utf8' }).trim(), name, 'the harness is built against the release')
    const goUnicode = execFileSync(bin, ['unicode-version'], { encoding: 'utf8' }).trim()
    t.equal(release.printable.unicode, goUnicode, `Unicode ${goUnicode}`)
    const cps = Array.from({ length: 0x110000 }, (_, i) => i)
    const goPrint = execFileSync(bin, ['isprint'], { input: cps.join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 26 }).split('\n')
    const differ = cps.filter((c) => (goPrint[c] === '1') !== isPrint(c, release.printable))
    t.same(differ.slice(0, 10).map((c) => c.toString(16)), [], `${differ.length} code points differ`)
  })

  t.test(`${name}: ${CASES} random volumes render as its kubelet renders them (seed ${SEED})`, async (t) => {
    const rng = new Rng(SEED)
    const cases = Array.from({ length: CASES }, () => ({ pod: genPod(rng), allocatable: genAllocatable(rng) }))
    // stderr: CollectData's own klog lines, one per failed item.
    const out = execFileSync(bin, { input: cases.map((c) => JSON.stringify(c)).join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'pipe'] })
      .trim().split('\n').map((l) => JSON.parse(l) as Out)
    t.equal(out.length, cases.length, 'the harness answered every case')

    let compared = 0, bothFailed = 0, bothInvalid = 0, hugePages = 0
    const mismatches: string[] = []
    cases.forEach((c, i) => {
      const go = out[i]!
      let ours: Record<string, { data: string; mode: number }> | undefined
      let ourError: string | undefined
      try {
        const pod = readPod(c.pod)
        const p = project(pod, pickVolume(pod), { node: { allocatable: allocatableFromNode(c.allocatable), labels: new Map() }, release })
        ours = Object.fromEntries(p.files.map((f) => [f.path, { data: f.data.toString('base64'), mode: f.mode }]))
      } catch (e) {
        ourError = (e as Error).message
      }
      const mismatch = (): void => { mismatches.push(`case ${i}: kubelet ${JSON.stringify(go)} dapifs ${ourError ?? JSON.stringify(ours)} pod ${JSON.stringify(c)}`) }
      if (go.invalid !== undefined) {
        if (ourError === undefined) return mismatch()
        // Where a release's API server refuses hugepages, dapifs says what it says.
        const m = /Unsupported value: "(limits|requests)\.hugepages-[^"]*": supported values: "[^"]*"(, "[^"]*")*/.exec(go.invalid)
        // (Its first problem may be another item's: dapifs names the first it finds.)
        if (m && ourError.includes('hugepages')) {
          if (!ourError.includes(`resourceFieldRef.resource: ${m[0]}`)) return mismatch()
          hugePages++
        }
        bothInvalid++
        return
      }
      if (go.error !== undefined && ourError !== undefined) { bothFailed++; return }
      const same = go.error === undefined && ours !== undefined &&
        JSON.stringify(Object.entries(go.files ?? {}).sort()) === JSON.stringify(Object.entries(ours).sort())
      if (same) { compared++; return }
      mismatch()
    })
    t.comment(`${compared} identical, ${bothInvalid} refused by the API server and dapifs (${hugePages} for hugepages), ${bothFailed} failed by the kubelet and dapifs`)
    t.ok(compared > CASES / 3, 'many cases render')
    t.ok(bothFailed > 0, 'some cases fail on both sides (missing container, bad subscript key)')
    if (!release.hugePagesInVolumes) t.ok(hugePages > 0, 'its API server refuses hugepages, and so does dapifs, in its words')
    t.same(mismatches.slice(0, 5), [], `${mismatches.length} mismatches`)
  })
}
