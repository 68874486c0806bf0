//! A bounded little-endian reader: event logs are written in the firmware's byte order
//! (little-endian on every platform that has them), unlike TPM marshalled structures.
//!
//! Every read checks the bytes left and reports the field, the event number and the offset.

use crate::error::{ParseError, ParseErrorKind};

/// A cursor over untrusted bytes, tagged with the event being read.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Number of the event being read, for errors.
    pub(crate) event: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            event: 0,
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// The bytes from offset `start` up to the cursor.
    pub(crate) fn consumed_since(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or_default()
    }

    pub(crate) fn error(&self, offset: usize, kind: ParseErrorKind) -> ParseError {
        ParseError {
            event: self.event,
            offset,
            kind,
        }
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ParseError> {
        let truncated = || ParseErrorKind::Truncated {
            field,
            needed: n as u64,
            available: self.remaining(),
        };
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| self.error(self.pos, truncated()))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.error(self.pos, truncated()))?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], ParseError> {
        let s = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ParseError> {
        Ok(u8::from_le_bytes(self.array::<1>(field)?))
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.array::<2>(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array::<4>(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array::<8>(field)?))
    }

    /// Reads a `u32` length, at most `max`, then that many bytes.
    #[inline]
    pub(crate) fn sized_u32(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], ParseError> {
        let offset = self.pos;
        let len = self.u32(field)?;
        if len as usize > max {
            return Err(self.error(
                offset,
                ParseErrorKind::TooLong {
                    field,
                    len: u64::from(len),
                    max: max as u64,
                },
            ));
        }
        self.take(len as usize, field)
    }
}
