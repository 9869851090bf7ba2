import t from 'tap'
import { Quantity, ErrFormatWrong, ErrSuffix, ErrNumeric } from '../lib/volume/quantity.js'

t.test('Value and MilliValue: ceil away from zero, and 1.20\'s int64 overflow', async (t) => {
  const cases: [string, bigint, bigint][] = [
    // text, Value(), MilliValue()
    ['0', 0n, 0n],
    ['250m', 1n, 250n],
    ['1250m', 2n, 1250n],
    ['2', 2n, 2000n],
    ['0.5', 1n, 500n],
    ['100n', 1n, 1n],
    ['1n', 1n, 1n],
    ['5.00000000001m', 1n, 6n],
    ['0.1m', 1n, 1n],
    ['1.0000000001', 2n, 1001n],
    ['-1.5', -2n, -1500n],
    ['32Mi', 33554432n, 33554432000n],
    ['64Mi', 67108864n, 67108864000n],
    ['1Gi', 1073741824n, 1073741824000n],
    ['1e3', 1000n, 1000000n],
    ['1E3', 1000n, 1000000n],
    ['1E', 10n ** 18n, 0n], // exa; int64 MilliValue overflows to 0
    ['1e-3', 1n, 1n],
    ['1.5', 2n, 1500n],
    ['0.1Ki', 103n, 102400n],
    ['1k', 1000n, 1000000n],
    ['12e+2', 1200n, 1200000n],
    ['.5', 1n, 500n],
    ['1.', 1n, 1000n],
    ['+1', 1n, 1000n],
    ['00012', 12n, 12000n],
    ['1152921504606846976', 2n ** 60n, -(2n ** 63n)], // inf.Dec: × 1000 wraps
    ['1Ei', 2n ** 60n, -(2n ** 63n)],
    ['8Ei', 2n ** 63n - 1n, -1000n], // BinarySI caps at 2^63-1; × 1000 wraps
    ['10Ei', 2n ** 63n - 1n, -1000n],
    ['9223372036854775807', 2n ** 63n - 1n, -1000n],
    ['18446744073709551616', 0n, 0n], // DecimalSI is not capped; big.Int.Int64 keeps the low 64 bits
    ['1e999999999', 0n, 0n], // int64 scaling overflows to 0
    ['1e-999999999', 1n, 1n],
    ['-', 0n, 0n],
    ['e3', 0n, 0n],
  ]
  for (const [text, v, mv] of cases) {
    const q = Quantity.parse(text)
    t.equal(q.value(), v, `${text}.Value()`)
    t.equal(q.milliValue(), mv, `${text}.MilliValue()`)
  }
})

t.test('String() is apimachinery\'s canonical form, echoing canonical-looking input', async (t) => {
  const cases: [string, string][] = [
    ['0', '0'], ['0m', '0'], ['00', '0'],
    ['1', '1'], ['1m', '1m'], ['1000m', '1'], ['0.001', '1m'], ['1e0', '1e0'], ['1e3', '1e3'],
    ['1000', '1k'], ['1024', '1024'], ['+1', '+1'], ['1.', '1.'], ['00012', '00012'],
    ['1.5', '1500m'], ['.5', '500m'], ['1.5Gi', '1536Mi'], ['1024Ki', '1Mi'], ['1Ki', '1Ki'],
    ['8Ki', '8Ki'], ['0.5Ki', '512'], ['1.1Ki', '1126400m'], ['10Ei', '9223372036854775807'],
    ['1k', '1k'], ['1M', '1M'], ['1G', '1G'], ['1T', '1T'], ['1P', '1P'], ['1E', '1E'],
    ['1Mi', '1Mi'], ['1Gi', '1Gi'], ['1Ti', '1Ti'], ['1Pi', '1Pi'], ['1Ei', '1Ei'],
    ['100n', '100n'], ['0.1m', '100u'], ['1.0000000001', '1000000001n'], ['1.2345', '1234500u'],
    ['1000E', '1e21'], ['-1.5', '-1500m'], ['12e6', '12e6'], ['1200e3', '1200e3'], ['12000e3', '12e6'],
    ['1e-10', '1e-9'], ['0.9n', '1n'],
  ]
  for (const [text, want] of cases) t.equal(Quantity.parse(text).toString(), want, `String(${text})`)
})

t.test('bad quantities fail with apimachinery\'s messages', async (t) => {
  const cases: [string, string][] = [
    ['', ErrFormatWrong], [' 1', ErrFormatWrong], ['1 ', ErrFormatWrong], ['1µ', ErrFormatWrong],
    ['0x10', ErrFormatWrong], ['1.2.3', ErrFormatWrong], ['abc', ErrFormatWrong], ['1__', ErrFormatWrong],
    ['1K', ErrSuffix], ['1ki', ErrSuffix], ['1i', ErrSuffix], ['1Mi5', ErrSuffix],
    ['1EE', ErrSuffix], ['12e', ErrSuffix], ['1e', ErrSuffix], ['1e99999999999999999999', ErrSuffix],
    ['e-10', ErrNumeric], ['.e-10', ErrNumeric],
  ]
  for (const [text, msg] of cases) t.throws(() => Quantity.parse(text), { message: msg }, `parse ${JSON.stringify(text)}`)
})
