//! Every size, duration and round count of the harness, from environment variables, with full
//! defaults and smaller `QUICK=1` ones (a smoke test of about a minute). A value that does not
//! parse is an error, never silently the default.

use std::path::PathBuf;

use crate::{
    error::{Context as _, Result, bail},
    mcp::Era,
};

/// The measurements, in the order they run.
pub const PHASES: [&str; 5] = ["json", "sse", "fanout", "hold", "sessions"];

pub struct Settings {
    pub quick: bool,
    pub phases: Vec<String>,
    pub rounds: u64,
    pub wrk_secs: u64,
    pub wrk_warmup_secs: u64,
    pub wrk_conns: Vec<u64>,
    pub json_eras: Vec<Era>,
    pub sse_eras: Vec<Era>,
    pub events: u64,
    pub streams: u64,
    pub stream_events: u64,
    pub hold_eras: Vec<Era>,
    pub hold_streams: u64,
    pub hold_conns: u64,
    pub hold_h1_streams: u64,
    pub sessions: u64,
    pub session_concurrency: u64,
    pub upstream_threads: usize,
    pub driver_threads: usize,
    pub nginx_workers: usize,
    pub linger_secs: u64,
    pub open_concurrency: usize,
    pub settle_ms: u64,
    pub step_timeout_secs: u64,
    pub report: PathBuf,
    /// `NAME=value` of every setting, in order (for the report).
    pub effective: Vec<(&'static str, String)>,
    /// The variables the caller actually set (to reproduce the command).
    pub given: Vec<(&'static str, String)>,
}

struct Reader {
    quick: bool,
    effective: Vec<(&'static str, String)>,
    given: Vec<(&'static str, String)>,
}

impl Reader {
    fn raw(&mut self, name: &'static str, full: &str, quick: &str) -> String {
        let value = match std::env::var(name) {
            Ok(v) => {
                self.given.push((name, v.clone()));
                v
            }
            Err(_) => if self.quick { quick } else { full }.to_owned(),
        };
        self.effective.push((name, value.clone()));
        value
    }

    fn num(&mut self, name: &'static str, full: u64, quick: u64) -> Result<u64> {
        let v = self.raw(name, &full.to_string(), &quick.to_string());
        v.trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{name}={v:?}: expected a whole number"))
    }

    fn nums(&mut self, name: &'static str, default: &str) -> Result<Vec<u64>> {
        let v = self.raw(name, default, default);
        v.split(',')
            .map(|n| n.trim().parse::<u64>())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("{name}={v:?}: expected numbers separated by commas"))
    }

    fn eras(&mut self, name: &'static str) -> Result<Vec<Era>> {
        let v = self.raw(name, "legacy,modern", "legacy,modern");
        Era::parse_list(&v).map_err(|e| crate::error::Error::msg(format!("{name}: {e}")))
    }
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let quick = std::env::var("QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut r = Reader {
            quick,
            effective: Vec::new(),
            given: Vec::new(),
        };
        if quick {
            r.given.push(("QUICK", "1".into()));
        }
        let phases: Vec<String> = r
            .raw("PHASES", &PHASES.join(","), &PHASES.join(","))
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        if let Some(p) = phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
            bail!("PHASES: unknown phase {p:?} (known: {})", PHASES.join(", "));
        }
        let default_report = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(
                || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")),
                PathBuf::from,
            )
            .join("bench/load.md");
        let default_report = default_report.display().to_string();
        let s = Self {
            quick,
            phases,
            rounds: r.num("ROUNDS", 3, 1)?.max(1),
            wrk_secs: r.num("WRK_SECS", 5, 1)?.max(1),
            wrk_warmup_secs: r.num("WRK_WARMUP_SECS", 1, 0)?,
            wrk_conns: r.nums("WRK_CONNS", "1,4,32")?,
            json_eras: r.eras("JSON_ERAS")?,
            sse_eras: r.eras("SSE_ERAS")?,
            events: r.num("EVENTS", 200_000, 20_000)?,
            streams: r.num("STREAMS", 1_000, 100)?,
            stream_events: r.num("STREAM_EVENTS", 1_000, 200)?,
            hold_eras: r.eras("HOLD_ERAS")?,
            hold_streams: r.num("HOLD_STREAMS", 10_000, 500)?,
            hold_conns: r.num("HOLD_CONNS", 100, 5)?.max(1),
            hold_h1_streams: r.num("HOLD_H1_STREAMS", 1_000, 100)?,
            sessions: r.num("SESSIONS", 100_000, 5_000)?,
            session_concurrency: r.num("SESSION_CONCURRENCY", 32, 32)?.max(1),
            upstream_threads: r.num("UPSTREAM_THREADS", 2, 2)?.max(1) as usize,
            driver_threads: r.num("DRIVER_THREADS", 2, 2)?.max(1) as usize,
            nginx_workers: r.num("NGINX_WORKERS", 2, 2)?.max(1) as usize,
            linger_secs: r.num("LINGER_SECS", 2, 1)?,
            open_concurrency: r.num("OPEN_CONCURRENCY", 256, 256)?.max(1) as usize,
            settle_ms: r.num("SETTLE_MS", 1_000, 500)?,
            step_timeout_secs: r.num("STEP_TIMEOUT_SECS", 300, 120)?.max(10),
            report: PathBuf::from(r.raw("LOAD_REPORT", &default_report, &default_report)),
            effective: Vec::new(),
            given: Vec::new(),
        };
        let per_conn = s.hold_streams.div_ceil(s.hold_conns);
        if per_conn > 200 {
            bail!(
                "HOLD_STREAMS / HOLD_CONNS = {per_conn} h2c streams per connection: mcp-relay's \
                 HTTP/2 server allows 200 at once; raise HOLD_CONNS"
            );
        }
        // Per process 20,000 descriptors (the hard limit here): a proxy holds two per HTTP/1.1
        // stream, the upstream one per stream, the driver one per HTTP/1.1 stream.
        for (name, n) in [
            ("STREAMS", s.streams),
            ("HOLD_H1_STREAMS", s.hold_h1_streams),
            ("HOLD_STREAMS", s.hold_streams),
        ] {
            let need = if name == "HOLD_STREAMS" { n } else { 2 * n };
            if need > 19_000 {
                bail!(
                    "{name}={n} needs about {need} descriptors in a proxy; the open-file limit \
                     is 20,000 per process"
                );
            }
        }
        let effective = std::mem::take(&mut r.effective);
        let given = std::mem::take(&mut r.given);
        Ok(Self {
            effective,
            given,
            ..s
        })
    }

    pub fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }

    /// The command that reproduces this run.
    pub fn command(&self) -> String {
        let via = std::env::var("LOAD_VIA").unwrap_or_else(|_| "cargo bench --bench load".into());
        let mut parts: Vec<String> = self.given.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(via);
        parts.join(" ")
    }

    /// Every setting as `NAME=value`.
    pub fn describe(&self) -> String {
        self.effective
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
