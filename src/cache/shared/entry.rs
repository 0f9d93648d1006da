//! How a stored response lives in Redis: key names, the binary encoding of an entry (its
//! pingora-cache meta, which carries headers, freshness, epoch and variance, and its body), the
//! split of large bodies into chunk keys, and the TTL Redis evicts it by.
//!
//! Keys, under the configured prefix `P`:
//! - `P e:URL HASH` the entry's head: meta, body length, chunk count and generation, and the
//!   body itself when it fits one chunk. The URL in the name lets purges by URL, prefix or glob
//!   find entries with `SCAN MATCH`; `HASH` is pingora-cache's combined key (URL and variance).
//! - `P c:HASH:GEN:N` chunk N of a body written with generation GEN (a fresh random number per
//!   write, so a rewrite never mixes chunks of two versions).
//! - `P l:HASH` the fill lock across instances; `P purge` the purge channel.
//!
//! Chunks and head are written in one `MULTI`/`EXEC`, head last: a reader sees the whole
//! entry or none of it. A chunk evicted on its own (maxmemory) makes the entry a miss.

use bytes::{Buf, BufMut, Bytes};
use pingora::cache::CacheMeta;
use std::time::{Duration, SystemTime};

const MAGIC: &[u8; 4] = b"PPE1";
/// Magic, two lengths, body length, chunk count and generation.
const FIXED_HEAD_BYTES: usize = 4 + 4 + 4 + 8 + 4 + 8;

/// A response as stored: pingora-cache's serialized meta (internal, header) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEntry {
    pub meta: (Vec<u8>, Vec<u8>),
    pub body: Bytes,
}

/// A decoded head: the meta and where the body is.
#[derive(Debug)]
pub struct Head {
    pub meta: (Vec<u8>, Vec<u8>),
    pub body_length: usize,
    pub chunks: u32,
    pub generation: u64,
    /// The body when `chunks` is 0.
    pub inline: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a Parapet entry (bad magic)")]
    Magic,
    #[error("entry truncated")]
    Truncated,
}

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    pub fn entry(&self, url: &str, hash: &str) -> String {
        format!("{}e:{url} {hash}", self.prefix)
    }

    pub fn chunk(&self, hash: &str, generation: u64, index: u32) -> String {
        format!("{}c:{hash}:{generation:016x}:{index}", self.prefix)
    }

    pub fn lock(&self, hash: &str) -> String {
        format!("{}l:{hash}", self.prefix)
    }

    pub fn purge_channel(&self) -> String {
        format!("{}purge", self.prefix)
    }

    /// A `SCAN MATCH` pattern for entry keys whose URL starts with `literal`.
    pub fn entries_starting_with(&self, literal: &str) -> String {
        format!("{}e:{}*", self.prefix, escape_match(literal))
    }

    /// The URL of an entry key, when it is one.
    pub fn url_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("e:")?;
        rest.rsplit_once(' ').map(|(url, _)| url)
    }
}

