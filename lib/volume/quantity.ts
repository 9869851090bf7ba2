// Kubernetes resource quantities (apimachinery's resource.Quantity), exact.
//
// A quantity is held as unscaled × 10^exp with a BigInt unscaled, so nothing is ever a float
// until the kubelet itself turns it into one (see resource.ts). Parsing follows
// ParseQuantity step by step, because its quirks are visible in the bytes we serve:
//   - Non-zero values are rounded away from zero to a whole number of nanos; BinarySI values
//     are capped at 2^63-1 in magnitude ("8Ei" is 2^63-1).
//   - String() echoes the input text when the fast path finds it "canonical-looking" ("+1",
//     "1e0", "00012" stay as written). The API server validates divisors by that string, so
//     "1e0" is not an accepted cpu divisor while "1000m" is.
//   - apimachinery keeps a quantity either as an int64 (the parser's fast path) or as an
//     inf.Dec (the slow path), and Value()/MilliValue() overflow differently in each: an int64
//     product wraps or becomes 0, an inf.Dec keeps the low 64 bits of its big.Int and rounds
//     toward +∞ when scaling down. Within int64 both are exact (ceil away from zero for the
//     int64 form); beyond it, "the result is undefined" says apimachinery, and the kubelet
//     writes whatever it got. We reproduce Kubernetes 1.20's arithmetic bit for bit (checked by
//     test/kubelet-diff.test.ts against its code), on amd64.

import { describe } from './shape.js'

export type Format = 'DecimalExponent' | 'BinarySI' | 'DecimalSI'

export const ErrFormatWrong =
  "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
export const ErrNumeric = 'unable to parse numeric part of quantity'
export const ErrSuffix = "unable to parse quantity's suffix"

export class QuantityError extends Error {}

const INT64_MAX = (1n << 63n) - 1n
const INT64_MIN = -(1n << 63n)
const SUFFIX_CHARS = 'eEinumkKMGTP'
const DEC_SUFFIXES: Record<string, number> = {
  n: -9, u: -6, m: -3, '': 0, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18,
}
const BIN_SUFFIXES: Record<string, number> = { Ki: 10, Mi: 20, Gi: 30, Ti: 40, Pi: 50, Ei: 60 }
const DEC_BY_EXP = new Map(Object.entries(DEC_SUFFIXES).map(([s, e]) => [e, s]))
const BIN_BY_EXP = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei']

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9'
const pow10 = (n: number): bigint => 10n ** BigInt(n)
const abs = (x: bigint): bigint => (x < 0n ? -x : x)
const wrap = (x: bigint): bigint => BigInt.asIntN(64, x)

/** Go's big.Int.Int64(): the low 64 bits of |x|, as an int64, negated when x < 0. */
function bigInt64(x: bigint): bigint {
  const low = wrap(BigInt.asUintN(64, abs(x)))
  return x < 0n ? wrap(-low) : low
}

/** int64(math.Pow10(n)) on amd64: exact up to 10^18; 10^19 and beyond do not fit and give MinInt64. */
const pow10Int64 = (n: number): bigint => (n <= 18 ? pow10(n) : INT64_MIN)

/** apimachinery's positiveScaleInt64: base × 10^s; products for s in 1,2,3,6,9 wrap, others give 0. */
function positiveScaleInt64(base: bigint, s: number): bigint {
  if (s === 0) return base
  if (base === 0n) return 0n
  if (s === 1 || s === 2 || s === 3 || s === 6 || s === 9) return base === INT64_MIN ? 0n : wrap(base * pow10(s))
  if (s > 19) return 0n
  const exact = base * pow10(s)
  return exact === wrap(exact) ? exact : 0n
}

/** apimachinery's negativeScaleInt64: base / 10^s, rounded away from zero; never overflows. */
function negativeScaleInt64(base: bigint, s: number): bigint {
  const digits = abs(base).toString().length
  if (s > digits) return base > 0n ? 1n : base < 0n ? -1n : 0n
  const d = pow10(s)
  const q = base / d
  if (base % d === 0n) return q
  return base > 0n ? q + 1n : q - 1n
}

interface Scanned { positive: boolean; value: string; num: string; denom: string; suffix: string }

