//! The load harness (issue 7): the same fast upstream on loopback reached three ways —
//! **direct**, **through mcp-relay**, **through nginx** — measured side by side in one run.
//!
//!     scripts/bench.sh                      # installs nginx-light and wrk if missing, then:
//!     cargo bench --bench load              # full size (about 6 minutes on 2 cores, ROUNDS=3)
//!     QUICK=1 cargo bench --bench load      # smoke test (about a minute)
//!
//! Four processes, so each one's RSS and descriptors are its own: the **upstream** (this binary
//! re-executed with `LOAD_ROLE=upstream`, `upstream.rs`), **mcp-relay** (the release binary,
//! `relay.rs`), **nginx** (`nginx.rs`, `nginx.conf.in`) and this **driver** (a hyper client,
//! plus `wrk` for JSON). Everything binds 127.0.0.1 on free ports; every step is bounded in
//! time (`STEP_TIMEOUT_SECS`); every child is killed when the driver ends, even on a panic.
//!
//! Measurements (rounds rotate the target order so machine noise hits all three; medians):
//!
//! 1. **json** — JSON-RPC `tools/list` with wrk (`-t1`, `-c` 1/4/32, `--latency`), legacy (with
//!    the session an `initialize` through the same target opened) and modern: requests/s, p50
//!    and p99 latency; proxy÷direct throughput and latency added over direct (`wrk.rs`).
//! 2. **sse** — events/s through one SSE stream of `EVENTS` events, both eras (`sse.rs`).
//! 3. **fanout** — aggregate events/s over `STREAMS` concurrent streams of `STREAM_EVENTS`
//!    events, all opened before the upstream is told to send (`sse.rs`).
//! 4. **hold** — `HOLD_STREAMS` SSE streams held open over h2c (`HOLD_CONNS` connections; the
//!    proxies' upstream side stays HTTP/1.1, one connection per stream), and `HOLD_H1_STREAMS`
//!    over HTTP/1.1 on both sides, each confirmed by its first event: the proxy's RSS (nginx:
//!    master + workers) before, while held and after closing, KiB per held stream, descriptors,
//!    and mcp-relay's alive tokio tasks (`mcp_relay_runtime_alive_tasks`) per held stream. Each
//!    configuration runs against a freshly started proxy, so earlier phases' heap does not
//!    hide its growth. Direct has no proxy, hence no column.
//! 5. **sessions** — `SESSIONS` `initialize` requests (`SESSION_CONCURRENCY` keep-alive
//!    connections): initialize/s for all three targets, and mcp-relay's RSS growth per idle
//!    legacy session (fresh process; nginx keeps no sessions).
//!
//! Results are printed and written as Markdown to `target/bench/load.md` (`LOAD_REPORT`),
//! headed by the machine, versions, commit, date, command and every setting (`settings.rs`).

mod client;
mod error;
mod mcp;
mod nginx;
mod procs;
mod relay;
mod report;
mod settings;
mod sse;
mod upstream;
mod wrk;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use client::Proto;
use error::{Context as _, Result, bail, bounded};
use mcp::{Era, PATH};
use report::{Compare, DIRECT, NGINX, RELAY, Samples, TARGETS, Table};
use settings::Settings;

