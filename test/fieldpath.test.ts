import t from 'tap'
import { extractFieldPath, formatMap, splitSubscript, checkFieldRef, qualifiedNameErrors } from '../lib/volume/fieldpath.js'
import type { Pod } from '../lib/volume/pod.js'

const pod: Pod = {
  name: 'my-pod', namespace: 'my-ns', uid: '6f4c2a8e-2b1d-4c7e-9a51-3d0f8e7b5c21',
  labels: new Map([['zone', 'us-est-coast'], ['cluster', 'test-cluster1'], ['rack', 'rack-22'], ['Www.k8s.io/test', 'x']]),
  annotations: new Map([['build', 'two'], ['builder', 'john-doe'], ['multi', 'c\nb\na'], ['Www.k8s.io/test', 'y']]),
  containers: [], volumeNames: [], volumes: [],
}

t.test('FormatMap: byte-sorted keys, %q values, no final newline', async (t) => {
  t.equal(formatMap(new Map([['key2', 'value2'], ['key1', 'value1']])), 'key1="value1"\nkey2="value2"')
  t.equal(formatMap(new Map([['a1', 'value1'], ['a2', 'value2'], ['multiline', 'c\nb\na']])),
    'a1="value1"\na2="value2"\nmultiline="c\\nb\\na"')
  t.equal(formatMap(new Map([['a', ''], ['z', ''], ['B', ''], ['_x', ''], ['Z.z/y', '']])),
    'B=""\nZ.z/y=""\n_x=""\na=""\nz=""', 'uppercase < _ < lowercase')
  t.equal(formatMap(new Map([['a-b', '1'], ['a', '2']])), 'a="2"\na-b="1"', 'keys sort, not lines: a before a-b')
  t.equal(formatMap(new Map()), '', 'an empty map is an empty file')
  // UTF-16 order would put U+FFFD before U+1F600; UTF-8 byte order puts it after.
  t.equal(formatMap(new Map([['\u{1f600}', '1'], ['\ufffd', '2']])), '\ufffd="2"\n\u{1f600}="1"')
  t.equal(formatMap(new Map([['k', 'say "hi"\\\t\u00e9\u{1f600}\u0000\u007f']])), 'k="say \\"hi\\"\\\\\\t\u00e9\u{1f600}\\x00\\x7f"')
})

t.test('every field path a volume accepts', async (t) => {
  const cases: [string, string][] = [
    ['metadata.name', 'my-pod'],
    ['metadata.namespace', 'my-ns'],
    ['metadata.uid', '6f4c2a8e-2b1d-4c7e-9a51-3d0f8e7b5c21'],
    ['metadata.labels', 'Www.k8s.io/test="x"\ncluster="test-cluster1"\nrack="rack-22"\nzone="us-est-coast"'],
    ['metadata.annotations', 'Www.k8s.io/test="y"\nbuild="two"\nbuilder="john-doe"\nmulti="c\\nb\\na"'],
    ["metadata.labels['zone']", 'us-est-coast'],
    ["metadata.labels['missing']", ''],
    ["metadata.annotations['multi']", 'c\nb\na'],
    ["metadata.annotations['missing']", ''],
    ["metadata.annotations['Www.k8s.io/test']", 'y'], // annotation keys are validated lowercased
  ]
  for (const [fp, want] of cases) t.equal(extractFieldPath(pod, fp), want, fp)
})

t.test('field path errors in the kubelet\'s words', async (t) => {
  t.throws(() => extractFieldPath(pod, 'metadata.whoops'), { message: 'unsupported fieldPath: metadata.whoops' })
  t.throws(() => extractFieldPath(pod, 'spec.nodeName'), { message: 'unsupported fieldPath: spec.nodeName' })
  t.throws(() => extractFieldPath(pod, "metadata.notexisting['x']"), { message: 'fieldPath "metadata.notexisting[\'x\']" does not support subscript' })
  t.throws(() => extractFieldPath(pod, "metadata.labels['Www.k8s.io/test']"), { message: /^invalid key subscript in metadata\.labels\['Www\.k8s\.io\/test'\]: prefix part a lowercase RFC 1123 subdomain/ })
  t.throws(() => extractFieldPath(pod, "metadata.labels['']"), { message: /^invalid key subscript in metadata\.labels\[''\]: name part must be non-empty;name part must consist/ })
  t.throws(() => checkFieldRef({ fieldPath: 'metadata.name', apiVersion: 'v2' }), { message: /^unsupported pod version: v2/ })
  t.throws(() => checkFieldRef({ fieldPath: 'status.podIP', apiVersion: 'v1' }), { message: /^unsupported fieldPath: status\.podIP \(a volume allows metadata\.name, / })
  t.throws(() => checkFieldRef({ fieldPath: '', apiVersion: 'v1' }), { message: 'fieldRef.fieldPath: is required' })
  t.doesNotThrow(() => checkFieldRef({ fieldPath: "metadata.annotations['Www.k8s.io/test']", apiVersion: 'v1' }))
})

t.test('SplitMaybeSubscriptedPath', async (t) => {
  t.same(splitSubscript("metadata.labels['key']"), ['metadata.labels', 'key'])
  t.same(splitSubscript("metadata.labels['']"), ['metadata.labels', ''])
  t.same(splitSubscript("metadata.annotations['a[b']c']"), ['metadata.annotations', "a[b']c"])
  t.same(splitSubscript("metadata.labels['['key']"), ['metadata.labels', "['key"])
  t.equal(splitSubscript("metadata.labels[ 'key' ]"), undefined)
  t.equal(splitSubscript("metadata.labels[']"), undefined)
  t.equal(splitSubscript("['key']"), undefined)
  t.equal(splitSubscript('metadata.labels'), undefined)
})

t.test('qualified names', async (t) => {
  for (const ok of ['a', 'A', 'a.b', 'a-b_c.d', 'example.com/Name', 'x'.repeat(63), `${'a'.repeat(253)}/b`]) t.same(qualifiedNameErrors(ok), [], ok)
  for (const bad of ['', '-a', 'a-', 'a/b/c', '/a', 'A.B/c', 'x'.repeat(64), `${'a'.repeat(254)}/b`, 'a b']) t.not(qualifiedNameErrors(bad).length, 0, bad)
})
