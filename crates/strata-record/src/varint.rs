//! Zigzag varints (Kafka's `varint` and `varlong`) and a bounds-checked reader.
//!
//! Reading is strict about overflow: a `varint` may take at most 5 bytes and a
//! `varlong` at most 10, and the last byte may not carry bits beyond the
//! type's width. Kafka's own reader silently drops such bits; refusing them
//! keeps one value from having two meanings.

fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag32(u: u32) -> i32 {
    ((u >> 1) as i32) ^ -((u & 1) as i32)
}

fn unzigzag64(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn uvarint_len(mut u: u64) -> usize {
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}

/// Encoded size of a zigzag `varint`.
pub(crate) fn varint_len(v: i32) -> usize {
    uvarint_len(u64::from(zigzag32(v)))
}

/// Encoded size of a zigzag `varlong`.
pub(crate) fn varlong_len(v: i64) -> usize {
    uvarint_len(zigzag64(v))
}

fn put_uvarint(buf: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        buf.push((u as u8 & 0x7f) | 0x80);
        u >>= 7;
    }
    buf.push(u as u8);
}

pub(crate) fn put_varint(buf: &mut Vec<u8>, v: i32) {
    put_uvarint(buf, u64::from(zigzag32(v)));
}

pub(crate) fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, zigzag64(v));
}

/// Why a read ran off its buffer or met a malformed varint; the caller adds
/// which field it was reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("ends where a byte was expected")]
    EndOfInput,
    #[error("needs {needed} bytes but only {left} are left")]
    Short { needed: usize, left: usize },
    #[error("varint runs past the end")]
    VarintPastEnd,
    #[error("varint overflows its type")]
    VarintOverflow,
}

/// A cursor over untrusted bytes. Every read checks bounds and reports a
/// typed error instead of panicking; callers add the context.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ReadError> {
        let (&b, rest) = self.buf.split_first().ok_or(ReadError::EndOfInput)?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if n > self.buf.len() {
            return Err(ReadError::Short { needed: n, left: self.buf.len() });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Reads an unsigned base-128 value of at most `max_len` bytes whose last
    /// byte is at most `last_max`.
    fn uvarint(&mut self, max_len: usize, last_max: u8) -> Result<u64, ReadError> {
        let mut value = 0u64;
        for i in 0..max_len {
            let b = self.u8().map_err(|_| ReadError::VarintPastEnd)?;
            if i == max_len - 1 && b > last_max {
                return Err(ReadError::VarintOverflow);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        // Unreachable: the last-byte check rejects a continuation bit there.
        Err(ReadError::VarintOverflow)
    }

    pub(crate) fn varint(&mut self) -> Result<i32, ReadError> {
        // 5 bytes carry 35 bits; only the low 4 of the last byte fit in 32.
        let u = self.uvarint(5, 0x0f)?;
        Ok(unzigzag32(u as u32))
    }

    pub(crate) fn varlong(&mut self) -> Result<i64, ReadError> {
        // 10 bytes carry 70 bits; only the low bit of the last byte fits in 64.
        let u = self.uvarint(10, 0x01)?;
        Ok(unzigzag64(u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc32(v: i32) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        b
    }

    fn enc64(v: i64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varlong(&mut b, v);
        b
    }

    #[test]
    fn known_encodings() {
        // Values from the protobuf/Kafka zigzag tables.
        assert_eq!(enc32(0), [0x00]);
        assert_eq!(enc32(-1), [0x01]);
        assert_eq!(enc32(1), [0x02]);
        assert_eq!(enc32(-2), [0x03]);
        assert_eq!(enc32(63), [0x7e]);
        assert_eq!(enc32(-64), [0x7f]);
        assert_eq!(enc32(64), [0x80, 0x01]);
        assert_eq!(enc32(300), [0xd8, 0x04]);
        assert_eq!(enc32(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(enc32(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(enc64(i64::MIN), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn round_trip_and_lengths() {
        let vals32 = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, 1 << 20, -(1 << 27), i32::MAX, i32::MIN];
        for v in vals32 {
            let b = enc32(v);
            assert_eq!(b.len(), varint_len(v), "len of {v}");
            let mut r = Reader::new(&b);
            assert_eq!(r.varint().unwrap(), v);
            assert!(r.is_empty());
        }
        let vals64 = [0, -1, 1, i64::from(i32::MAX) + 1, 1 << 50, -(1 << 62), i64::MAX, i64::MIN];
        for v in vals64 {
            let b = enc64(v);
            assert_eq!(b.len(), varlong_len(v), "len of {v}");
            let mut r = Reader::new(&b);
            assert_eq!(r.varlong().unwrap(), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn rejects_truncated_and_overflowing() {
        assert!(Reader::new(&[]).varint().is_err());
        assert!(Reader::new(&[0x80]).varint().is_err());
        // Sixth byte needed: too long for a varint.
        assert!(Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).varint().is_err());
        // Fifth byte carries bits above 32.
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x1f]).varint().is_err());
        assert!(Reader::new(&[0xff; 10]).varlong().is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).varlong().is_err());
        let mut r = Reader::new(&[1, 2, 3]);
        assert!(r.take(4).is_err());
        assert_eq!(r.take(3).unwrap(), [1, 2, 3]);
        assert!(r.u8().is_err());
    }
}
