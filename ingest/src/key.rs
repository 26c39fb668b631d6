//! Order-preserving encoding of typed key tuples: for two tuples of the same column types,
//! comparing the encoded bytes gives the same answer as comparing the tuples the way SQL
//! `ORDER BY` does (ascending, NULLS LAST). Row tables store rows under these keys, so a
//! primary-key range scan is a byte range scan of the LSM.
//!
//! Layout, per column, concatenated with no separator (every element is self-delimiting, so a
//! tuple that is a prefix of another sorts first):
//! ```text
//! NULL     0xFF                        (above every type tag: NULLS LAST)
//! bool     0x10  0x00 | 0x01
//! int2     0x20  big-endian i16 with the sign bit flipped
//! int4     0x21  big-endian i32 with the sign bit flipped
//! int8     0x22  big-endian i64 with the sign bit flipped
//! float8   0x30  big-endian bits; negative: all bits inverted, else sign bit set.
//!                -0.0 is written as 0.0 and every NaN as the canonical quiet NaN, which sorts
//!                above +Infinity (PostgreSQL's order: NaN is greater than every number).
//! text     0x40  UTF-8 bytes, 0x00 escaped as 0x00 0xFF, terminated by 0x00 0x01
//! bytea    0x41  bytes, same escaping and terminator
//! ```
//! Text compares by code point (the "C" collation). The type tags matter only for decoding: a
//! column holds one type, so two keys of one table never compare tags of different types except
//! against NULL.

use std::cmp::Ordering;

use crate::error::{Error, Result};

const TAG_BOOL: u8 = 0x10;
const TAG_INT2: u8 = 0x20;
const TAG_INT4: u8 = 0x21;
const TAG_INT8: u8 = 0x22;
const TAG_FLOAT8: u8 = 0x30;
const TAG_TEXT: u8 = 0x40;
const TAG_BYTES: u8 = 0x41;
const TAG_NULL: u8 = 0xFF;

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// One column of a key tuple.
#[derive(Debug, Clone)]
pub enum KeyValue {
    Null,
    Bool(bool),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Float64(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl KeyValue {
    /// SQL order of two values of the same column: NULL last, NaN above every number, -0 = 0.
    /// Values of different (non-NULL) types compare by type tag, as their encodings do.
    pub fn sql_cmp(&self, other: &KeyValue) -> Ordering {
        use KeyValue::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Null, _) => Ordering::Greater,
            (_, Null) => Ordering::Less,
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int16(a), Int16(b)) => a.cmp(b),
            (Int32(a), Int32(b)) => a.cmp(b),
            (Int64(a), Int64(b)) => a.cmp(b),
            (Float64(a), Float64(b)) => match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                // Neither is NaN: partial_cmp is total here and treats -0 == 0.
                (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            },
            (Text(a), Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            (a, b) => a.tag().cmp(&b.tag()),
        }
    }

    fn tag(&self) -> u8 {
        match self {
            KeyValue::Null => TAG_NULL,
            KeyValue::Bool(_) => TAG_BOOL,
            KeyValue::Int16(_) => TAG_INT2,
            KeyValue::Int32(_) => TAG_INT4,
            KeyValue::Int64(_) => TAG_INT8,
            KeyValue::Float64(_) => TAG_FLOAT8,
            KeyValue::Text(_) => TAG_TEXT,
            KeyValue::Bytes(_) => TAG_BYTES,
        }
    }
}

/// Equality in the SQL sense used by [`KeyValue::sql_cmp`] (so NaN = NaN and -0 = 0, as keys).
impl PartialEq for KeyValue {
    fn eq(&self, other: &Self) -> bool {
        self.sql_cmp(other) == Ordering::Equal
    }
}

