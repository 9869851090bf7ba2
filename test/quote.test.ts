import t from 'tap'
import { goQuote, decodeRune } from '../lib/volume/quote.js'

const b = (...bytes: number[]): Buffer => Buffer.from(bytes)

t.test('Go %q of strings', async (t) => {
  const cases: [string | Buffer, string][] = [
    ['', '""'],
    ['value1', '"value1"'],
    ['say "hi"', '"say \\"hi\\""'],
    ['back\\slash', '"back\\\\slash"'],
    ["it's", '"it\'s"'],
    ['c\nb\na', '"c\\nb\\na"'],
    ['\x07\b\f\n\r\t\v', '"\\a\\b\\f\\n\\r\\t\\v"'],
    ['\x00\x01\x1f', '"\\x00\\x01\\x1f"'],
    ['\x7f', '"\\x7f"'],
    [' ', '" "'],
    ['é 日本語', '"é 日本語"'],
    ['😀', '"😀"'],
    ['e\u0301', '"e\u0301"'], // combining mark: printable
    ['\u0080\u009f', '"\\u0080\\u009f"'], // C1 controls
    ['\u00a0', '"\\u00a0"'], // NBSP is a space separator, not printable
    ['\u00ad', '"\\u00ad"'], // soft hyphen (Cf)
    ['\u200b\u200d\u2028\u2060\u3000\ufeff', '"\\u200b\\u200d\\u2028\\u2060\\u3000\\ufeff"'],
    ['\ue000', '"\\ue000"'], // private use
    ['\u0378', '"\\u0378"'], // unassigned
    ['\u{10ffff}', '"\\U0010ffff"'],
    ['\u{e0001}', '"\\U000e0001"'],
    ['\u{f0000}', '"\\U000f0000"'],
    ['\u{1d173}', '"\\U0001d173"'],
    ['\ufffd', '"\ufffd"'], // a literal U+FFFD is valid and printable
    // invalid UTF-8: one \xNN per offending byte
    [b(0xff), '"\\xff"'],
    [b(0x80), '"\\x80"'],
    [b(0x61, 0xc3), '"a\\xc3"'], // truncated sequence
    [b(0xc0, 0xaf), '"\\xc0\\xaf"'], // overlong
    [b(0xe0, 0x80, 0xaf), '"\\xe0\\x80\\xaf"'], // overlong, 3 bytes
    [b(0xed, 0xa0, 0x80), '"\\xed\\xa0\\x80"'], // UTF-16 surrogate
    [b(0xf4, 0x90, 0x80, 0x80), '"\\xf4\\x90\\x80\\x80"'], // above U+10FFFF
    [b(0xf5, 0x80), '"\\xf5\\x80"'],
    [b(0xe2, 0x82), '"\\xe2\\x82"'],
    [b(0xe2, 0x82, 0xac), '"€"'],
    [b(0xf0, 0x9f, 0x98), '"\\xf0\\x9f\\x98"'],
    [b(0x22, 0xff, 0x5c), '"\\"\\xff\\\\"'],
  ]
  for (const [input, want] of cases) {
    // Named by hex: some inputs (U+2028) would break TAP's line format.
    t.equal(goQuote(input), want, `quote bytes ${Buffer.from(input).toString('hex') || '(empty)'}`)
  }
})

t.test('the quoted text is valid UTF-8 and reversible by JSON for ASCII escapes', async (t) => {
  const q = goQuote(b(0xff, 0x41))
  t.equal(Buffer.from(q, 'utf8').toString('utf8'), q)
})

t.test('strict UTF-8 decoding, as Go', async (t) => {
  t.same(decodeRune(b(0x41), 0), [0x41, 1])
  t.same(decodeRune(b(0xc2, 0xa9), 0), [0xa9, 2])
  t.same(decodeRune(b(0xc1, 0xbf), 0), [-1, 1])
  t.same(decodeRune(b(0xef, 0xbf, 0xbd), 0), [0xfffd, 3])
  t.same(decodeRune(b(0xf0, 0x90, 0x80, 0x80), 0), [0x10000, 4])
  t.same(decodeRune(b(0xf0, 0x8f, 0xbf, 0xbf), 0), [-1, 1])
  t.same(decodeRune(b(0xf4, 0x8f, 0xbf, 0xbf), 0), [0x10ffff, 4])
})