fn main() -> ExitCode {
    if std::env::var(upstream::ROLE_VAR).as_deref() == Ok("upstream") {
        return match upstream::run_role() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("upstream: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("load bench: settings: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.driver_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load bench: building the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&settings));
    // Children are gone by now (their guards lived in `run`); stop what the driver spawned.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nload bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One way of reaching the upstream.
struct Target {
    addr: SocketAddr,
    /// The legacy session an `initialize` through this target opened.
    session: String,
}

impl Target {
    fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    fn session(&self, era: Era) -> Option<&str> {
        (era == Era::Legacy).then_some(self.session.as_str())
    }
}

/// Round `r`'s order of the targets: rotated, so each goes first, second and last in turn.
fn order(round: u64) -> [usize; 3] {
    let r = (round % 3) as usize;
    [r, (r + 1) % 3, (r + 2) % 3]
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("  {}", msg.as_ref());
}

async fn run(s: &Settings) -> Result<()> {
    wrk::self_check()?;
    let nginx_version = procs::command_output(nginx::nginx_binary(), &["-v"]);
    if !nginx_version.contains("nginx/") {
        bail!(
            "nginx is not runnable ({nginx_version}); scripts/bench.sh installs nginx-light and wrk"
        );
    }
    if s.runs("json") && procs::command_output("wrk", &["-v"]).starts_with('(') {
        bail!("wrk is not installed; scripts/bench.sh installs it");
    }
    let dir = tempfile::Builder::new()
        .prefix("mcp-relay-load-")
        .tempdir()
        .context("creating a temporary directory")?;
    // nginx's workers may run as another user: let them through to their files.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .context("opening the temporary directory to nginx's workers")?;
    }
    let command = s.command();
    let header = report::machine_header(&command);
    println!("{header}- **settings:** {}\n", s.describe());
    let started = Instant::now();

    let up = match upstream::external()? {
        Some(up) => up,
        None => upstream::start(s.upstream_threads, dir.path())
            .await
            .context("starting the upstream")?,
    };
    let mut tables = Vec::new();
    let mut samples = Samples::default();
    let result = phases(s, &up, dir.path(), &mut tables, &mut samples).await;
    if !samples.is_empty() {
        tables.push(samples.rounds_table(
            "Per-round values",
            "Every round's value behind the medians above, in round order (the target order \
             rotates each round; latencies in µs), to show how much the machine moved them.",
        ));
    }

    let mut md = header;
    if s.quick {
        md += "- **QUICK=1:** smoke-test sizes, not numbers to compare or publish\n";
    }
    md += &format!(
        "- **settings:** `{}`\n- **duration:** {:.0} s\n\n",
        s.describe(),
        started.elapsed().as_secs_f64()
    );
    for t in &tables {
        md += &t.markdown();
        md.push('\n');
    }
    if let Err(e) = &result {
        md += &format!("**The run failed:** {e}\n");
    }
    write_report(&s.report, &md)?;
    println!(
        "\n==== results ({}) ====\n\n{}",
        s.report.display(),
        tables
            .iter()
            .map(Table::markdown)
            .collect::<Vec<_>>()
            .join("\n")
    );
    result
}

fn write_report(path: &Path, md: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))
}

async fn phases(
    s: &Settings,
    up: &upstream::Upstream,
    dir: &Path,
    tables: &mut Vec<Table>,
    samples: &mut Samples,
) -> Result<()> {
    if s.runs("json") || s.runs("sse") || s.runs("fanout") {
        let relay = relay::start(up.addr, dir, "main", s.linger_secs)
            .await
            .context("starting mcp-relay")?;
        let nginx = nginx::start(
            up.addr,
            dir,
            "main",
            s.nginx_workers,
            s.hold_streams.div_ceil(s.hold_conns),
        )
        .await
        .context("starting nginx")?;
        let mut targets = Vec::new();
        for (name, addr) in [
            (TARGETS[DIRECT], up.addr),
            (TARGETS[RELAY], relay.addr),
            (TARGETS[NGINX], nginx.addr),
        ] {
            let session = client::initialize(addr)
                .await
                .with_context(|| format!("opening a legacy session through {name}"))?;
            targets.push(Target { addr, session });
        }
        if s.runs("json") {
            println!("\n# JSON-RPC requests (wrk)");
            tables.push(
                json_phase(s, &targets, dir, samples)
                    .await
                    .context("JSON phase")?,
            );
            println!("{}", tables.last().expect("pushed").markdown());
        }
        if s.runs("sse") {
            println!("\n# SSE through one stream");
            tables.push(sse_phase(s, &targets, samples).await.context("SSE phase")?);
            println!("{}", tables.last().expect("pushed").markdown());
        }
        if s.runs("fanout") {
            println!("\n# SSE across concurrent streams");
            tables.push(
                fanout_phase(s, &targets, up.addr, samples)
                    .await
                    .context("fan-out phase")?,
            );
            println!("{}", tables.last().expect("pushed").markdown());
        }
    }
    if s.runs("hold") {
        println!("\n# Held SSE streams");
        tables.push(hold_phase(s, up, dir).await.context("held-streams phase")?);
        println!("{}", tables.last().expect("pushed").markdown());
    }
    if s.runs("sessions") {
        println!("\n# Idle legacy sessions");
        let (rate, memory) = sessions_phase(s, up, dir).await.context("sessions phase")?;
        tables.push(rate);
        tables.push(memory);
        for t in &tables[tables.len() - 2..] {
            println!("{}", t.markdown());
        }
    }
    Ok(())
}