/// Compares two tuples column by column in SQL order; a proper prefix sorts first.
pub fn sql_cmp_tuples(a: &[KeyValue], b: &[KeyValue]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.sql_cmp(y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// Appends the encoding of `values` to `out`.
pub fn encode_key_into(out: &mut Vec<u8>, values: &[KeyValue]) {
    for v in values {
        out.push(v.tag());
        match v {
            KeyValue::Null => {}
            KeyValue::Bool(b) => out.push(u8::from(*b)),
            KeyValue::Int16(i) => out.extend_from_slice(&((*i as u16) ^ (1 << 15)).to_be_bytes()),
            KeyValue::Int32(i) => out.extend_from_slice(&((*i as u32) ^ (1 << 31)).to_be_bytes()),
            KeyValue::Int64(i) => out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes()),
            KeyValue::Float64(f) => out.extend_from_slice(&float_bits(*f).to_be_bytes()),
            KeyValue::Text(s) => push_escaped(out, s.as_bytes()),
            KeyValue::Bytes(b) => push_escaped(out, b),
        }
    }
}

/// The encoding of `values`.
pub fn encode_key(values: &[KeyValue]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 9);
    encode_key_into(&mut out, values);
    out
}

/// Decodes a whole key back into its columns. Fails on any byte that is not a valid encoding.
pub fn decode_key(bytes: &[u8]) -> Result<Vec<KeyValue>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (v, next) = decode_one(bytes, at)?;
        out.push(v);
        at = next;
    }
    Ok(out)
}

/// The smallest key above every key that starts with `prefix` (the exclusive end of a prefix
/// scan), or `None` when no such key exists (the prefix is all 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn float_bits(f: f64) -> u64 {
    let f = if f.is_nan() {
        f64::NAN
    } else if f == 0.0 {
        0.0
    } else {
        f
    };
    let bits = f.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn float_from_bits(enc: u64) -> f64 {
    let bits = if enc >> 63 == 1 {
        enc & !(1 << 63)
    } else {
        !enc
    };
    f64::from_bits(bits)
}

fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
    out.push(ESCAPE);
    out.push(TERMINATOR);
}

fn fixed<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N]> {
    let s = at
        .checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .ok_or(Error::CorruptKey {
            at,
            reason: "fixed-width value runs past the end",
        })?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}

fn decode_escaped(bytes: &[u8], mut at: usize) -> Result<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    loop {
        let b = *bytes.get(at).ok_or(Error::CorruptKey {
            at,
            reason: "string has no terminator",
        })?;
        at += 1;
        if b != ESCAPE {
            out.push(b);
            continue;
        }
        match bytes.get(at) {
            Some(&ESCAPED_ZERO) => {
                out.push(0);
                at += 1;
            }
            Some(&TERMINATOR) => return Ok((out, at + 1)),
            _ => {
                return Err(Error::CorruptKey {
                    at,
                    reason: "bad escape in string",
                })
            }
        }
    }
}

