//! JSON-RPC request rate with `wrk` (`-t1 -c<N> -d<secs> --latency`): a generated Lua script
//! sets the POST, its body and the era's headers (the legacy `Mcp-Session-Id` is the one an
//! `initialize` through the same target returned), and its `done()` prints wrk's exact numbers
//! (request count, duration and latency percentiles in microseconds, error counts) on one
//! `LOAD_RESULT` line. Should that line be missing, wrk's text report is parsed instead, with its
//! units (`us`, `ms`, `s`, `m`, `h`; `k`/`M` for counts). Any non-2xx answer, socket error or
//! timeout fails the run: a proxy that answers errors fast must not look fast.

use std::{path::Path, process::Stdio, time::Duration};

use crate::{
    error::{Context as _, Result, bail, bounded},
    mcp::{self, Era},
};

/// One wrk run's numbers.
#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Writes the Lua script for `era`'s JSON request (with `session` for legacy) to `path`.
pub fn write_script(path: &Path, era: Era, session: Option<&str>) -> Result<()> {
    let mut lua = String::from("wrk.method = \"POST\"\n");
    lua += &format!(
        "wrk.body = [==[{}]==]\n",
        mcp::body(era, 1, mcp::JSON_METHOD, "")
    );
    for (k, v) in mcp::headers(era, mcp::JSON_METHOD, session) {
        lua += &format!("wrk.headers[\"{k}\"] = [==[{v}]==]\n");
    }
    lua += r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write("LOAD_RESULT",
    " requests=", tostring(summary.requests),
    " duration_us=", tostring(summary.duration),
    " p50_us=", tostring(latency:percentile(50)),
    " p99_us=", tostring(latency:percentile(99)),
    " status=", tostring(e.status),
    " connect=", tostring(e.connect),
    " read=", tostring(e.read),
    " write=", tostring(e.write),
    " timeout=", tostring(e.timeout), "\n")
end
"#;
    std::fs::write(path, lua).with_context(|| format!("writing {}", path.display()))
}

/// Runs wrk against `url` with `script`.
pub async fn run(url: &str, script: &Path, conns: u64, secs: u64) -> Result<WrkResult> {
    let args = [
        "-t1".to_owned(),
        format!("-c{conns}"),
        format!("-d{secs}s"),
        "--timeout".to_owned(),
        "10s".to_owned(),
        "--latency".to_owned(),
        "-s".to_owned(),
        script.display().to_string(),
        url.to_owned(),
    ];
    let what = format!("wrk {}", args.join(" "));
    bounded(&what, Duration::from_secs(secs + 30), async {
        let out = tokio::process::Command::new("wrk")
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("running wrk (is it installed? scripts/bench.sh installs it)")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "exited with {}: {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse(&stdout).with_context(|| format!("reading wrk's output:\n{stdout}"))
    })
    .await
}

fn field(line: &str, name: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The numbers of a wrk run: the script's `LOAD_RESULT` line, else wrk's text report.
pub fn parse(stdout: &str) -> Result<WrkResult> {
    let Some(line) = stdout.lines().find(|l| l.starts_with("LOAD_RESULT")) else {
        return parse_text(stdout);
    };
    let get = |name| field(line, name).with_context(|| format!("no {name} in {line:?}"));
    let errors: Vec<String> = ["status", "connect", "read", "write", "timeout"]
        .into_iter()
        .filter_map(|name| {
            let n = field(line, name).unwrap_or(0.0);
            (n > 0.0).then(|| format!("{n} {name} errors"))
        })
        .collect();
    if !errors.is_empty() {
        bail!("{}", errors.join(", "));
    }
    let requests = get("requests")?;
    let duration_us = get("duration_us")?;
    if requests == 0.0 || duration_us == 0.0 {
        bail!("no requests completed");
    }
    Ok(WrkResult {
        requests_per_sec: requests / (duration_us / 1e6),
        p50_us: get("p50_us")?,
        p99_us: get("p99_us")?,
    })
}

/// A wrk duration (`812.00us`, `1.25ms`, `2.00s`, `1.50m`, `1.00h`) in microseconds.
pub fn duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(n * scale)
}

/// A wrk count with an optional metric suffix (`12.34k`).
pub fn count(s: &str) -> Option<f64> {
    let s = s.trim();
    let (number, scale) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1e3),
        'M' => (&s[..s.len() - 1], 1e6),
        'G' => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    Some(number.parse::<f64>().ok()? * scale)
}

/// wrk's own report: `Requests/sec:`, the `--latency` distribution's 50% and 99% lines, and
/// the `Non-2xx` and `Socket errors` lines.
fn parse_text(stdout: &str) -> Result<WrkResult> {
    if let Some(l) = stdout
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        bail!("{}", l.trim());
    }
    let value = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
    };
    let requests_per_sec = value("Requests/sec:")
        .and_then(count)
        .context("no Requests/sec line")?;
    let p50_us = value("50%")
        .and_then(duration_us)
        .context("no 50% latency line (was --latency given?)")?;
    let p99_us = value("99%")
        .and_then(duration_us)
        .context("no 99% latency line")?;
    Ok(WrkResult {
        requests_per_sec,
        p50_us,
        p99_us,
    })
}

/// Checks the text parser on wrk 4.1's layout (run at start-up: a bench target has no tests).
pub fn self_check() -> Result<()> {
    let sample = "Running 1s test @ http://127.0.0.1:1/mcp
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   150.12us   30.00us   1.20ms   90.00%
    Req/Sec    25.10k     1.00k   27.00k    80.00%
  Latency Distribution
     50%  141.00us
     75%  160.00us
     90%  190.00us
     99%    1.05ms
  25000 requests in 1.00s, 3.00MB read
Requests/sec:  24987.65
Transfer/sec:      3.00MB
";
    let r = parse_text(sample)?;
    let ok = (r.requests_per_sec - 24987.65).abs() < 1e-6
        && (r.p50_us - 141.0).abs() < 1e-9
        && (r.p99_us - 1050.0).abs() < 1e-9
        && duration_us("2.00s") == Some(2e6)
        && duration_us("1.50m") == Some(90e6)
        && count("1.20M") == Some(1.2e6)
        && parse("x\nLOAD_RESULT requests=10 duration_us=1000000 p50_us=5 p99_us=9 status=0 connect=0 read=0 write=0 timeout=0\n")
            .is_ok_and(|r| r.requests_per_sec == 10.0 && r.p99_us == 9.0)
        && parse("LOAD_RESULT requests=10 duration_us=1000000 p50_us=5 p99_us=9 status=3 connect=0 read=0 write=0 timeout=0").is_err();
    if !ok {
        bail!("the wrk output parser misreads wrk 4.1's report: {r:?}");
    }
    Ok(())
}
