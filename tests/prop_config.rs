//! Property tests of configuration files (`src/config/file.rs`): any TOML document is loaded or
//! refused with an error, never a panic; what loads prints (`check-config`) without panicking
//! and reads back to the same settings; valid values round-trip through a file.

// figment's `Jail` closures return its own (large) error type.
#![allow(clippy::result_large_err)]

use std::{io::Write as _, time::Duration};

use mcp_relay::config::file::{Loaded, MAX_DURATION, Sources, load};
use proptest::prelude::*;

/// Every key path of the file, with a valid value and the section it sits in.
const KEYS: &[(&str, &str, &str)] = &[
    ("", "listen", "\"127.0.0.1:8080\""),
    ("", "admin_listen", "\"127.0.0.1:8081\""),
    ("", "admin_socket", "\"/run/mcp-relay/admin.sock\""),
    ("", "admin_token", "\"s3cret\""),
    ("", "shutdown_grace_secs", "5"),
    ("proxy", "upstream", "\"http://127.0.0.1:3001/mcp\""),
    ("proxy", "endpoint_path", "\"/mcp\""),
    ("proxy", "allowed_origins", "[\"https://a.example\"]"),
    ("proxy", "allow_loopback_origins", "true"),
    ("proxy", "max_request_body_bytes", "4096"),
    ("proxy", "max_event_bytes", "65536"),
    ("proxy", "sse_keepalive_secs", "5"),
    ("proxy", "upstream_tcp_keepalive_secs", "20"),
    ("proxy", "forwarded", "\"replace\""),
    ("proxy", "trusted_proxies", "[\"10.0.0.0/8\", \"::1\"]"),
    ("proxy", "upstream_connect_timeout_ms", "100"),
    ("proxy", "upstream_response_timeout_secs", "30"),
    ("proxy", "threads", "2"),
    ("proxy", "public_url", "\"https://mcp.example.com/mcp\""),
    ("session", "idle_ttl_secs", "60"),
    ("session", "closed_streams_kept", "4"),
    ("session", "linger_secs", "3"),
    ("session", "reconnect_attempts", "2"),
    ("session", "reconnect_min_delay_ms", "10"),
    ("session", "reconnect_max_delay_ms", "100"),
    ("session.tracker", "dedup_ids", "16"),
    ("session.tracker", "replay_events", "8"),
    ("session.tracker", "replay_bytes", "1024"),
    ("worker", "flush_interval_ms", "50"),
    ("worker", "record_ttl_secs", "600"),
    ("worker", "max_backoff_ms", "1000"),
    ("worker", "max_pending", "100"),
    ("store", "backend", "\"memory\""),
    ("store", "url", "\"redis://user:pw@127.0.0.1:6379\""),
    ("store", "key_prefix", "\"relay:\""),
    ("store", "timeout_ms", "500"),
    ("metrics", "enabled", "true"),
    ("metrics", "listen", "\"127.0.0.1:9090\""),
    ("log", "target", "\"stderr\""),
    ("log", "format", "\"json\""),
    ("log", "filter", "\"info,mcp_relay=debug\""),
    ("systemd", "watchdog", "false"),
];

