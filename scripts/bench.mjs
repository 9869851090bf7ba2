#!/usr/bin/env node
// dapifs side by side with tmpfs (the kubelet's own medium: the physical limit), the FUSE ceiling
// (scripts/ceiling.c: C on libfuse 3's low-level API, serving from memory with dapifs's kernel
// caching: the most any FUSE filesystem can do) and the old floor (scripts/bench-floor.mjs on
// fuse-native's prebuilt libfuse 2 addon: the best any filesystem on fuse-native as shipped can
// do), on the same files: the example pod's downward API volume.
//
//   npm run bench                 the full run (about 4 minutes)
//   npm run bench -- --tiny       a few hundred operations, to check that it runs
//
// Readers are scripts/reader.c (C, pthreads), never a Node loop. The reader and the daemon are
// pinned to one CPU (taskset -c 0) so that the ratios are stable. Run as root (FUSE, allow_other).
import { spawn, execFile } from 'node:child_process'
import { mkdtempSync, mkdirSync, writeFileSync, renameSync, readFileSync, symlinkSync, chmodSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parsePodText } from '../dist/volume/input.js'
import { project } from '../dist/volume/projection.js'
import { parseAllocatableFlag } from '../dist/volume/allocatable.js'
import { Generations } from '../dist/volume/generation.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const tiny = process.argv.includes('--tiny')
const SECS = tiny ? 0.2 : 1.5
/** Rounds of read measurements, interleaved across the targets; the median of each is reported. */
const ROUNDS = tiny ? 1 : 5
const FLIP_SAMPLES = tiny ? 10 : 200
const FLIP_READ_SECS = tiny ? 0.5 : 5
const RSS_FLIPS = tiny ? 30 : 10_000
const CPU = process.env.DAPIFS_BENCH_CPU ?? '0'
const ALLOCATABLE = 'cpu=4,memory=8Gi'

const run = (cmd, args, timeout = 600_000) => new Promise((resolve) => {
  execFile(cmd, args, { timeout, maxBuffer: 256 << 20 }, (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, stdout, stderr }))
})
const pinned = (cmd, args) => run('taskset', ['-c', CPU, cmd, ...args])
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]

const tmp = mkdtempSync(path.join(os.tmpdir(), 'dapifs-bench-'))
const shm = mkdtempSync('/dev/shm/dapifs-bench-')
const children = []
const mounts = []

async function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM')
  await sleep(500)
  for (const m of mounts) await run('fusermount', ['-uz', m])
  rmSync(shm, { recursive: true, force: true })
  rmSync(tmp, { recursive: true, force: true })
}