// parseQuantityString: sign, leading zeros, numerator, optional "." and denominator, suffix.
function scan(str: string): Scanned {
  let positive = true
  let pos = 0
  const end = str.length
  if (str[0] === '-') { positive = false; pos++ } else if (str[0] === '+') pos++
  while (pos < end && str[pos] === '0') pos++
  if (pos >= end) return { positive, value: '0', num: '0', denom: '', suffix: '' }
  let i = pos
  while (isDigit(str[i])) i++
  const num = str.slice(pos, i) || '0'
  if (i >= end) return { positive, value: str, num: str.slice(pos), denom: '', suffix: '' }
  pos = i
  let denom = ''
  if (str[pos] === '.') {
    pos++
    i = pos
    while (isDigit(str[i])) i++
    denom = str.slice(pos, i)
    if (i >= end) return { positive, value: str, num, denom, suffix: '' }
    pos = i
  }
  const value = str.slice(0, pos)
  const suffixStart = pos
  while (pos < end && SUFFIX_CHARS.includes(str[pos]!)) pos++
  if (pos < end && (str[pos] === '-' || str[pos] === '+')) pos++
  while (isDigit(str[pos])) pos++
  if (pos < end) throw new QuantityError(ErrFormatWrong)
  return { positive, value, num, denom, suffix: str.slice(suffixStart) }
}

function interpret(suffix: string): { base: 2 | 10; exponent: number; format: Format } {
  if (suffix in DEC_SUFFIXES) return { base: 10, exponent: DEC_SUFFIXES[suffix]!, format: 'DecimalSI' }
  if (suffix in BIN_SUFFIXES) return { base: 2, exponent: BIN_SUFFIXES[suffix]!, format: 'BinarySI' }
  if (suffix.length > 1 && (suffix[0] === 'e' || suffix[0] === 'E') && /^[+-]?[0-9]+$/.test(suffix.slice(1))) {
    const parsed = BigInt(suffix.slice(1))
    if (parsed > INT64_MAX || parsed < INT64_MIN) throw new QuantityError(ErrSuffix)
    // Go keeps int32(parsed): the exponent wraps.
    return { base: 10, exponent: Number(BigInt.asIntN(32, parsed)), format: 'DecimalExponent' }
  }
  throw new QuantityError(ErrSuffix)
}

/** Strips factors of `base` from n: [n / base^k, k]. */
function removeFactors(n: bigint, base: bigint): [bigint, number] {
  let k = 0
  while (n !== 0n && n % base === 0n) { n /= base; k++ }
  return [n, k]
}

export class Quantity {
  private constructor(
    /** The value is unscaled × 10^exp, exactly. */
    readonly unscaled: bigint,
    readonly exp: number,
    readonly format: Format,
    /** Held as apimachinery's int64Amount (true) or inf.Dec (false): they overflow differently. */
    readonly int64: boolean,
    /** The input text, when apimachinery would echo it as the canonical string. */
    private readonly echo?: string,
  ) {}

  static readonly zero = new Quantity(0n, 0, 'DecimalSI', true)