// ---- 1. JSON-RPC requests ----

async fn json_phase(
    s: &Settings,
    targets: &[Target],
    dir: &Path,
    samples: &mut Samples,
) -> Result<Table> {
    let mut labels = Vec::new();
    for &era in &s.json_eras {
        let mut scripts: Vec<PathBuf> = Vec::new();
        for (t, target) in targets.iter().enumerate() {
            let path = dir.join(format!("{}-{era}.lua", TARGETS[t]));
            wrk::write_script(&path, era, target.session(era))?;
            scripts.push(path);
        }
        if s.wrk_warmup_secs > 0 {
            for (t, target) in targets.iter().enumerate() {
                wrk::run(&target.url(), &scripts[t], 4, s.wrk_warmup_secs)
                    .await
                    .with_context(|| format!("warming up {} ({era})", TARGETS[t]))?;
            }
        }
        for &c in &s.wrk_conns {
            let label = format!("{era} `tools/list`, c={c}");
            for round in 0..s.rounds {
                for t in order(round) {
                    let r = wrk::run(&targets[t].url(), &scripts[t], c, s.wrk_secs)
                        .await
                        .with_context(|| format!("{label} through {}", TARGETS[t]))?;
                    progress(format!(
                        "{label} round {}/{}: {:>9} {:>10} req/s  p50 {:>8}  p99 {:>8}",
                        round + 1,
                        s.rounds,
                        TARGETS[t],
                        report::int(r.requests_per_sec),
                        report::us(r.p50_us),
                        report::us(r.p99_us)
                    ));
                    samples.push(&format!("{label}: requests/s"), t, r.requests_per_sec);
                    samples.push(&format!("{label}: p50 latency"), t, r.p50_us);
                    samples.push(&format!("{label}: p99 latency"), t, r.p99_us);
                }
            }
            labels.push(label);
        }
    }
    let mut table = Table::versus_direct(
        "JSON-RPC requests (wrk)",
        format!(
            "wrk -t1 -c<c> -d{}s --latency, POST `tools/list` (legacy: with the session an \
             `initialize` through the same target opened; modern: `Mcp-Method` and `_meta`), \
             median of {} round(s). Latency rows compare by the latency added over direct.",
            s.wrk_secs, s.rounds
        ),
    );
    for label in labels {
        let rps = format!("{label}: requests/s");
        table.add_versus_direct(&rps, samples.medians(&rps), Compare::Ratio, report::int);
        for p in ["p50", "p99"] {
            let row = format!("{label}: {p} latency");
            table.add_versus_direct(&row, samples.medians(&row), Compare::Added, report::us);
        }
    }
    Ok(table)
}

// ---- 2. SSE through one stream ----