fn decode_one(bytes: &[u8], at: usize) -> Result<(KeyValue, usize)> {
    let tag = *bytes.get(at).ok_or(Error::CorruptKey {
        at,
        reason: "missing type tag",
    })?;
    let body = at + 1;
    Ok(match tag {
        TAG_NULL => (KeyValue::Null, body),
        TAG_BOOL => match fixed::<1>(bytes, body)? {
            [0] => (KeyValue::Bool(false), body + 1),
            [1] => (KeyValue::Bool(true), body + 1),
            _ => {
                return Err(Error::CorruptKey {
                    at: body,
                    reason: "bool is not 0 or 1",
                })
            }
        },
        TAG_INT2 => {
            let u = u16::from_be_bytes(fixed(bytes, body)?) ^ (1 << 15);
            (KeyValue::Int16(u as i16), body + 2)
        }
        TAG_INT4 => {
            let u = u32::from_be_bytes(fixed(bytes, body)?) ^ (1 << 31);
            (KeyValue::Int32(u as i32), body + 4)
        }
        TAG_INT8 => {
            let u = u64::from_be_bytes(fixed(bytes, body)?) ^ (1 << 63);
            (KeyValue::Int64(u as i64), body + 8)
        }
        TAG_FLOAT8 => {
            let f = float_from_bits(u64::from_be_bytes(fixed(bytes, body)?));
            (KeyValue::Float64(f), body + 8)
        }
        TAG_TEXT => {
            let (b, next) = decode_escaped(bytes, body)?;
            let s = String::from_utf8(b).map_err(|_| Error::CorruptKey {
                at: body,
                reason: "text is not UTF-8",
            })?;
            (KeyValue::Text(s), next)
        }
        TAG_BYTES => {
            let (b, next) = decode_escaped(bytes, body)?;
            (KeyValue::Bytes(b), next)
        }
        _ => {
            return Err(Error::CorruptKey {
                at,
                reason: "unknown type tag",
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Column types a generated schema draws from.
    #[derive(Debug, Clone, Copy)]
    enum Ty {
        Bool,
        I16,
        I32,
        I64,
        F64,
        Text,
        Bytes,
    }

    fn ty() -> impl Strategy<Value = Ty> {
        prop_oneof![
            Just(Ty::Bool),
            Just(Ty::I16),
            Just(Ty::I32),
            Just(Ty::I64),
            Just(Ty::F64),
            Just(Ty::Text),
            Just(Ty::Bytes),
        ]
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(0.0),
            Just(-0.0),
            Just(f64::NAN),
            Just(-f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MIN_POSITIVE),
            (-3i32..3).prop_map(f64::from),
        ]
    }

    fn value(t: Ty) -> BoxedStrategy<KeyValue> {
        let v: BoxedStrategy<KeyValue> = match t {
            Ty::Bool => any::<bool>().prop_map(KeyValue::Bool).boxed(),
            Ty::I16 => any::<i16>().prop_map(KeyValue::Int16).boxed(),
            Ty::I32 => any::<i32>().prop_map(KeyValue::Int32).boxed(),
            Ty::I64 => prop_oneof![any::<i64>(), -3i64..3]
                .prop_map(KeyValue::Int64)
                .boxed(),
            Ty::F64 => float().prop_map(KeyValue::Float64).boxed(),
            // Small alphabets with 0x00 and 0xFF so prefixes, escapes and terminators collide.
            Ty::Text => "[a\u{0}b\u{ff}é]{0,5}".prop_map(KeyValue::Text).boxed(),
            Ty::Bytes => prop::collection::vec(
                prop_oneof![Just(0u8), Just(1), Just(0xFF), any::<u8>()],
                0..6,
            )
            .prop_map(KeyValue::Bytes)
            .boxed(),
        };
        prop_oneof![1 => Just(KeyValue::Null), 5 => v].boxed()
    }

    /// A schema and two tuples of it; the second may be shorter (a prefix of the schema).
    fn pair() -> impl Strategy<Value = (Vec<KeyValue>, Vec<KeyValue>)> {
        prop::collection::vec(ty(), 1..4).prop_flat_map(|schema| {
            let tuple = |s: &[Ty]| s.iter().map(|t| value(*t)).collect::<Vec<_>>();
            let n = schema.len();
            (tuple(&schema), tuple(&schema), 0..=n).prop_map(|(a, mut b, keep)| {
                b.truncate(keep.max(1));
                (a, b)
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn byte_order_is_sql_order((a, b) in pair()) {
            let (ea, eb) = (encode_key(&a), encode_key(&b));
            prop_assert_eq!(ea.cmp(&eb), sql_cmp_tuples(&a, &b), "{:?} vs {:?}", a, b);
        }

        #[test]
        fn encode_then_decode_is_identity((a, _) in pair()) {
            let back = decode_key(&encode_key(&a)).expect("decode");
            prop_assert_eq!(sql_cmp_tuples(&back, &a), Ordering::Equal);
            for (x, y) in back.iter().zip(&a) {
                prop_assert_eq!(x.tag(), y.tag());
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_key(&bytes);
        }
    }

    #[test]
    fn prefix_end_bounds_a_prefix_scan() {
        let p = encode_key(&[KeyValue::Int64(7)]);
        let end = prefix_end(&p).expect("end");
        let inside = encode_key(&[KeyValue::Int64(7), KeyValue::Text("zz".into())]);
        let next = encode_key(&[KeyValue::Int64(8)]);
        assert!(p <= inside && inside < end && end <= next);
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}