  static parse(str: string): Quantity {
    if (str.length === 0) throw new QuantityError(ErrFormatWrong)
    if (str === '0') return new Quantity(0n, 0, 'DecimalSI', true, '0')
    const { positive, value, num, denom, suffix } = scan(str)
    const { base, exponent, format } = interpret(suffix)

    // The int64 fast path; it decides whether the input text is kept as the canonical string.
    let precision: number
    let scale = 0
    let mantissa = 1n
    if (format === 'BinarySI') {
      if (exponent >= 0 && denom.length === 0) {
        mantissa = 1n << BigInt(exponent)
        precision = 15 - num.length - Math.trunc((exponent * 3) / 10) - 1
      } else {
        precision = -1
      }
    } else {
      scale = exponent
      precision = 18 - (num.length + denom.length)
    }
    if (precision >= 0) {
      scale = (scale - denom.length) | 0
      if (scale >= -9) {
        const shifted = num + denom
        const v = BigInt(shifted)
        const product = v * mantissa
        if (product <= INT64_MAX) {
          const result = positive ? product : -product
          const canonical = format === 'BinarySI'
            ? exponent % 10 === 0 && (v & 7n) !== 0n
            : scale % 3 === 0 && !shifted.endsWith('000') && shifted[0] !== '0'
          return new Quantity(result, scale, format, true, canonical ? str : undefined)
        }
      }
    }

    // The inf.Dec slow path: exact, then rounded to nanos and capped.
    const m = /^[+-]?([0-9]*)\.?([0-9]*)$/.exec(value)
    if (!m || m[1]! + m[2]! === '') throw new QuantityError(ErrNumeric)
    let unscaled = BigInt(m[1]! + m[2]!)
    let exp = -m[2]!.length
    if (base === 10) exp += exponent
    else unscaled <<= BigInt(exponent)
    if (exp < -9 && unscaled !== 0n) {
      const shift = -9 - exp
      if (shift > unscaled.toString().length) {
        unscaled = 1n // below one nano: rounds up to exactly one
      } else {
        const d = pow10(shift)
        unscaled = unscaled / d + (unscaled % d === 0n ? 0n : 1n)
      }
      exp = -9
    }
    let fmt = format
    if (fmt === 'BinarySI') {
      if (exp >= 0 ? unscaled * pow10(exp) > INT64_MAX : unscaled > INT64_MAX * pow10(-exp)) {
        unscaled = INT64_MAX
        exp = 0
      }
      if (unscaled !== 0n && (exp >= 0 ? unscaled * pow10(exp) < 1n : unscaled < pow10(-exp))) fmt = 'DecimalSI'
    }
    return new Quantity(positive ? unscaled : -unscaled, exp, fmt, false)
  }

  isZero(): boolean {
    return this.unscaled === 0n
  }

  /**
   * apimachinery's ScaledValue(-k): ceil(q × 10^k) as an int64, with its overflow behaviour
   * (see the top of this file). k is 0 for Value() and 3 for MilliValue().
   */
  scaledValue(k: number): bigint {
    if (this.int64) {
      // int64Amount.AsScaledInt64
      const s = this.exp + k
      return s < 0 ? negativeScaleInt64(this.unscaled, -s) : positiveScaleInt64(this.unscaled, s)
    }
    // scaledValue(unscaled, scale, newScale) on the inf.Dec, whose scale is -exp
    const dif = -this.exp - k
    if (dif === 0) return bigInt64(this.unscaled)
    if (dif < 0) return wrap(bigInt64(this.unscaled) * pow10Int64(-dif))
    if (this.unscaled < INT64_MAX && dif < 19) {
      const i = bigInt64(this.unscaled)
      const d = pow10(dif)
      return i % d !== 0n ? wrap(i / d + 1n) : i / d
    }
    // big.Int DivMod is Euclidean: floor division for this positive divisor
    const d = pow10(dif)
    let q = this.unscaled / d
    if (this.unscaled % d !== 0n && this.unscaled < 0n) q -= 1n
    return this.unscaled - q * d !== 0n ? wrap(bigInt64(q) + 1n) : bigInt64(q)
  }

  value(): bigint {
    return this.scaledValue(0)
  }

  milliValue(): bigint {
    return this.scaledValue(3)
  }

  /** The canonical string, as Quantity.String() gives it. */
  toString(): string {
    if (this.echo !== undefined) return this.echo
    if (this.unscaled === 0n) return '0'
    let format = this.format
    if (format === 'BinarySI') {
      const v = this.value()
      const exact = this.exp >= 0 || this.unscaled % pow10(-this.exp) === 0n
      if ((v > -1024n && v < 1024n) || !exact) {
        format = 'DecimalSI'
      } else {
        const [amount, times] = removeFactors(v, 1024n)
        return amount.toString() + BIN_BY_EXP[times]
      }
    }
    let [amount, times] = removeFactors(this.unscaled, 10n)
    let exp = this.exp + times
    const r = ((exp % 3) + 3) % 3
    amount *= pow10(r)
    exp -= r
    const suffix = format === 'DecimalSI' && DEC_BY_EXP.has(exp)
      ? DEC_BY_EXP.get(exp)!
      : exp === 0 ? '' : 'e' + exp
    return amount.toString() + suffix
  }
}

/** Parses a quantity given as a string or, as JSON allows, a number. */
export function parseQuantity(raw: unknown): Quantity {
  if (typeof raw === 'number' && Number.isFinite(raw)) return Quantity.parse(String(raw))
  if (typeof raw === 'string') return Quantity.parse(raw)
  throw new QuantityError(`must be a quantity string, not ${describe(raw)}`)
}
