// Go's strconv.Quote (what fmt's %q does to a string), reproduced byte for byte.
//
// The kubelet writes label and annotation values with %q, and it quotes the raw UTF-8 bytes of
// the value: an invalid byte becomes \xNN, one per byte, and is never turned into U+FFFD first.
// So this works on bytes, not on a JS string.
//
// "Printable" is Go's strconv.IsPrint: categories L, M, N, P, S, plus the ASCII space, as the
// Unicode tables of the Go that built the kubelet have them. A kubelet built with Go 1.19 escapes
// code points Unicode assigned since 13.0 (U+1FAE8 is \U0001fae8 there, and literal under Go
// 1.26), so the table is the release's (release.ts), generated from each Go (printable.ts), never
// Node's own: Node's Unicode is neither.

import { NEWEST } from './release.js'
import type { PrintableTable } from './printable.js'

const HEX = '0123456789abcdef'

/** Go's utf8.DecodeRune: returns [rune, width]; an invalid sequence is [-1, 1]. */
export function decodeRune(b: Uint8Array, i: number): [number, number] {
  const b0 = b[i]!
  if (b0 < 0x80) return [b0, 1]
  const cont = (j: number, lo = 0x80, hi = 0xbf): number => {
    const x = b[i + j]
    return x !== undefined && x >= lo && x <= hi ? x & 0x3f : -1
  }
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    const c1 = cont(1)
    return c1 < 0 ? [-1, 1] : [((b0 & 0x1f) << 6) | c1, 2]
  }
  if (b0 >= 0xe0 && b0 <= 0xef) {
    // E0 excludes overlong forms, ED excludes UTF-16 surrogates.
    const c1 = b0 === 0xe0 ? cont(1, 0xa0) : b0 === 0xed ? cont(1, 0x80, 0x9f) : cont(1)
    const c2 = c1 < 0 ? -1 : cont(2)
    return c2 < 0 ? [-1, 1] : [((b0 & 0x0f) << 12) | (c1 << 6) | c2, 3]
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    // F0 excludes overlong forms, F4 stops at U+10FFFF.
    const c1 = b0 === 0xf0 ? cont(1, 0x90) : b0 === 0xf4 ? cont(1, 0x80, 0x8f) : cont(1)
    const c2 = c1 < 0 ? -1 : cont(2)
    const c3 = c2 < 0 ? -1 : cont(3)
    return c3 < 0 ? [-1, 1] : [((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3, 4]
  }
  return [-1, 1]
}

/** strconv.IsPrint in the Go of the table: a binary search of its ranges above ASCII. */
export function isPrint(r: number, table: PrintableTable = NEWEST.printable): boolean {
  if (r < 0x80) return r >= 0x20 && r < 0x7f
  const ranges = table.ranges
  let lo = 0, hi = ranges.length / 2 - 1
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    if (r < ranges[2 * mid]!) hi = mid - 1
    else if (r > ranges[2 * mid + 1]!) lo = mid + 1
    else return true
  }
  return false
}

function hex(r: number, digits: number): string {
  let s = ''
  for (let shift = (digits - 1) * 4; shift >= 0; shift -= 4) s += HEX[(r >> shift) & 0xf]
  return s
}

const SHORT: Record<number, string> = {
  0x07: '\\a', 0x08: '\\b', 0x0c: '\\f', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t', 0x0b: '\\v',
}

/** Printable ASCII that %q leaves as it is: everything from space to '~' but '"' and '\\'. */
const plain = (c: number): boolean => c >= 0x20 && c < 0x7f && c !== 0x22 && c !== 0x5c

/** strconv.Quote of the bytes, in the Go of the table: the result is always valid UTF-8. */
export function goQuote(value: Uint8Array | string, table: PrintableTable = NEWEST.printable): string {
  const b = typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  let out = '"'
  for (let i = 0; i < b.length;) {
    // A run of plain ASCII goes in one piece: annotation values are mostly that, and large.
    if (plain(b[i]!)) {
      let j = i + 1
      while (j < b.length && plain(b[j]!)) j++
      out += b.toString('latin1', i, j)
      i = j
      continue
    }
    const [r, width] = decodeRune(b, i)
    if (r < 0) {
      out += '\\x' + hex(b[i]!, 2)
    } else if (r === 0x22 || r === 0x5c) {
      out += '\\' + String.fromCharCode(r)
    } else if (isPrint(r, table)) {
      out += String.fromCodePoint(r)
    } else if (SHORT[r] !== undefined) {
      out += SHORT[r]
    } else if (r < 0x20 || r === 0x7f) {
      out += '\\x' + hex(r, 2)
    } else if (r < 0x10000) {
      out += '\\u' + hex(r, 4)
    } else {
      out += '\\U' + hex(r, 8)
    }
    i += width
  }
  return out + '"'
}