/// A TOML value of any type, often of the wrong one for its key.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0i64..100).prop_map(|n| n.to_string()),
        Just("0".to_owned()),
        Just(i64::MAX.to_string()),
        Just("-1".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[ -!#-\\[\\]-~]{0,16}".prop_map(|s| format!("\"{s}\"")),
        Just("\"http://u:p@h/x\"".to_owned()),
        Just("\"[::1]:0\"".to_owned()),
        Just("[]".to_owned()),
        Just("[1, \"a\"]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
    ]
}

/// A document: sections with keys (known ones, mostly), valid or arbitrary values.
fn document() -> impl Strategy<Value = String> {
    let entry = (
        0..KEYS.len(),
        any::<bool>(),
        value(),
        prop_oneof![9 => Just(None), 1 => "[a-z_]{1,8}".prop_map(Some)],
    );
    prop_oneof![
        8 => (prop::collection::vec(entry, 0..16), any::<bool>()).prop_map(|(entries, upstream)| {
            let mut lines = Vec::new();
            if upstream {
                lines.push(("proxy", "upstream".to_owned(), "\"http://127.0.0.1:1/mcp\"".to_owned()));
            }
            for (k, valid, v, unknown) in entries {
                let (section, key, good) = KEYS[k];
                let key = unknown.unwrap_or_else(|| key.to_owned());
                lines.push((section, key, if valid { good.to_owned() } else { v }));
            }
            // Keys of one section together, each key once (TOML refuses duplicates anyway).
            lines.sort_by(|a, b| a.0.cmp(b.0));
            lines.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
            let mut doc = String::new();
            let mut current = "";
            for (section, key, v) in lines {
                if section != current {
                    doc.push_str(&format!("[{section}]\n"));
                    current = section;
                }
                doc.push_str(&format!("{key} = {v}\n"));
            }
            doc
        }),
        1 => ".{0,80}",
        1 => "[\\[\\]a-z_.=\" 0-9\n]{0,80}",
    ]
}

fn load_text(doc: &str) -> Result<Loaded, String> {
    let mut file = tempfile::NamedTempFile::new().expect("a temp file");
    file.write_all(doc.as_bytes()).expect("written");
    load(&Sources {
        file: Some(file.path().to_owned()),
        ..Sources::default()
    })
    .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any document loads or is refused with an error; what loads prints, and the printed
    /// configuration (when it has no secret to mask) loads back to the same settings.
    #[test]
    fn any_document_loads_or_errs_and_what_loads_prints_and_reads_back(doc in document()) {
        let Ok(loaded) = load_text(&doc) else {
            return Ok(());
        };
        let printed = loaded.to_masked_toml();
        let masked = printed.contains(mcp_relay::config::file::MASK);
        if !masked {
            let again = load_text(&printed)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
            prop_assert_eq!(again, loaded);
        }
    }

    /// Valid values of every key written to a file load back as written, and the settings
    /// they load as, written back to a file, load as the same settings.
    #[test]
    fn valid_values_round_trip(
        // Durations are valid up to a year (`file::MAX_DURATION`).
        grace in 1u64..=MAX_DURATION.as_secs(),
        max_event_bytes in 1usize..=i64::MAX as usize,
        replay_events in 1usize..100_000,
        flush in 1u64..10_000,
        backoff_extra in 0u64..=(MAX_DURATION.as_millis() as u64 - 10_000),
        origins in prop::collection::vec("[a-z]{1,8}", 0..3),
        prefix in "[ -!#-\\[\\]-~]{0,12}",
        threads in 0usize..=1024,
    ) {
        let origins: Vec<String> = origins.iter().map(|o| format!("\"https://{o}.example\"")).collect();
        let doc = format!(
            "shutdown_grace_secs = {grace}\n\
             [proxy]\nupstream = \"http://127.0.0.1:1/mcp\"\nmax_event_bytes = {max_event_bytes}\n\
             allowed_origins = [{}]\nthreads = {threads}\n\
             [session.tracker]\nreplay_events = {replay_events}\n\
             [worker]\nflush_interval_ms = {flush}\nmax_backoff_ms = {}\n\
             [store]\nkey_prefix = \"{prefix}\"\n",
            origins.join(", "),
            flush + backoff_extra,
        );
        let loaded = load_text(&doc).map_err(|e| TestCaseError::fail(format!("{e}\n{doc}")))?;
        let config = &loaded.config;
        prop_assert_eq!(config.shutdown_grace, Duration::from_secs(grace));
        prop_assert_eq!(config.proxy.max_event_bytes, max_event_bytes);
        prop_assert_eq!(config.proxy.threads, threads);
        prop_assert_eq!(config.proxy.allowed_origins.len(), origins.len());
        prop_assert_eq!(config.session.tracker_limits.replay_events, replay_events);
        prop_assert_eq!(config.worker.flush_interval.as_millis(), u128::from(flush));
        prop_assert_eq!(&config.store.key_prefix, &prefix);
        let written = toml::to_string(config).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = load_text(&written).map_err(|e| TestCaseError::fail(format!("{e}\n{written}")))?;
        prop_assert_eq!(&again.config, config);
    }
}

/// Integer settings, as environment variables.
const INTEGER_ENV: &[&str] = &[
    "MCP_RELAY_SHUTDOWN_GRACE_SECS",
    "MCP_RELAY_PROXY__MAX_REQUEST_BODY_BYTES",
    "MCP_RELAY_PROXY__MAX_EVENT_BYTES",
    "MCP_RELAY_PROXY__UPSTREAM_CONNECT_TIMEOUT_MS",
    "MCP_RELAY_SESSION__IDLE_TTL_SECS",
    "MCP_RELAY_SESSION__RECONNECT_MAX_DELAY_MS",
    "MCP_RELAY_SESSION__TRACKER__REPLAY_BYTES",
    "MCP_RELAY_WORKER__MAX_PENDING",
    "MCP_RELAY_WORKER__RECORD_TTL_SECS",
    "MCP_RELAY_STORE__TIMEOUT_MS",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// What another layer than the file sets (an environment variable here) either loads and
    /// prints, or is refused naming the key; a number TOML cannot hold (above 2^63 - 1) cannot
    /// be printed, so it is refused.
    #[test]
    fn what_the_environment_sets_loads_and_prints_or_is_refused(
        var in prop::sample::select(INTEGER_ENV),
        n in prop_oneof![any::<u64>(), (i64::MAX as u64 - 2)..=(i64::MAX as u64 + 2)],
    ) {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MCP_RELAY_UPSTREAM", "http://127.0.0.1:1/mcp");
            jail.set_env(var, n.to_string());
            let sources = Sources { env: true, ..Sources::default() };
            match load(&sources) {
                Ok(loaded) => {
                    let printed = loaded.to_masked_toml();
                    assert!(n <= i64::MAX as u64, "{var}={n} loaded:\n{printed}");
                }
                Err(err) => {
                    let key = var.rsplit("__").next().unwrap_or(var).to_lowercase();
                    let key = key.trim_start_matches("mcp_relay_");
                    assert!(err.to_string().to_lowercase().contains(key), "{var}={n}: {err}");
                }
            }
            Ok(())
        });
    }
}
