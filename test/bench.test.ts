// The benchmark runs (on its tiny setting: a few hundred operations) and prints every row.
// Its figures are not checked here: speed targets live in the benchmark, never in a test.
import t from 'tap'
import { run } from './fixtures/daemon.js'

t.test('npm run bench -- --tiny prints the whole table', async (t) => {
  const r = await run(process.execPath, ['scripts/bench.mjs', '--tiny'], { timeoutMs: 280_000 })
  t.equal(r.code, 0, r.stderr)
  const out = r.stdout.toString()
  for (const row of [
    /^cat labels, 1 thread \(ops\/s\)\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+[\d,]+\s+[\d.]+×\s+[\d.]+×\s+[\d.]+×\s+[\d.]+×$/m,
    /^cat labels, 4 threads \(ops\/s\)/m, /^stat labels, 1 thread/m, /^stat labels, 4 threads/m,
    /^readlink \.\.data, 1 thread/m, /^readlink \.\.data, 4 threads/m, /^\s+p50 latency/m, /^\s+p99 latency/m,
    /^FUSE requests per cat\s+-\s+[\d.]+\s+[\d.]+\s+[\d.]+/m, /^FUSE requests per stat\s+-\s+[\d.]+\s+[\d.]+\s+[\d.]+/m, /^daemon CPU per 1,000 cats/m,
    /flip latency, pod file written -> labels readable \(\d+ flips\)\s+p50 [\d.]+ ms, p99 [\d.]+ ms/,
    /flipping every 10 ms \(\d+ changes\)\s+[\d,]+ ops\/s, 0 errors, 0 torn or mixed reads/,
    /daemon RSS after mount\s+[\d.]+ MB/, /daemon RSS after [\d,]+ warm-up flips/, /daemon RSS growth over those [\d,]+ flips/,
    /warm reads at 0\.97× the FUSE ceiling or better/, /warm reads at 0\.5× tmpfs or better/, /no FUSE request for a warm cat or stat/, /flip latency p99 under 20 ms/, /RSS under 80 MB/,
  ]) t.match(out, row)
})
