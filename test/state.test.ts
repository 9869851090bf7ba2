// The state directory's records, read back as a restarted agent reads them (state.ts): a record
// whose bytes are not what it names, in size or in content, is refused with its reason, never
// served with other bytes.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { VolumeStore, type VolumeRecord } from '../lib/csi/state.js'
import { Generations } from '../lib/volume/generation.js'

const target = '/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/podinfo/mount'
const files = [
  { path: 'labels', mode: 0o644, data: Buffer.from('app="web"') },
  { path: 'meta/name', mode: 0o644, data: Buffer.from('web') },
  { path: 'same', mode: 0o644, data: Buffer.from('app="web"') },
]
const record: VolumeRecord = {
  volumeId: 'v1', target, volumeContext: { items: '- {path: labels, fieldRef: {fieldPath: metadata.labels}}' }, seen: 'then', kubelet: '1.37',
  generation: new Generations().create({ files }),
}
const hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** A saved record, its blob of `data` changed by `change`, loaded again: the records, and what was said. */
async function loadAfter(t: Test, change?: (blob: string) => void): Promise<{ records: VolumeRecord[]; bad: string[] }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dapifs-state-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  await new VolumeStore(dir).save(record)
  const key = readdirSync(dir).find((n) => !n.endsWith('.json'))!
  change?.(path.join(dir, key, hex(files[0]!.data)))
  const bad: string[] = []
  const records = await new VolumeStore(dir).load((_, why) => bad.push(why))
  return { records, bad }
}

t.test('a record and its bytes read back as saved', async (t) => {
  const { records, bad } = await loadAfter(t)
  t.same(bad, [])
  t.equal(records.length, 1)
  const r = records[0]!
  t.equal(r.generation.name, record.generation.name)
  t.same(r.generation.projection.files.map((f) => [f.path, f.mode, f.data.toString()]), files.map((f) => [f.path, f.mode, f.data.toString()]))
  t.same([r.volumeId, r.target, r.volumeContext, r.seen, r.kubelet], [record.volumeId, record.target, record.volumeContext, record.seen, record.kubelet])
})

t.test('bytes of the right size but not the ones named are refused', async (t) => {
  const { records, bad } = await loadAfter(t, (blob) => writeFileSync(blob, 'app="evil"'.slice(0, files[0]!.data.length)))
  t.same(records, [])
  t.match(bad, [/file "labels": its bytes do not match its hash/])
})

t.test('longer or shorter bytes are refused', async (t) => {
  for (const data of ['app="web" and more', 'app']) {
    const { records, bad } = await loadAfter(t, (blob) => writeFileSync(blob, data))
    t.same(records, [], data)
    t.match(bad, [/file "labels": its bytes do not match its size/], data)
  }
})

t.test('missing bytes are refused', async (t) => {
  const { records, bad } = await loadAfter(t, (blob) => rmSync(blob))
  t.same(records, [])
  t.match(bad, [/file "labels": its bytes are missing \(ENOENT\)/])
})
