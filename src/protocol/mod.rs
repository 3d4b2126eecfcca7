//! The protocol's vocabulary, shared by every plane: the two MCP generations ([`Era`]) and their
//! versions, the MCP header names, reading a JSON-RPC message without re-serializing it, the
//! client-visible event id, and the shapes of the ids the proxy mints (DESIGN.md, "The protocol
//! it proxies"; PROTOCOL.md).
//!
//! Nothing here does I/O or holds state: the data plane ([`crate::proxy`]), the session core
//! ([`crate::session`]), the control plane ([`crate::control`]) and telemetry all import it, and
//! it imports none of them.

pub mod era;
pub mod event_id;
pub mod headers;
pub mod ids;

pub use era::Era;
pub use event_id::ClientEventId;
pub use ids::{RandomError, SessionId, StreamId, is_session_id, is_stream_id};
