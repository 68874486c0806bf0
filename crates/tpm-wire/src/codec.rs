//! One reader for TPM 2.0 marshalled bytes (big-endian, `TPM2B` size prefixes).
//!
//! Every read is bounds-checked and names the field it was reading, so an error on attacker
//! input says *where* the bytes went wrong. Nothing here indexes or panics.

use crate::error::WireError;

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the first byte of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Byte offset of the next read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The bytes read since offset `start` (empty when `start` is not behind the cursor).
    pub fn consumed_since(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or_default()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated {
            field,
            offset: self.pos,
        })?;
        let out = self.buf.get(self.pos..end).ok_or(WireError::Truncated {
            field,
            offset: self.pos,
        })?;
        self.pos = end;
        Ok(out)
    }

    /// Takes exactly `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let s = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(u8::from_be_bytes(self.array::<1>(field)?))
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array::<2>(field)?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array::<4>(field)?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array::<8>(field)?))
    }

    /// Reads a `TPM2B_*`: a `u16` size, at most `max`, then that many bytes.
    pub fn tpm2b(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let offset = self.pos;
        let size = usize::from(self.u16(field)?);
        if size > max {
            return Err(WireError::TooLong {
                field,
                offset,
                len: size,
                max,
            });
        }
        self.take(size, field)
    }

    /// Ends the read: trailing bytes are an error.
    pub fn finish(self, what: &'static str) -> Result<(), WireError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(WireError::TrailingBytes {
                what,
                count: self.remaining(),
            })
        }
    }
}

/// Appends TPM 2.0 marshalled values to a buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends a `TPM2B_*` (size prefix, then the bytes).
    ///
    /// # Errors
    /// When `v` is longer than a `u16` can say.
    pub fn tpm2b(&mut self, v: &[u8]) -> Result<&mut Self, WireError> {
        let len = u16::try_from(v.len()).map_err(|_| WireError::TooLong {
            field: "TPM2B",
            offset: self.buf.len(),
            len: v.len(),
            max: usize::from(u16::MAX),
        })?;
        self.u16(len);
        self.buf.extend_from_slice(v);
        Ok(self)
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}