async fn sse_phase(s: &Settings, targets: &[Target], samples: &mut Samples) -> Result<Table> {
    let limit = Duration::from_secs(s.step_timeout_secs);
    for &era in &s.sse_eras {
        let label = format!("{era} one stream: events/s");
        for round in 0..s.rounds {
            for t in order(round) {
                let rate = bounded(
                    format!("{label} through {}", TARGETS[t]),
                    limit,
                    sse::one_stream(targets[t].addr, era, targets[t].session(era), s.events),
                )
                .await?;
                progress(format!(
                    "{label} round {}/{}: {:>9} {:>10}",
                    round + 1,
                    s.rounds,
                    TARGETS[t],
                    report::int(rate)
                ));
                samples.push(&label, t, rate);
            }
        }
    }
    let mut table = Table::versus_direct(
        "SSE through one stream",
        format!(
            "One `bench/stream` POST answered with {} events (~110 B each, written 128 per \
             frame) and the JSON-RPC response; the client counts every event from the request \
             to the end of the body. Legacy through mcp-relay: pump + window reader; modern: \
             direct relay. Median of {} round(s).",
            report::int(s.events as f64),
            s.rounds
        ),
    );
    for &era in &s.sse_eras {
        let label = format!("{era} one stream: events/s");
        table.add_versus_direct(&label, samples.medians(&label), Compare::Ratio, report::int);
    }
    Ok(table)
}

// ---- 3. SSE across concurrent streams ----

async fn fanout_phase(
    s: &Settings,
    targets: &[Target],
    upstream: SocketAddr,
    samples: &mut Samples,
) -> Result<Table> {
    let limit = Duration::from_secs(s.step_timeout_secs);
    let label = |era: Era| {
        format!(
            "{era} {} streams × {} events: aggregate events/s",
            report::int(s.streams as f64),
            report::int(s.stream_events as f64)
        )
    };
    for &era in &s.sse_eras {
        for round in 0..s.rounds {
            for t in order(round) {
                let rate = bounded(
                    format!("{} through {}", label(era), TARGETS[t]),
                    limit,
                    sse::fanout(
                        targets[t].addr,
                        upstream,
                        era,
                        targets[t].session(era),
                        s.streams,
                        s.stream_events,
                        s.open_concurrency,
                    ),
                )
                .await?;
                progress(format!(
                    "{} round {}/{}: {:>9} {:>10}",
                    label(era),
                    round + 1,
                    s.rounds,
                    TARGETS[t],
                    report::int(rate)
                ));
                samples.push(&label(era), t, rate);
            }
        }
    }
    let mut table = Table::versus_direct(
        "SSE across concurrent streams",
        format!(
            "{} concurrent HTTP/1.1 streams (one connection each), all opened and past their \
             first event before the upstream is told to send the rest; events after that \
             signal ÷ time to the last stream's end. Median of {} round(s).",
            report::int(s.streams as f64),
            s.rounds
        ),
    );
    for &era in &s.sse_eras {
        table.add_versus_direct(
            &label(era),
            samples.medians(&label(era)),
            Compare::Ratio,
            report::int,
        );
    }
    Ok(table)
}

// ---- 4. Held streams ----

/// A proxy started for one measurement.
enum Proxy {
    Relay(relay::Relay),
    Nginx(nginx::Nginx),
}

impl Proxy {
    fn addr(&self, proto: Proto) -> SocketAddr {
        match (self, proto) {
            (Self::Relay(r), _) => r.addr,
            (Self::Nginx(n), Proto::H1) => n.addr,
            (Self::Nginx(n), Proto::H2c) => n.h2_addr,
        }
    }

    /// RSS (bytes) and descriptors: mcp-relay's process, nginx's master and workers summed.
    fn usage(&self) -> (u64, u64) {
        match self {
            Self::Relay(r) => (
                procs::rss_bytes(r.guard.pid()),
                procs::fd_count(r.guard.pid()),
            ),
            Self::Nginx(n) => procs::tree_usage(n.guard.pid()),
        }
    }

