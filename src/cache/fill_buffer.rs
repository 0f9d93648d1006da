//! A body being filled while readers stream it: the buffer it grows in and the state its
//! writer publishes. Shared by a fill's own body (`fill`) and its derived codings (`variants`).

use bytes::Bytes;

/// How far a fill got, as its writer publishes it to readers: bytes written so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillState {
    Partial(usize),
    Complete(usize),
    /// The writer gave up (error or too large); readers stop with an error.
    Abandoned,
}

/// The body of a fill. Bytes before `base` were dropped: once a fill passes
/// `max_object_size` it will not be stored, and its only reader (the request filling it)
/// no longer needs what it has read.
#[derive(Default)]
pub struct FillBuffer {
    pub data: Vec<u8>,
    pub base: usize,
    pub trimming: bool,
}

impl FillBuffer {
    /// Bytes from absolute offset `from` to `to`, dropping them when trimming.
    pub fn take_range(&mut self, from: usize, to: usize) -> Bytes {
        let (start, end) = (
            from.saturating_sub(self.base),
            to.saturating_sub(self.base).min(self.data.len()),
        );
        let chunk = Bytes::copy_from_slice(&self.data[start.min(end)..end]);
        if self.trimming {
            self.data.drain(..end);
            self.base += end;
        }
        chunk
    }
}
