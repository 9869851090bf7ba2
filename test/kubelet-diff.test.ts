// The engine against the kubelet's own code: random pods (test/fixtures/gen.ts) rendered by
// dapifs and by scripts/kubelet-diff (Kubernetes 1.20.2's fieldpath and resource packages and
// the API server's defaulting, built with Debian's Go), compared byte for byte.
//
// One difference is expected: printability of code points assigned after Go's Unicode version
// (the harness's Go 1.19 has Unicode 13), so values draw only from code points both sides agree
// on. Quantities beyond int64 are compared too: their wrapped results must match.
// Without Go and the Kubernetes source (scripts/k8s-source.sh) the test is skipped, except in
// CI, where .ci/run provides both.
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { allCodePoints, genAllocatable, genPod, Rng } from './fixtures/gen.js'
import { readPod, pickVolume } from '../lib/volume/pod.js'
import { project } from '../lib/volume/projection.js'
import { allocatableFromNode } from '../lib/volume/allocatable.js'
import { isPrint } from '../lib/volume/quote.js'

const CASES = Number(process.env.DAPIFS_DIFF_CASES ?? 3000)
const SEED = Number(process.env.DAPIFS_DIFF_SEED ?? 20261121)

function harness(): string | undefined {
  const r = spawnSync('bash', ['scripts/kubelet-diff/build.sh'], { encoding: 'utf8', timeout: 280_000 })
  if (r.status === 0) return r.stdout.trim()
  const why = (r.stderr || String(r.error)).trim().split('\n').slice(-3).join(' / ')
  if (process.env.CI) t.fail(`cannot build the kubelet-diff harness in CI: ${why}`)
  else t.test('against the kubelet', { skip: `harness unavailable (needs golang-go and scripts/k8s-source.sh): ${why}` }, async () => {})
  return undefined
}

const bin = harness()
if (bin) {
  t.test(`${CASES} random volumes render as the kubelet renders them (seed ${SEED})`, async (t) => {
    const goVersion = execFileSync(bin, ['unicode-version'], { encoding: 'utf8' }).trim()
    const cps = allCodePoints()
    const goPrint = execFileSync(bin, ['isprint'], { input: cps.join('\n') + '\n', encoding: 'utf8' }).trim().split('\n')
    const agreed = cps.filter((c, i) => (goPrint[i] === '1') === isPrint(c))
    t.comment(`Go Unicode ${goVersion}: ${cps.length - agreed.length} of ${cps.length} sampled code points differ in printability from Node's tables; values avoid them`)

    const rng = new Rng(SEED)
    const cases = Array.from({ length: CASES }, () => ({ pod: genPod(rng, { codePoints: agreed }), allocatable: genAllocatable(rng) }))
    const out = execFileSync(bin, { input: cases.map((c) => JSON.stringify(c)).join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 30 })
      .trim().split('\n').map((l) => JSON.parse(l) as { files?: Record<string, { data: string; mode: number }>; error?: string })
    t.equal(out.length, cases.length, 'the harness answered every case')

    let compared = 0, bothFailed = 0
    const mismatches: string[] = []
    cases.forEach((c, i) => {
      const go = out[i]!
      let ours: Record<string, { data: string; mode: number }> | undefined
      let ourError: string | undefined
      try {
        const pod = readPod(c.pod)
        const p = project(pod, pickVolume(pod), { allocatable: allocatableFromNode(c.allocatable) })
        ours = Object.fromEntries(p.files.map((f) => [f.path, { data: f.data.toString('base64'), mode: f.mode }]))
      } catch (e) {
        ourError = (e as Error).message
      }
      if (go.error !== undefined && ourError !== undefined) { bothFailed++; return }
      const same = go.error === undefined && ours !== undefined &&
        JSON.stringify(Object.entries(go.files ?? {}).sort()) === JSON.stringify(Object.entries(ours).sort())
      if (same) { compared++; return }
      mismatches.push(`case ${i}: kubelet ${JSON.stringify(go)} dapifs ${ourError ?? JSON.stringify(ours)} pod ${JSON.stringify(c)}`)
    })
    t.comment(`${compared} identical, ${bothFailed} refused by both`)
    t.ok(compared > CASES / 2, 'most cases render')
    t.ok(bothFailed > 0, 'some cases fail on both sides (missing container, bad subscript key)')
    t.same(mismatches.slice(0, 5), [], `${mismatches.length} mismatches`)
  })
}
