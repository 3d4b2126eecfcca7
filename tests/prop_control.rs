//! Property tests of the control plane's request parsing (`src/control/filter.rs`, the page
//! tokens and resource names of `src/control/sessions.rs`), through `SessionService` itself:
//! any filter, page token or name is served or refused with `INVALID_ARGUMENT` (or
//! `NOT_FOUND` for a well-formed name of nothing), never a panic; a valid filter keeps exactly
//! the sessions it names; paging with `next_page_token` lists every session once, in order.

use std::sync::{Arc, OnceLock};

use http::HeaderValue;
use mcp_relay::{
    control::{
        SessionAdmin,
        pb::{self, session_service_server::SessionService},
    },
    session::{PersistenceWorker, SessionConfig, SessionManager, WorkerConfig, store::MemoryStore},
};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

const UPSTREAMS: [&str; 2] = ["http://a/mcp", "http://b:9/mcp"];
const VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// Route names; `""` is a session restored from a record written before routes existed.
const ROUTES: [&str; 3] = ["/mcp", "/other", ""];

/// A SessionService over `n` sessions with mixed routes, upstreams and versions.
fn admin(n: usize) -> SessionAdmin {
    let (_worker, handle) =
        PersistenceWorker::new(Arc::new(MemoryStore::new()), WorkerConfig::default());
    let manager = Arc::new(SessionManager::new(SessionConfig::default(), handle));
    for i in 0..n {
        manager
            .create_session(
                HeaderValue::from_static("up"),
                ROUTES[i % 3].into(),
                Arc::from(UPSTREAMS[i % 2]),
                VERSIONS[i % 3],
            )
            .expect("mint");
    }
    SessionAdmin::new(manager, CancellationToken::new())
}

fn list(
    admin: &SessionAdmin,
    page_size: i32,
    page_token: &str,
    filter: &str,
) -> Result<pb::ListSessionsResponse, tonic::Status> {
    let req = pb::ListSessionsRequest {
        page_size,
        page_token: page_token.to_owned(),
        filter: filter.to_owned(),
    };
    runtime()
        .block_on(admin.list_sessions(Request::new(req)))
        .map(tonic::Response::into_inner)
}

fn filter_text() -> impl Strategy<Value = String> {
    let term = prop_oneof![
        "[ -~]{0,24}",
        "(state|era|route|upstream|protocol_version|x)[ ]{0,2}=[ ]{0,2}\"?[A-Z_a-z0-9:/.-]{0,12}\"?",
        ".{0,12}",
    ];
    prop::collection::vec(term, 0..4).prop_map(|t| t.join(" AND "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any filter, page token and page size is served or refused with INVALID_ARGUMENT.
    #[test]
    fn any_list_request_is_served_or_invalid_argument(
        filter in filter_text(),
        token in prop_oneof!["[A-Za-z0-9_-]{0,24}", ".{0,16}", "[0-9]{0,40}/.{0,8}".prop_map(|t| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)
        })],
        page_size in any::<i32>(),
    ) {
        let admin = admin(3);
        if let Err(status) = list(&admin, page_size, &token, &filter) {
            prop_assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        }
    }

    /// A resource name of any shape is served, refused with INVALID_ARGUMENT, or not found.
    #[test]
    fn any_name_is_served_invalid_or_not_found(name in "[ -~]{0,40}|(sessions/[a-zA-Z0-9_/-]{0,30})") {
        let admin = admin(1);
        for result in [
            runtime()
                .block_on(admin.get_session(Request::new(pb::GetSessionRequest { name: name.clone() })))
                .map(|_| ()),
            runtime()
                .block_on(admin.get_last_event_id(Request::new(pb::GetLastEventIdRequest {
                    name: name.clone(),
                })))
                .map(|_| ()),
        ] {
            if let Err(status) = result {
                prop_assert!(
                    matches!(status.code(), Code::InvalidArgument | Code::NotFound),
                    "{:?}: {}", status.code(), status.message()
                );
            }
        }
    }

    /// A filter built from valid terms keeps exactly the sessions its terms hold for.
    #[test]
    fn a_valid_filter_keeps_exactly_the_matching_sessions(
        upstream in proptest::option::of(0usize..3),
        route in proptest::option::of(0usize..4),
        version in proptest::option::of(0usize..4),
        era in proptest::option::of(prop_oneof![Just("LEGACY"), Just("MODERN")]),
        quoted in any::<bool>(),
        n in 0usize..8,
    ) {
        let q = |v: &str| if quoted { format!("\"{v}\"") } else { v.to_owned() };
        let upstream = upstream.map(|i| UPSTREAMS.get(i).copied().unwrap_or("http://none/"));
        let version = version.map(|i| VERSIONS.get(i).copied().unwrap_or("2026-07-28"));
        let route = route.map(|i| ROUTES.get(i).copied().unwrap_or("/none"));
        let mut terms = Vec::new();
        if let Some(u) = upstream { terms.push(format!("upstream = {}", q(u))); }
        if let Some(v) = version { terms.push(format!("protocol_version={}", q(v))); }
        if let Some(e) = era { terms.push(format!("era = {}", q(e))); }
        // An empty value is only expressible quoted.
        if let Some(r) = route { terms.push(format!("route = \"{r}\"")); }
        let admin = admin(n);
        let all = list(&admin, 1000, "", "").expect("unfiltered").sessions;
        let got = list(&admin, 1000, "", &terms.join(" AND ")).expect("valid filter").sessions;
        let want: Vec<&pb::Session> = all
            .iter()
            .filter(|s| upstream.is_none_or(|u| s.upstream == u))
            .filter(|s| version.is_none_or(|v| s.protocol_version == v))
            .filter(|s| route.is_none_or(|r| s.route == r))
            // Every test session is of a legacy version.
            .filter(|_| era != Some("MODERN"))
            .collect();
        let got_names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        let want_names: Vec<&str> = want.iter().map(|s| s.name.as_str()).collect();
        prop_assert_eq!(got_names, want_names);
    }

    /// Following `next_page_token` lists every session exactly once, in the listing's order,
    /// and the last page has no token.
    #[test]
    fn page_tokens_round_trip(n in 0usize..14, page_size in 1i32..6) {
        let admin = admin(n);
        let all: Vec<String> = list(&admin, 1000, "", "")
            .expect("unpaged")
            .sessions
            .into_iter()
            .map(|s| s.name)
            .collect();
        prop_assert_eq!(all.len(), n);
        let mut paged = Vec::new();
        let mut token = String::new();
        for _ in 0..=n {
            let page = list(&admin, page_size, &token, "").expect("a page");
            prop_assert!(page.sessions.len() <= page_size as usize);
            paged.extend(page.sessions.into_iter().map(|s| s.name));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        prop_assert!(token.is_empty(), "paging did not end");
        prop_assert_eq!(paged, all);
    }
}
