//! Bearer-token authentication of every control-plane call (reflection and health included):
//! `authorization: Bearer <token>`, compared in constant time. The token is never logged, and
//! its `Debug` form is redacted.

use std::{fmt, sync::Arc};

use tonic::{Request, Status};

/// The bearer token calls must carry.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    /// A token; `None` when `token` is empty or only whitespace (no authentication).
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        (!token.is_empty()).then(|| Self(token.into()))
    }

    /// Whether an `authorization` header value presents this token.
    fn admits(&self, authorization: &[u8]) -> bool {
        let Some(presented) = strip_bearer(authorization) else {
            return false;
        };
        constant_time_eq(presented, self.0.as_bytes())
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1) → `<token>`.
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The interceptor: admits every call when no token is configured.
#[derive(Clone, Debug)]
pub struct Authenticate {
    token: Option<BearerToken>,
}

impl Authenticate {
    pub fn new(token: Option<BearerToken>) -> Self {
        Self { token }
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        match presented {
            Some(value) if token.admits(value) => Ok(request),
            Some(_) => {
                tracing::warn!("control-plane call refused: wrong bearer token");
                Err(Status::unauthenticated("invalid bearer token"))
            }
            None => {
                tracing::warn!("control-plane call refused: no bearer token");
                Err(Status::unauthenticated(
                    "this control plane requires `authorization: Bearer <token>`",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor as _;

    use super::*;

    fn call(auth: &mut Authenticate, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(request).map(drop).map_err(|s| s.code())
    }

    #[test]
    fn only_the_configured_bearer_token_is_admitted() {
        let mut auth = Authenticate::new(BearerToken::new("s3cr3t"));
        assert_eq!(call(&mut auth, Some("Bearer s3cr3t")), Ok(()));
        assert_eq!(call(&mut auth, Some("bearer  s3cr3t ")), Ok(()));
        for bad in [
            None,
            Some("Bearer s3cr3"),
            Some("Bearer s3cr3tt"),
            Some("Basic s3cr3t"),
            Some("s3cr3t"),
            Some("Bearer"),
        ] {
            assert_eq!(
                call(&mut auth, bad),
                Err(tonic::Code::Unauthenticated),
                "{bad:?}"
            );
        }
        let mut open = Authenticate::new(None);
        assert_eq!(call(&mut open, None), Ok(()));
    }

    #[test]
    fn tokens_are_never_printed_and_blank_means_none() {
        let token = BearerToken::new("s3cr3t").unwrap();
        assert!(!format!("{token:?}").contains("s3cr3t"));
        assert!(BearerToken::new("  ").is_none());
    }
}