/// Escapes the characters `SCAN MATCH` treats as a pattern.
fn escape_match(literal: &str) -> String {
    let mut escaped = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The part of a glob before its first wildcard: every match starts with it.
pub fn literal_prefix_of_glob(glob: &str) -> &str {
    glob.find(['*', '?']).map_or(glob, |at| &glob[..at])
}

/// How long Redis keeps an entry: what is left of its freshness plus the longer of its
/// stale windows. `None` when nothing is left (not worth writing).
pub fn ttl(meta: &CacheMeta, now: SystemTime) -> Option<Duration> {
    let stale_window = meta
        .stale_while_revalidate_sec()
        .max(meta.stale_if_error_sec());
    let until = meta.fresh_until() + Duration::from_secs(u64::from(stale_window));
    until
        .duration_since(now)
        .ok()
        .filter(|left| !left.is_zero())
}

/// The head and the chunk values of `entry` for a body split at `chunk_size` (a body of at
/// most one chunk stays in the head).
pub fn encode(entry: &SharedEntry, chunk_size: usize, generation: u64) -> (Vec<u8>, Vec<Bytes>) {
    let chunk_size = chunk_size.max(1);
    let chunks: Vec<Bytes> = if entry.body.len() <= chunk_size {
        Vec::new()
    } else {
        (0..entry.body.len())
            .step_by(chunk_size)
            .map(|start| {
                entry
                    .body
                    .slice(start..(start + chunk_size).min(entry.body.len()))
            })
            .collect()
    };
    let inline: &[u8] = if chunks.is_empty() { &entry.body } else { &[] };
    let (internal, header) = &entry.meta;
    let mut head =
        Vec::with_capacity(FIXED_HEAD_BYTES + internal.len() + header.len() + inline.len());
    head.put_slice(MAGIC);
    head.put_u32(internal.len() as u32);
    head.put_slice(internal);
    head.put_u32(header.len() as u32);
    head.put_slice(header);
    head.put_u64(entry.body.len() as u64);
    head.put_u32(chunks.len() as u32);
    head.put_u64(generation);
    head.put_slice(inline);
    (head, chunks)
}

pub fn decode_head(bytes: Bytes) -> Result<Head, DecodeError> {
    let mut buf = bytes;
    if buf.len() < 4 || &buf[..4] != MAGIC {
        return Err(DecodeError::Magic);
    }
    buf.advance(4);
    let internal = take_sized(&mut buf)?;
    let header = take_sized(&mut buf)?;
    if buf.remaining() < 8 + 4 + 8 {
        return Err(DecodeError::Truncated);
    }
    let body_length = usize::try_from(buf.get_u64()).map_err(|_| DecodeError::Truncated)?;
    let chunks = buf.get_u32();
    let generation = buf.get_u64();
    if chunks == 0 && buf.len() != body_length {
        return Err(DecodeError::Truncated);
    }
    Ok(Head {
        meta: (internal, header),
        body_length,
        chunks,
        generation,
        inline: buf,
    })
}

fn take_sized(buf: &mut Bytes) -> Result<Vec<u8>, DecodeError> {
    if buf.remaining() < 4 {
        return Err(DecodeError::Truncated);
    }
    let length = buf.get_u32() as usize;
    if buf.remaining() < length {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.split_to(length).to_vec())
}

/// The body from its chunks; `None` when one is missing (evicted) or the length is off.
pub fn assemble(head: &Head, chunks: Vec<Option<Vec<u8>>>) -> Option<Bytes> {
    let mut body = Vec::with_capacity(head.body_length);
    for chunk in chunks {
        body.extend_from_slice(&chunk?);
    }
    (body.len() == head.body_length).then(|| Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;

    fn entry(body: &'static [u8]) -> SharedEntry {
        SharedEntry {
            meta: (b"internal".to_vec(), b"header".to_vec()),
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn a_small_body_stays_in_the_head() {
        let original = entry(b"hello");
        let (head, chunks) = encode(&original, 8, 7);
        assert!(chunks.is_empty());
        let decoded = decode_head(Bytes::from(head)).expect("decodes");
        assert_eq!(decoded.meta, original.meta);
        assert_eq!(decoded.chunks, 0);
        assert_eq!(decoded.inline, original.body);
    }

    #[test]
    fn a_large_body_is_split_into_chunks_and_reassembled() {
        let original = entry(b"0123456789abcdefXYZ");
        let (head, chunks) = encode(&original, 8, 42);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[2].as_ref(), b"XYZ");
        let decoded = decode_head(Bytes::from(head)).expect("decodes");
        assert_eq!((decoded.chunks, decoded.generation), (3, 42));
        let values = chunks.iter().map(|c| Some(c.to_vec())).collect();
        assert_eq!(assemble(&decoded, values), Some(original.body));
    }

    #[test]
    fn a_missing_chunk_makes_the_entry_unusable() {
        let (head, chunks) = encode(&entry(b"0123456789abcdefXYZ"), 8, 1);
        let decoded = decode_head(Bytes::from(head)).expect("decodes");
        let mut values: Vec<Option<Vec<u8>>> = chunks.iter().map(|c| Some(c.to_vec())).collect();
        values[1] = None;
        assert_eq!(assemble(&decoded, values), None);
    }

    #[test]
    fn foreign_or_truncated_values_are_refused() {
        assert_eq!(
            decode_head(Bytes::from_static(b"hello")).err(),
            Some(DecodeError::Magic)
        );
        let (head, _) = encode(&entry(b"hello"), 8, 1);
        let cut = Bytes::from(head[..head.len() - 2].to_vec());
        assert_eq!(decode_head(cut).err(), Some(DecodeError::Truncated));
    }

    #[test]
    fn entry_keys_carry_the_url_for_purge_patterns() {
        let keys = Keys::new("p:");
        let key = keys.entry("http://a.test:80/x y", "abc");
        assert_eq!(keys.url_of(&key), Some("http://a.test:80/x y"));
        assert_eq!(keys.url_of("p:l:abc"), None);
        assert_eq!(
            keys.entries_starting_with("http://a.test:80/[x]*"),
            "p:e:http://a.test:80/\\[x\\]\\**"
        );
        assert_eq!(
            literal_prefix_of_glob("http://a:80/img/*.png"),
            "http://a:80/img/"
        );
        assert_eq!(literal_prefix_of_glob("http://a:80/x"), "http://a:80/x");
    }

    #[test]
    fn the_ttl_is_freshness_left_plus_the_longer_stale_window() {
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, None).expect("header");
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 30, 300, header);
        let ttl = ttl(&meta, now).expect("worth storing");
        assert_eq!(ttl, Duration::from_secs(360));
        let header = ResponseHeader::build(200, None).expect("header");
        let expired = CacheMeta::new(now - Duration::from_secs(1), now, 0, 0, header);
        assert_eq!(super::ttl(&expired, now), None);
    }
}
