// Reading YAML and JSON manifests (pod files, items files).
//
// The parser is js-yaml, the one @kubernetes/client-node ships and uses in its loadYaml. We use
// it directly for two reasons. First, kubectl reads YAML as YAML 1.1, where `defaultMode: 0644`
// is octal 420, while js-yaml's YAML 1.2 reads decimal 644: integers are resolved here as
// kubectl's parser does (Go's ParseInt with base 0, underscores dropped). Second, client-node's
// typed deserializer throws messages like "data is not iterable" on a malformed pod; we keep
// the plain JSON and check it field by field (pod.ts), so errors name the field.

import yaml from 'js-yaml'
import { InputError, type Json } from './shape.js'

const GO_INT = /^[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$/

const yaml11Int = new yaml.Type('tag:yaml.org,2002:int', {
  kind: 'scalar',
  resolve: (data: unknown) => typeof data === 'string' && GO_INT.test(data.replaceAll('_', '')),
  construct: (data: string) => {
    const plain = data.replaceAll('_', '')
    const negative = plain.startsWith('-')
    const digits = plain.replace(/^[-+]/, '')
    const prefixed = /^0[0-7]+$/.test(digits) ? '0o' + digits.slice(1) : digits
    const n = BigInt(prefixed.toLowerCase())
    const v = negative ? -n : n
    // Beyond 2^53 a number would round; a quantity keeps every digit as a string.
    return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()
  },
})

const SCHEMA = yaml.DEFAULT_SCHEMA.extend({ implicit: [yaml11Int] })

/** Thrown from js-yaml's listener at the first anchor, which ends the parse there. */
class AnchorRefused extends Error {}

/**
 * Every document in a YAML or JSON text (empty documents dropped). `anchors: 'refused'` stops at
 * the first anchor (`&a`), and so before any alias (`*a`) to it: for text from a pod author,
 * where a few lines of aliases would stand for thousands of items.
 */
export function parseManifest(text: string, where: string, opts: { anchors?: 'refused' } = {}): Json[] {
  const listener = opts.anchors === 'refused'
    ? (event: yaml.EventType, state: yaml.State): void => {
      // js-yaml's State type leaves out the node's anchor, which its loader sets on every node.
      const anchor = (state as unknown as { anchor: string | null }).anchor
      if (event === 'close' && anchor !== null) throw new AnchorRefused(anchor)
    }
    : undefined
  try {
    return yaml.loadAll(text, null, { schema: SCHEMA, filename: where, ...(listener ? { listener } : {}) }).filter((d) => d !== null && d !== undefined)
  } catch (e) {
    if (e instanceof AnchorRefused) {
      throw new InputError(where, `YAML anchors and aliases (&${e.message}, *${e.message}) are not allowed here: write each item out`)
    }
    const msg = e instanceof yaml.YAMLException ? e.reason + (e.mark ? ` at line ${e.mark.line + 1}, column ${e.mark.column + 1}` : '') : String(e)
    throw new InputError(where, `not valid YAML or JSON: ${msg}`)
  }
}

/**
 * The one object a file holds. A `kind: List` (as `kubectl get -o yaml` prints for several
 * objects) or a multi-document file must hold exactly one object of the kind wanted.
 */
export function parseSingle(text: string, where: string, want: string, isWanted: (doc: Json) => boolean): Json {
  const docs = parseManifest(text, where).flatMap((d) => {
    const o = d as { kind?: unknown; items?: unknown }
    return o && o.kind === 'List' && Array.isArray(o.items) ? o.items as Json[] : [d]
  })
  if (docs.length === 0) throw new InputError(where, `is empty; expected ${want}`)
  const wanted = docs.filter(isWanted)
  if (wanted.length === 1) return wanted[0]
  if (docs.length === 1) return docs[0] // let the reader name what is wrong with it
  throw new InputError(where, `holds ${docs.length} objects with ${wanted.length} of them ${want}; expected exactly one`)
}
