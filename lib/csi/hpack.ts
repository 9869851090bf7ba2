// HPACK (RFC 7541), as much as authority.ts needs: a decoder that keeps the sender's dynamic
// table, and an encoder that never uses one (every field a plain literal), so that a header block
// can be decoded, changed and re-encoded on the way through without the receiver's table ever
// holding anything. Names and values are bytes, held as latin1 strings.

export interface Field {
  name: string
  value: string
  /** Sent as "never indexed": kept so on the way through. */
  sensitive: boolean
}

export class HpackError extends Error {}

const STATIC: [string, string][] = [
  [':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'], [':path', '/index.html'],
  [':scheme', 'http'], [':scheme', 'https'], [':status', '200'], [':status', '204'], [':status', '206'],
  [':status', '304'], [':status', '400'], [':status', '404'], [':status', '500'], ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'], ['accept-language', ''], ['accept-ranges', ''], ['accept', ''],
  ['access-control-allow-origin', ''], ['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
  ['content-disposition', ''], ['content-encoding', ''], ['content-language', ''], ['content-length', ''],
  ['content-location', ''], ['content-range', ''], ['content-type', ''], ['cookie', ''], ['date', ''],
  ['etag', ''], ['expect', ''], ['expires', ''], ['from', ''], ['host', ''], ['if-match', ''],
  ['if-modified-since', ''], ['if-none-match', ''], ['if-range', ''], ['if-unmodified-since', ''],
  ['last-modified', ''], ['link', ''], ['location', ''], ['max-forwards', ''], ['proxy-authenticate', ''],
  ['proxy-authorization', ''], ['range', ''], ['referer', ''], ['refresh', ''], ['retry-after', ''],
  ['server', ''], ['set-cookie', ''], ['strict-transport-security', ''], ['transfer-encoding', ''],
  ['user-agent', ''], ['vary', ''], ['via', ''], ['www-authenticate', ''],
]

// The code lengths of symbols 0..255 and EOS (Appendix B). The code is canonical: codes are
// assigned in order of length, then of symbol, so the lengths are all the table needs.
const LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
]
const EOS = 256

/** A code of `len` bits, as one number: the decoding table's key. */
const codeKey = (len: number, code: number): number => len * 0x40000000 + code

/** code → symbol, keyed by codeKey. */
const DECODE = (() => {
  const order = LENGTHS.map((len, sym) => ({ len, sym })).sort((a, b) => a.len - b.len || a.sym - b.sym)
  const map = new Map<number, number>()
  let code = 0
  let len = order[0]!.len
  for (const e of order) {
    code <<= e.len - len
    len = e.len
    map.set(codeKey(len, code), e.sym)
    code++
  }
  return map
})()

export function huffmanDecode(bytes: Uint8Array): string {
  let out = ''
  let code = 0
  let len = 0
  for (const byte of bytes) {
    for (let bit = 7; bit >= 0; bit--) {
      code = (code << 1) | ((byte >> bit) & 1)
      len++
      const sym = DECODE.get(codeKey(len, code))
      if (sym === EOS) throw new HpackError('Huffman string contains EOS')
      if (sym !== undefined) {
        out += String.fromCharCode(sym)
        code = 0
        len = 0
      } else if (len > 30) {
        throw new HpackError('bad Huffman code')
      }
    }
  }
  // What is left is padding: under 8 bits, all ones (the start of EOS).
  if (len > 7 || code !== (1 << len) - 1) throw new HpackError('bad Huffman padding')
  return out
}

/** The receiving side of one connection's header compression: the sender's dynamic table. */
export class Decoder {
  private table: [string, string][] = [] // newest first
  private size = 0
  private maxSize: number

  /** maxSize: SETTINGS_HEADER_TABLE_SIZE as the receiver advertised it (4096 unless changed). */
  constructor(private readonly limit = 4096) {
    this.maxSize = limit
  }