    async fn tasks(&self) -> Result<Option<f64>> {
        match self {
            Self::Relay(r) => Ok(r.gauges().await?.tasks),
            Self::Nginx(_) => Ok(None),
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        match self {
            Self::Relay(r) => r.guard.check_alive(),
            Self::Nginx(n) => n.guard.check_alive(),
        }
    }
}

#[derive(Default)]
struct HoldResult {
    held: u64,
    open_secs: f64,
    rss_before: u64,
    rss_held: u64,
    rss_after: u64,
    fds_held: u64,
    tasks_before: Option<f64>,
    tasks_held: Option<f64>,
    tasks_after: Option<f64>,
    upstream_open_after: i64,
}

async fn upstream_held(upstream: SocketAddr) -> Result<i64> {
    let text = client::get_text(upstream, "/stats").await?;
    let v: serde_json::Value = serde_json::from_str(&text).context("the upstream's /stats")?;
    v["held"]
        .as_i64()
        .context("no `held` in the upstream's /stats")
}

#[allow(clippy::too_many_arguments)]
async fn hold_one(
    s: &Settings,
    up: &upstream::Upstream,
    dir: &Path,
    proto: Proto,
    streams: u64,
    conns: u64,
    era: Era,
    which: usize,
) -> Result<HoldResult> {
    let tag = format!(
        "hold-{}-{era}-{streams}",
        if proto == Proto::H1 { "h1" } else { "h2c" }
    );
    let mut proxy = if which == RELAY {
        Proxy::Relay(relay::start(up.addr, dir, &tag, s.linger_secs).await?)
    } else {
        Proxy::Nginx(
            nginx::start(up.addr, dir, &tag, s.nginx_workers, streams.div_ceil(conns)).await?,
        )
    };
    let session = match era {
        Era::Legacy => Some(client::initialize(proxy.addr(Proto::H1)).await?),
        Era::Modern => None,
    };
    let settle = Duration::from_millis(s.settle_ms);
    let baseline_upstream = upstream_held(up.addr).await?;
    tokio::time::sleep(settle).await;
    let mut r = HoldResult {
        tasks_before: proxy.tasks().await?,
        ..HoldResult::default()
    };
    r.rss_before = proxy.usage().0;

    let opening = Instant::now();
    let held = bounded(
        format!("opening {streams} held streams"),
        Duration::from_secs(s.step_timeout_secs),
        sse::hold(
            proto,
            proxy.addr(proto),
            era,
            session.as_deref(),
            streams,
            conns,
            s.open_concurrency,
        ),
    )
    .await?;
    r.held = held.len() as u64;
    r.open_secs = opening.elapsed().as_secs_f64();
    progress(format!(
        "{tag} via {}: {} streams open in {:.1} s",
        TARGETS[which], r.held, r.open_secs
    ));
    tokio::time::sleep(settle).await;
    proxy.check_alive()?;
    (r.rss_held, r.fds_held) = proxy.usage();
    r.tasks_held = proxy.tasks().await?;
    let at_upstream = upstream_held(up.addr).await? - baseline_upstream;
    if at_upstream != streams as i64 {
        bail!("{streams} streams confirmed by the client, but {at_upstream} open at the upstream");
    }

    held.close();
    // Legacy streams through mcp-relay outlive their client by the pump's linger.
    let deadline = Instant::now() + Duration::from_secs(s.linger_secs + 15);
    loop {
        r.upstream_open_after = upstream_held(up.addr).await? - baseline_upstream;
        if r.upstream_open_after <= 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(settle).await;
    r.rss_after = proxy.usage().0;
    r.tasks_after = proxy.tasks().await?;
    progress(format!(
        "{tag} via {}: RSS {} → {} → {} after close; tasks {:?} → {:?} → {:?}",
        TARGETS[which],
        report::mib(r.rss_before as f64),
        report::mib(r.rss_held as f64),
        report::mib(r.rss_after as f64),
        r.tasks_before,
        r.tasks_held,
        r.tasks_after
    ));
    Ok(r)
}

async fn hold_phase(s: &Settings, up: &upstream::Upstream, dir: &Path) -> Result<Table> {
    let mut table = Table::proxies(
        "Held SSE streams: memory and tasks",
        format!(
            "Streams the upstream holds open after one event, each confirmed by that event, \
             opened through a freshly started proxy; the proxy→upstream side is HTTP/1.1 (one \
             connection per stream) in every case. RSS is `VmRSS` (nginx: master + {} workers \
             summed), read {} ms after the streams opened and again after they were closed and \
             the upstream saw them all end (mcp-relay keeps a legacy stream's pump reading \
             for `session.linger_secs` = {} s after its client left). Tasks: mcp-relay's \
             `mcp_relay_runtime_alive_tasks` (n/a if the build lacks it). An RSS that stays \
             up after close while the tasks and the upstream's open streams are back to their \
             baseline is freed heap the allocator kept, not streams still alive. Opening runs \
             {} streams at a time. Direct has no proxy: no column.",
            s.nginx_workers, s.settle_ms, s.linger_secs, s.open_concurrency
        ),
    );
    let configs = [
        (Proto::H2c, s.hold_streams, s.hold_conns),
        (Proto::H1, s.hold_h1_streams, s.hold_h1_streams),
    ];
    for (proto, streams, conns) in configs {
        if streams == 0 {
            continue;
        }
        for &era in &s.hold_eras {
            let mut results = Vec::new();
            for which in [RELAY, NGINX] {
                results.push(
                    hold_one(s, up, dir, proto, streams, conns, era, which)
                        .await
                        .with_context(|| {
                            format!(
                                "{} {era} streams over {} through {}",
                                streams,
                                proto.name(),
                                TARGETS[which]
                            )
                        })?,
                );
            }
            let (m, n) = (&results[0], &results[1]);
            let client_side = if proto == Proto::H2c {
                format!("h2c ({} conns)", report::int(conns.min(streams) as f64))
            } else {
                "HTTP/1.1".to_owned()
            };
            let p = format!(
                "{} {era} streams, client {client_side}",
                report::int(streams as f64)
            );
            let f = |v: u64| Some(v as f64);
            let per = |r: &HoldResult| {
                Some(r.rss_held.saturating_sub(r.rss_before) as f64 / r.held.max(1) as f64)
            };
            table.add_proxies(&format!("{p}: held"), f(m.held), f(n.held), report::int);
            table.add_proxies(
                &format!("{p}: seconds to open them all"),
                Some(m.open_secs),
                Some(n.open_secs),
                report::secs,
            );
            table.add_proxies(
                &format!("{p}: RSS before"),
                f(m.rss_before),
                f(n.rss_before),
                report::mib,
            );
            table.add_proxies(
                &format!("{p}: RSS while held"),
                f(m.rss_held),
                f(n.rss_held),
                report::mib,
            );
            table.add_proxies(
                &format!("{p}: **KiB per held stream**"),
                per(m),
                per(n),
                report::kib,
            );
            table.add_proxies(
                &format!("{p}: RSS after close"),
                f(m.rss_after),
                f(n.rss_after),
                report::mib,
            );
            table.add_proxies(
                &format!("{p}: descriptors while held"),
                f(m.fds_held),
                f(n.fds_held),
                report::int,
            );
            table.add_proxies(
                &format!("{p}: alive tasks before → held → after"),
                None,
                None,
                report::int,
            );
            let tasks = |r: &HoldResult| match (r.tasks_before, r.tasks_held, r.tasks_after) {
                (Some(b), Some(h), Some(a)) => {
                    format!(
                        "{} → {} → {}",
                        report::int(b),
                        report::int(h),
                        report::int(a)
                    )
                }
                _ => "n/a".into(),
            };
            let last = table.rows.last_mut().expect("just added");
            last[1] = tasks(m);
            last[2] = "n/a".into();
            last[3] = "n/a".into();
            let per_task = m
                .tasks_before
                .zip(m.tasks_held)
                .map(|(b, h)| (h - b) / m.held.max(1) as f64);
            table.add_proxies(
                &format!("{p}: tasks per held stream"),
                per_task,
                None,
                report::two,
            );
            table.add_proxies(
                &format!("{p}: upstream streams still open after close"),
                Some(m.upstream_open_after as f64),
                Some(n.upstream_open_after as f64),
                report::int,
            );
            table.rows.last_mut().expect("just added")[3] = String::new();
        }
    }
    Ok(table)
}

// ---- 5. Idle legacy sessions ----

async fn sessions_phase(
    s: &Settings,
    up: &upstream::Upstream,
    dir: &Path,
) -> Result<(Table, Table)> {
    let relay = relay::start(up.addr, dir, "sessions", s.linger_secs).await?;
    let nginx = nginx::start(up.addr, dir, "sessions", s.nginx_workers, 128).await?;
    let settle = Duration::from_millis(s.settle_ms);
    tokio::time::sleep(settle).await;
    let pid = relay.guard.pid();
    let before = procs::rss_bytes(pid);
    let gauges_before = relay.gauges().await?;
    let mut rates = [0.0; 3];
    for (t, addr) in [(DIRECT, up.addr), (RELAY, relay.addr), (NGINX, nginx.addr)] {
        rates[t] = bounded(
            format!("{} initialize requests through {}", s.sessions, TARGETS[t]),
            Duration::from_secs(s.step_timeout_secs),
            sse::initialize_many(addr, s.sessions, s.session_concurrency),
        )
        .await?;
        progress(format!(
            "{} initialize through {:>9}: {:>8} req/s",
            report::int(s.sessions as f64),
            TARGETS[t],
            report::int(rates[t])
        ));
    }
    // The persistence worker flushes every few hundred ms; give it time to settle.
    tokio::time::sleep(settle.max(Duration::from_secs(2))).await;
    let after = procs::rss_bytes(pid);
    let gauges_after = relay.gauges().await?;

    let label = format!(
        "legacy `initialize`, c={}: requests/s",
        s.session_concurrency
    );
    let mut rate = Table::versus_direct(
        "Session creation",
        format!(
            "{} `initialize` requests over {} keep-alive HTTP/1.1 connections from the \
             driver (hyper); every answer must carry an `Mcp-Session-Id`. One round.",
            report::int(s.sessions as f64),
            s.session_concurrency
        ),
    );
    rate.add_versus_direct(&label, rates.map(Some), Compare::Ratio, report::int);

    let mut memory = Table::proxies(
        "Idle legacy sessions: memory",
        format!(
            "A fresh mcp-relay (memory store) before and {} s after {} `initialize` requests \
             left as many idle sessions; nginx keeps no sessions.",
            settle.max(Duration::from_secs(2)).as_secs(),
            report::int(s.sessions as f64)
        ),
    );
    let n = s.sessions as f64;
    memory.add_proxies("idle sessions created", Some(n), None, report::int);
    memory.add_proxies(
        "sessions reported (`mcp_relay_sessions`)",
        gauges_after.sessions,
        None,
        report::int,
    );
    memory.add_proxies("RSS before", Some(before as f64), None, report::mib);
    memory.add_proxies("RSS after", Some(after as f64), None, report::mib);
    memory.add_proxies(
        "**bytes per idle session**",
        Some(after.saturating_sub(before) as f64 / n.max(1.0)),
        None,
        report::bytes,
    );
    memory.add_proxies(
        "alive tasks before → after (n/a: no gauge)",
        None,
        None,
        report::int,
    );
    let last = memory.rows.last_mut().expect("just added");
    if let (Some(b), Some(a)) = (gauges_before.tasks, gauges_after.tasks) {
        last[0] = "alive tasks before → after".into();
        last[1] = format!("{} → {}", report::int(b), report::int(a));
    }
    drop(nginx);
    drop(relay);
    Ok((rate, memory))
}
