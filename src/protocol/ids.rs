//! Identifiers the proxy mints: session ids (sent to clients as `Mcp-Session-Id`) and stream ids
//! (embedded in client-visible SSE event ids).

use std::{fmt, sync::Arc};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

/// A proxy session id: 128 bits from the OS CSPRNG as unpadded base64url (22 visible ASCII
/// characters, within the spec's 0x21–0x7E range for `Mcp-Session-Id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

/// A stream id, unique within its session: 64 random bits as 16 lowercase hex digits, so replicas
/// minting ids for the same session never collide in practice and never need to coordinate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

/// The OS random source failed; no id can be minted safely.
#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed: {0}")]
pub struct RandomError(#[from] getrandom::Error);

impl SessionId {
    /// Mints a fresh session id.
    pub fn mint() -> Result<Self, RandomError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes).into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl StreamId {
    /// Mints a fresh stream id.
    pub fn mint() -> Result<Self, RandomError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes)?;
        Ok(Self(format!("{:016x}", u64::from_be_bytes(bytes)).into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SessionId {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<&str> for StreamId {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for SessionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Whether `id` has the shape of a proxy session id ([`SessionId::mint`]): anything else is
/// answered 404 without asking the store.
pub fn is_session_id(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Whether `id` has the shape of a stream id ([`StreamId::mint`]).
pub fn is_stream_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_22_url_safe_visible_ascii_and_distinct() {
        let a = SessionId::mint().unwrap();
        let b = SessionId::mint().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 22);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn stream_ids_are_16_hex_digits_without_separator() {
        let s = StreamId::mint().unwrap();
        assert_eq!(s.as_str().len(), 16);
        assert!(s.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
