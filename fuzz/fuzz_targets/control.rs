//! The control plane's request parsing through `SessionService` (`src/control/filter.rs`, the
//! page tokens and names of `src/control/sessions.rs`). Input: `<filter>\n<page token>\n<name>`.
//! Invariant: served, or refused with INVALID_ARGUMENT (NOT_FOUND for a well-formed name).
#![no_main]

use std::sync::{Arc, OnceLock};

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use mcp_relay::{
    control::{
        SessionAdmin,
        pb::{self, session_service_server::SessionService},
    },
    session::{PersistenceWorker, SessionConfig, SessionManager, WorkerConfig, store::MemoryStore},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

struct Fixture {
    rt: tokio::runtime::Runtime,
    admin: SessionAdmin,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (_worker, handle) =
            PersistenceWorker::new(Arc::new(MemoryStore::new()), WorkerConfig::default());
        let manager = Arc::new(SessionManager::new(SessionConfig::default(), handle));
        for (i, up) in ["http://a/mcp", "http://b/mcp", "http://a/mcp"]
            .iter()
            .enumerate()
        {
            let v = ["2025-03-26", "2025-06-18", "2025-11-25"][i];
            manager
                .create_session(HeaderValue::from_static("up"), Arc::from(*up), v)
                .expect("mint");
        }
        Fixture {
            rt,
            admin: SessionAdmin::new(manager, CancellationToken::new()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let filter = parts.next().unwrap_or_default().to_owned();
    let page_token = parts.next().unwrap_or_default().to_owned();
    let name = parts.next().unwrap_or_default().to_owned();
    let f = fixture();
    let page_size = i32::from(data.first().copied().unwrap_or(0) % 4);
    let listed =
        f.rt.block_on(f.admin.list_sessions(Request::new(pb::ListSessionsRequest {
            page_size,
            page_token,
            filter: filter.clone(),
        })));
    if let Err(s) = &listed {
        assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
    }
    // A filter that parses keeps a subset of the sessions, in the same order.
    if let Ok(r) =
        f.rt.block_on(f.admin.list_sessions(Request::new(pb::ListSessionsRequest {
            page_size: 1000,
            page_token: String::new(),
            filter,
        })))
    {
        let all =
            f.rt.block_on(
                f.admin
                    .list_sessions(Request::new(pb::ListSessionsRequest::default())),
            )
            .expect("unfiltered")
            .into_inner()
            .sessions;
        let mut rest = all.iter();
        for s in &r.into_inner().sessions {
            assert!(
                rest.any(|a| a.name == s.name),
                "a filtered listing is a subsequence"
            );
        }
    }
    let got = f.rt.block_on(
        f.admin
            .get_session(Request::new(pb::GetSessionRequest { name: name.clone() })),
    );
    if let Err(s) = got {
        assert!(
            matches!(s.code(), Code::InvalidArgument | Code::NotFound),
            "{:?}",
            s
        );
    }
    let got = f.rt.block_on(
        f.admin
            .get_last_event_id(Request::new(pb::GetLastEventIdRequest { name })),
    );
    if let Err(s) = got {
        assert!(
            matches!(s.code(), Code::InvalidArgument | Code::NotFound),
            "{:?}",
            s
        );
    }
});