  /**
   * The fields of one header block. Throws HpackError on a malformed block, and when the fields
   * add up (name, value and 32 each, as SETTINGS_MAX_HEADER_LIST_SIZE counts) to over `maxList`.
   */
  decode(block: Uint8Array, maxList = Infinity): Field[] {
    const fields: Field[] = []
    let listSize = 0
    const counted = (f: Field): Field => {
      listSize += f.name.length + f.value.length + 32
      if (listSize > maxList) throw new HpackError(`header list over ${maxList} bytes`)
      return f
    }
    let pos = 0
    const int = (prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1
      if (pos >= block.length) throw new HpackError('truncated integer')
      let n = block[pos++]! & mask
      if (n < mask) return n
      let shift = 0
      for (;;) {
        if (pos >= block.length) throw new HpackError('truncated integer')
        const b = block[pos++]!
        n += (b & 0x7f) * 2 ** shift
        shift += 7
        if (!(b & 0x80)) return n
        if (shift > 28) throw new HpackError('integer too large')
      }
    }
    const str = (): string => {
      if (pos >= block.length) throw new HpackError('truncated string')
      const huffman = (block[pos]! & 0x80) !== 0
      const n = int(7)
      if (pos + n > block.length) throw new HpackError('truncated string')
      const bytes = block.subarray(pos, pos + n)
      pos += n
      return huffman ? huffmanDecode(bytes) : Buffer.from(bytes).toString('latin1')
    }
    const entry = (index: number): [string, string] => {
      if (index >= 1 && index <= STATIC.length) return STATIC[index - 1]!
      const e = this.table[index - STATIC.length - 1]
      if (index === 0 || !e) throw new HpackError(`index ${index} is not in the table`)
      return e
    }
    let fieldSeen = false
    while (pos < block.length) {
      const b = block[pos]!
      if (b & 0x80) {
        const [name, value] = entry(int(7))
        fields.push(counted({ name, value, sensitive: false }))
        fieldSeen = true
      } else if (b & 0x40) {
        const index = int(6)
        const name = index === 0 ? str() : entry(index)[0]
        const value = str()
        fields.push(counted({ name, value, sensitive: false }))
        this.add(name, value)
        fieldSeen = true
      } else if (b & 0x20) {
        if (fieldSeen) throw new HpackError('table size update after a field')
        const n = int(5)
        if (n > this.limit) throw new HpackError(`table size ${n} over the limit ${this.limit}`)
        this.maxSize = n
        this.evict(0)
      } else {
        const sensitive = (b & 0x10) !== 0
        const index = int(4)
        const name = index === 0 ? str() : entry(index)[0]
        fields.push(counted({ name, value: str(), sensitive }))
        fieldSeen = true
      }
    }
    return fields
  }

  private add(name: string, value: string): void {
    const size = name.length + value.length + 32
    this.evict(size)
    if (size > this.maxSize) return // an entry larger than the table empties it (4.4)
    this.table.unshift([name, value])
    this.size += size
  }

  private evict(room: number): void {
    while (this.table.length > 0 && this.size + room > this.maxSize) {
      const [n, v] = this.table.pop()!
      this.size -= n.length + v.length + 32
    }
  }
}

/** Encodes fields as literals that are never added to the receiver's table, without Huffman. */
export function encode(fields: Field[]): Buffer {
  const parts: Buffer[] = []
  const int = (n: number, prefixBits: number, first: number): void => {
    const mask = (1 << prefixBits) - 1
    if (n < mask) { parts.push(Buffer.from([first | n])); return }
    const bytes = [first | mask]
    n -= mask
    while (n >= 0x80) { bytes.push((n & 0x7f) | 0x80); n = Math.floor(n / 0x80) }
    bytes.push(n)
    parts.push(Buffer.from(bytes))
  }
  const str = (s: string): void => {
    int(s.length, 7, 0)
    parts.push(Buffer.from(s, 'latin1'))
  }
  for (const f of fields) {
    parts.push(Buffer.from([f.sensitive ? 0x10 : 0x00]))
    str(f.name)
    str(f.value)
  }
  return Buffer.concat(parts)
}
