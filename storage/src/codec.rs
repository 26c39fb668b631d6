//! Decoding helpers shared by every on-disk format of the crate: a bounds-checked little-endian
//! [`Cursor`]. Bytes from disk are never indexed blindly; every read that would run past the
//! buffer returns a [`CursorError`], which each format turns into its own decode error.

/// Why a cursor read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    /// The read needs `needed` bytes of a buffer holding `available`.
    Incomplete { needed: usize, available: usize },
    /// The bytes at `at` are not a valid encoding (an over-long varint, a value out of range).
    Malformed { at: usize, what: &'static str },
}

/// A bounds-checked reader over a byte slice.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    /// Position of the next read.
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// A cursor starting at `pos`.
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CursorError> {
        let short = CursorError::Incomplete {
            needed: self.pos.saturating_add(n),
            available: self.buf.len(),
        };
        let end = self.pos.checked_add(n).ok_or(short)?;
        let s = self.buf.get(self.pos..end).ok_or(short)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CursorError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, CursorError> {
        Ok(u8::from_le_bytes(self.array()?))
    }
    pub fn u16(&mut self) -> Result<u16, CursorError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, CursorError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Result<i32, CursorError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, CursorError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, CursorError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A LEB128 varint of at most 64 bits.
    #[inline]
    pub fn varint64(&mut self) -> Result<u64, CursorError> {
        // Most varints in a block (lengths, shared prefixes) are one byte.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    break;
                }
                return Ok(v);
            }
        }
        Err(CursorError::Malformed {
            at: start,
            what: "varint too long",
        })
    }

    #[inline]
    pub fn varint32(&mut self) -> Result<u32, CursorError> {
        let start = self.pos;
        let v = self.varint64()?;
        u32::try_from(v).map_err(|_| CursorError::Malformed {
            at: start,
            what: "varint32 out of range",
        })
    }

    /// A u32-length-prefixed byte string.
    pub fn bytes32(&mut self) -> Result<&'a [u8], CursorError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}