/** A long-lived process whose output lines we can wait for. */
function start(cmd, args, env = process.env) {
  const child = spawn('taskset', ['-c', CPU, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env })
  children.push(child)
  const lines = []
  const waiters = []
  const feed = (d) => {
    lines.push(...d.toString().split('\n').filter(Boolean))
    waiters.splice(0).forEach((w) => w())
  }
  child.stdout.on('data', feed)
  child.stderr.on('data', feed)
  const waitFor = (re, from = 0, ms = 30_000) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}:\n${lines.join('\n')}`)), ms)
    const check = () => {
      const i = lines.findIndex((l, j) => j >= from && re.test(l))
      if (i >= 0) { clearTimeout(timer); resolve(lines[i]) } else waiters.push(check)
    }
    check()
  })
  return { child, lines, waitFor }
}

// The files: the example pod, rendered by the engine.
const podText = readFileSync(path.join(ROOT, 'examples/dapi-volume.yaml'), 'utf8')
const render = (text) => project(parsePodText(text, 'pod'), parsePodText(text, 'pod').volumes[0], { node: { allocatable: parseAllocatableFlag(ALLOCATABLE), labels: new Map() } })
const projection = render(podText)
const gen = new Generations().create(projection).name
const labelsOf = (text) => render(text).files.find((f) => f.path === 'labels').data
const withLabel = (k, v) => podText.replace('  labels:\n', `  labels:\n    ${k}: "${v}"\n`)

// 1. tmpfs, written the kubelet's way.
const tmpfsRoot = path.join(shm, 'vol')
mkdirSync(path.join(tmpfsRoot, gen), { recursive: true })
chmodSync(path.join(tmpfsRoot, gen), 0o755)
for (const f of projection.files) {
  const p = path.join(tmpfsRoot, gen, f.path)
  mkdirSync(path.dirname(p), { recursive: true })
  writeFileSync(p, f.data)
  chmodSync(p, f.mode)
}
symlinkSync(gen, path.join(tmpfsRoot, '..data'))
for (const top of new Set(projection.files.map((f) => f.path.split('/')[0]))) symlinkSync(`..data/${top}`, path.join(tmpfsRoot, top))

// 2. the old floor, serving the same layout.
const layout = path.join(tmp, 'layout.json')
writeFileSync(layout, JSON.stringify({ gen, files: Object.fromEntries(projection.files.map((f) => [f.path, { content: f.data.toString(), mode: f.mode }])) }))
const floorMnt = path.join(tmp, 'floor')
mkdirSync(floorMnt)
mounts.push(floorMnt)

// 3. the FUSE ceiling, serving the same layout (scripts/ceiling.c: its format).
const ceilingLayout = path.join(tmp, 'layout.txt')
{
  const lines = ['d 41777 /', `d 40755 /${gen}`, `l /..data ${gen}`]
  const dirs = new Set()
  for (const f of projection.files) {
    const parts = f.path.split('/')
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/')
      if (!dirs.has(d)) { dirs.add(d); lines.push(`d 40755 /${gen}/${d}`) }
    }
    lines.push(`f ${(0o100000 | f.mode).toString(8)} /${gen}/${f.path} ${f.data.toString('hex')}`)
  }
  for (const top of new Set(projection.files.map((f) => f.path.split('/')[0]))) lines.push(`l /${top} ..data/${top}`)
  writeFileSync(ceilingLayout, lines.join('\n') + '\n')
}
const ceilingMnt = path.join(tmp, 'ceiling')
mkdirSync(ceilingMnt)
mounts.push(ceilingMnt)

// 4. dapifs, on the same pod.
const podFile = path.join(tmp, 'pod.yaml')
writeFileSync(podFile, podText)
const dapifsMnt = path.join(tmp, 'dapifs')
mkdirSync(dapifsMnt)
mounts.push(dapifsMnt)

const writePod = (text) => { writeFileSync(podFile + '.tmp', text); renameSync(podFile + '.tmp', podFile) }
const rssKb = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1])
const cpuTicks = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return Number(f[11]) + Number(f[12]) }
const TICK_MS = 1000 / 100 // USER_HZ

/**
 * One run of the C reader. `rate` is per second of wall time; with the daemon's `pid` given (or
 * none, for tmpfs), `cpuRate` is per second of CPU time, the reader's and the daemon's together:
 * on a machine others share, wall time also counts what their processes took from CPU 0, and that
 * drifts from one run to the next; CPU time spent on the reads does not.
 */
async function reader(bin, mode, p, threads, secs, contents = false, pid = undefined) {
  const cpu0 = pid ? cpuTicks(pid) : 0
  const r = await pinned(bin, [mode, p, String(threads), String(secs), ...(contents ? ['--contents'] : [])])
  const daemonCpu = pid ? ((cpuTicks(pid) - cpu0) * TICK_MS) / 1000 : 0
  const out = { ops: 0, errors: 0, seconds: 1, p50: 0, p99: 0, cpu: 0, contents: new Map(), errnos: {} }
  for (const line of r.stdout.split('\n')) {
    const f = line.split(' ')
    if (f[0] === 'ops') Object.assign(out, { ops: +f[1], errors: +f[3], seconds: +f[5], p50: +f[7] / 1000, p99: +f[9] / 1000, cpu: +(f[13] ?? 0) })
    if (f[0] === 'content') out.contents.set(Buffer.from(f[2] ?? '', 'hex').toString(), +f[1])
    if (f[0] === 'errno') out.errnos[f[1]] = +f[2]
  }
  out.rate = out.ops / out.seconds
  out.cpuRate = out.ops / Math.max(out.cpu + daemonCpu, 1e-3)
  return out
}

async function requestCounts(proc) {
  const from = proc.lines.length
  proc.child.kill('SIGUSR2')
  const line = await proc.waitFor(/requests \{/, from)
  return JSON.parse(line.slice(line.indexOf('{')))
}
const total = (c) => Object.values(c).reduce((a, b) => a + b, 0)

async function main() {
  const bin = path.join(tmp, 'reader')
  const cc = await run('cc', ['-O2', '-pthread', '-o', bin, path.join(ROOT, 'scripts/reader.c')])
  if (cc.code !== 0) throw new Error(`cc: ${cc.stderr}`)
  const ceilingBin = path.join(tmp, 'ceiling-fs')
  const fuse3 = (await run('pkg-config', ['--cflags', '--libs', 'fuse3'])).stdout.trim().split(/\s+/).filter(Boolean)
  const cc2 = await run('cc', ['-O2', '-pthread', '-o', ceilingBin, path.join(ROOT, 'scripts/ceiling.c'), ...fuse3])
  if (cc2.code !== 0) throw new Error(`cc ceiling.c: ${cc2.stderr}`)
  const ceiling = start(ceilingBin, [ceilingMnt, ceilingLayout])
  await ceiling.waitFor(/^ready$/)
  // node-gyp-build loads fuse-native's prebuilt addon (libfuse 2) instead of ours.
  const floor = start(process.execPath, [path.join(ROOT, 'scripts/bench-floor.mjs'), floorMnt, layout], { ...process.env, PREBUILDS_ONLY: '1' })
  await floor.waitFor(/^ready$/)
  // Run as users run it: the executable, with the V8 flags of its shebang.
  const dapifs = start(path.join(ROOT, 'dist/main.js'), ['mount', dapifsMnt, '--pod-file', podFile, '--node-allocatable', ALLOCATABLE, '--count-requests'])
  await dapifs.waitFor(/ready: /)
  await sleep(200)
  const rssAfterMount = rssKb(dapifs.child.pid)
  const targets = { tmpfs: tmpfsRoot, floor: floorMnt, ceiling: ceilingMnt, dapifs: dapifsMnt }
  const results = { tmpfs: {}, floor: {}, ceiling: {}, dapifs: {} }
  const pids = { tmpfs: undefined, floor: floor.child.pid, ceiling: ceiling.child.pid, dapifs: dapifs.child.pid }
  for (const root of Object.values(targets)) await reader(bin, 'cat', path.join(root, 'labels'), 1, Math.min(SECS, 0.3)) // warm the caches
  // Interleaved rounds: on a small VM, whatever else runs drifts over minutes, and a target
  // measured only early or only late would carry that drift into the ratios.
  const samples = { tmpfs: {}, floor: {}, ceiling: {}, dapifs: {} }
  for (let round = 0; round < ROUNDS; round++) {
    for (const th of [1, 4]) {
      for (const [op, file] of [['cat', 'labels'], ['stat', 'labels'], ['readlink', '..data']]) {
        for (const [name, root] of Object.entries(targets)) {
          ;(samples[name][`${op}${th}`] ??= []).push(await reader(bin, op, path.join(root, file), th, SECS, false, pids[name]))
        }
      }
    }
  }
  for (const [name, metrics] of Object.entries(samples)) {
    for (const [metric, runs] of Object.entries(metrics)) results[name][metric] = [...runs].sort((a, b) => a.cpuRate - b.cpuRate)[Math.floor(runs.length / 2)]
  }
  // A ratio of two targets: the median of its rounds' ratios, each of two runs measured one right
  // after the other, so that what drifts on the machine between rounds drifts out.
  const ratio = (a, b, metric) => {
    const rs = samples[a][metric].map((r, i) => r.cpuRate / samples[b][metric][i].cpuRate).sort((x, y) => x - y)
    return rs[Math.floor(rs.length / 2)]
  }
  for (const [name, root] of Object.entries(targets)) {
    const r = results[name]
    const proc = name === 'floor' ? floor : name === 'ceiling' ? ceiling : name === 'dapifs' ? dapifs : undefined
    if (proc) {
      const before = await requestCounts(proc)
      const cpu0 = cpuTicks(proc.child.pid)
      const c = await reader(bin, 'cat', path.join(root, 'labels'), 1, SECS)
      const cpu1 = cpuTicks(proc.child.pid)
      const after = await requestCounts(proc)
      r.requestsPerCat = (total(after) - total(before)) / c.ops
      r.cpuPer1000 = ((cpu1 - cpu0) * TICK_MS) / (c.ops / 1000)
      r.requestMix = Object.fromEntries(Object.keys(after).map((k) => [k, ((after[k] - (before[k] ?? 0)) / c.ops).toFixed(2)]).filter(([, v]) => v !== '0.00'))
      const s = await reader(bin, 'stat', path.join(root, 'labels'), 1, SECS)
      r.requestsPerStat = (total(await requestCounts(proc)) - total(after)) / s.ops
    }
  }

  // dapifs alone: flip latency, from writing the pod file to the new bytes readable via labels.
  const latencies = []
  for (let i = 0; i < FLIP_SAMPLES; i++) {
    const text = withLabel('bench', `l${i}`)
    const waiter = pinned(bin, ['until', path.join(dapifsMnt, 'labels'), labelsOf(text).toString('hex'), '10'])
    await sleep(5)
    const t0 = nowUs()
    writePod(text)
    const seen = await waiter
    if (seen.code !== 0) throw new Error(`flip ${i} never became readable`)
    latencies.push((Number(seen.stdout.split(' ')[1]) - t0) / 1000)
  }

  // The same reads while flipping every 10 ms: errors and torn reads must be 0.
  const expected = new Set()
  const flipping = (async () => {
    const end = Date.now() + FLIP_READ_SECS * 1000
    let i = 0
    while (Date.now() < end) {
      const text = withLabel('flip', `f${i++}`)
      expected.add(labelsOf(text).toString())
      writePod(text)
      await sleep(10)
    }
    return i
  })()
  expected.add(labelsOf(withLabel('bench', `l${FLIP_SAMPLES - 1}`)).toString())
  const during = await reader(bin, 'cat', path.join(dapifsMnt, 'labels'), 4, FLIP_READ_SECS, true)
  const flipsWritten = await flipping
  const torn = [...during.contents.keys()].filter((c) => !expected.has(c)).length

  // Memory across many flips: sampled every 1,000 (a leak climbs; V8's collector oscillates),
  // growth counted from after a warm-up of 1,000 flips, when the heap has found its size.
  const flipTo = async (i) => {
    const from = dapifs.lines.length
    writePod(withLabel('rss', `r${i}`))
    await dapifs.waitFor(/flipped to/, from)
    if (dapifs.lines.length > 1000) dapifs.lines.splice(0, dapifs.lines.length - 10)
  }
  const WARMUP = tiny ? 10 : 1000
  const EVERY = tiny ? 10 : 1000
  for (let i = 0; i < WARMUP; i++) await flipTo(-1 - i)
  const rssSamples = [rssKb(dapifs.child.pid)]
  for (let i = 1; i <= RSS_FLIPS; i++) {
    await flipTo(i)
    if (i % EVERY === 0) rssSamples.push(rssKb(dapifs.child.pid))
  }
  const rssBefore = rssSamples[0]
  const rssAfter = rssSamples[rssSamples.length - 1]
  const rssMax = Math.max(...rssSamples)

  // The table.
  const f = (x, d = 0) => (x === undefined ? '-' : x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }))
  const rows = []
  const row = (name, get, d = 0, metric = undefined) => {
    const [t, fl, ce, da] = ['tmpfs', 'floor', 'ceiling', 'dapifs'].map((k) => get(results[k]))
    const x = (a, b) => (metric ? `${f(ratio(a, b, metric), 2)}×` : '-')
    rows.push([name, f(t, d), f(ce, d), f(da, d), f(fl, d), x('ceiling', 'tmpfs'), x('dapifs', 'ceiling'), x('dapifs', 'tmpfs'), metric ? `${f(ratio('dapifs', 'floor', metric), 1)}×` : '-'])
  }
  for (const th of [1, 4]) {
    row(`cat labels, ${th} thread${th > 1 ? 's' : ''} (ops/s)`, (r) => r[`cat${th}`].cpuRate, 0, `cat${th}`)
    row(`  p50 latency (µs)`, (r) => r[`cat${th}`].p50, 1)
    row(`  p99 latency (µs)`, (r) => r[`cat${th}`].p99, 1)
    row(`stat labels, ${th} thread${th > 1 ? 's' : ''} (ops/s)`, (r) => r[`stat${th}`].cpuRate, 0, `stat${th}`)
    row(`readlink ..data, ${th} thread${th > 1 ? 's' : ''} (ops/s)`, (r) => r[`readlink${th}`].cpuRate, 0, `readlink${th}`)
  }
  row('FUSE requests per cat', (r) => r.requestsPerCat, 2)
  row('FUSE requests per stat', (r) => r.requestsPerStat, 2)
  row('daemon CPU per 1,000 cats (ms)', (r) => r.cpuPer1000, 1)
  const widths = [34, 10, 10, 10, 11, 12, 13, 14, 14]
  const line = (cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('')
  console.log(`\ndapifs benchmark${tiny ? ' (--tiny: a few hundred operations; the figures mean little)' : ''}: ${os.cpus()[0].model}, ${os.cpus().length} CPUs, Linux ${os.release()}, Node ${process.version}; reader and daemons on CPU ${CPU}; reads: median of ${ROUNDS} interleaved ${SECS} s runs\n`)
  console.log(line(['', 'tmpfs', 'ceiling', 'dapifs', 'old floor', 'ceil÷tmpfs', 'dapifs÷ceil', 'dapifs÷tmpfs', 'dapifs÷floor']))
  for (const r of rows) console.log(line(r))
  console.log(`\nrequest mix per cat: ceiling ${JSON.stringify(results.ceiling.requestMix)}, dapifs ${JSON.stringify(results.dapifs.requestMix)}, old floor ${JSON.stringify(results.floor.requestMix)}`)
  console.log('ceiling: C on libfuse 3\'s low-level API (scripts/ceiling.c), serving the same layout from memory with dapifs\'s kernel caching: what the kernel\'s FUSE code allows')
  console.log('old floor: a minimal filesystem on fuse-native as shipped (prebuilt addon, libfuse 2), serving the same layout from precomputed buffers with the same mount options')
  console.log('ops/s: operations per second of CPU time, the reader\'s and the daemon\'s together (wall time would also count what other processes take from CPU 0); ratios: the median of the rounds\' ratios, each of two runs one right after the other')
  console.log('\ndapifs alone')
  const lines2 = [
    [`flip latency, pod file written -> labels readable (${FLIP_SAMPLES} flips)`, `p50 ${f(pct(latencies, 0.5), 2)} ms, p99 ${f(pct(latencies, 0.99), 2)} ms, max ${f(Math.max(...latencies), 2)} ms`],
    [`cat labels, 4 threads, flipping every 10 ms (${flipsWritten} changes)`, `${f(during.rate)} ops/s, ${during.errors} errors${during.errors ? ` (errno: count ${JSON.stringify(during.errnos)})` : ''}, ${torn} torn or mixed reads`],
    ['daemon RSS after mount', `${f(rssAfterMount / 1024, 1)} MB`],
    [`daemon RSS after ${f(WARMUP)} warm-up flips, then every ${f(EVERY)} of ${f(RSS_FLIPS)} more (MB)`, rssSamples.map((k) => f(k / 1024, 0)).join(' ')],
    [`daemon RSS growth over those ${f(RSS_FLIPS)} flips`, `${rssAfter >= rssBefore ? '+' : ''}${f((rssAfter - rssBefore) / 1024, 1)} MB (highest ${f(rssMax / 1024, 1)} MB)`],
  ]
  for (const [k, v] of lines2) console.log(`  ${k.padEnd(64)} ${v}`)
  const catRatio = ratio('dapifs', 'tmpfs', 'cat1')
  const statRatio = ratio('dapifs', 'tmpfs', 'stat1')
  const toCeiling = ['cat1', 'stat1', 'readlink1', 'cat4', 'stat4', 'readlink4'].map((m) => [m, ratio('dapifs', 'ceiling', m)])
  console.log('\ntargets')
  const target = (ok, text) => console.log(`  ${ok ? 'met   ' : 'MISSED'} ${text}`)
  target(toCeiling.every(([, r]) => r >= 0.97), `warm reads at 0.97× the FUSE ceiling or better, 1 and 4 threads: ${toCeiling.map(([m, r]) => `${m.replace(/\d/, ' $&')} ${f(r, 2)}×`).join(', ')}`)
  target(catRatio >= 0.5 && statRatio >= 0.5, `warm reads at 0.5× tmpfs or better, 1 thread: cat ${f(catRatio, 2)}×, stat ${f(statRatio, 2)}×`)
  target(results.dapifs.requestsPerCat < 0.005 && results.dapifs.requestsPerStat < 0.005, `no FUSE request for a warm cat or stat: ${f(results.dapifs.requestsPerCat, 2)} and ${f(results.dapifs.requestsPerStat, 2)}`)
  target(pct(latencies, 0.99) < 20, `flip latency p99 under 20 ms: ${f(pct(latencies, 0.99), 2)} ms`)
  target(during.errors === 0 && torn === 0, `no errors and no torn reads while flipping: ${during.errors} and ${torn}`)
  target(rssMax < 80 * 1024 && rssAfter - rssBefore < 5 * 1024, `RSS under 80 MB, growing under 5 MB over ${f(RSS_FLIPS)} flips: at most ${f(rssMax / 1024, 1)} MB, ${rssAfter >= rssBefore ? '+' : ''}${f((rssAfter - rssBefore) / 1024, 1)} MB`)
}

// Killed (a test's time limit, Ctrl-C): unmount and remove what it made, as at the end.
for (const signal of ['SIGTERM', 'SIGINT']) process.once(signal, () => cleanup().finally(() => process.exit(1)))
try {
  await main()
} finally {
  await cleanup()
}
