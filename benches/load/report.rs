//! The results: medians over rounds, Markdown tables (one row per measurement; the targets as
//! columns, then each proxy relative to direct), and the header that says where and how they
//! were measured (machine, versions, commit, date, command and settings).

use std::fmt::Write as _;

use crate::procs::command_output;

/// The targets, in column order.
pub const TARGETS: [&str; 3] = ["direct", "mcp-relay", "nginx"];
pub const DIRECT: usize = 0;
pub const RELAY: usize = 1;
pub const NGINX: usize = 2;

pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Samples per row and target, rows in the order first seen.
#[derive(Default)]
pub struct Samples {
    rows: Vec<(String, [Vec<f64>; 3])>,
}

impl Samples {
    pub fn push(&mut self, row: &str, target: usize, value: f64) {
        match self.rows.iter_mut().find(|(r, _)| r == row) {
            Some((_, cells)) => cells[target].push(value),
            None => {
                let mut cells: [Vec<f64>; 3] = Default::default();
                cells[target].push(value);
                self.rows.push((row.to_owned(), cells));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every sample, in the order taken: one row per measurement, one cell per target.
    pub fn rounds_table(&self, title: &str, note: &str) -> Table {
        let mut header = vec!["measurement".to_owned()];
        header.extend(TARGETS.map(String::from));
        let rows = self
            .rows
            .iter()
            .map(|(label, cells)| {
                let mut row = vec![label.clone()];
                row.extend(
                    cells
                        .iter()
                        .map(|c| c.iter().map(|&v| int(v)).collect::<Vec<_>>().join(" · ")),
                );
                row
            })
            .collect();
        Table {
            title: title.to_owned(),
            note: note.to_owned(),
            header,
            rows,
        }
    }

    pub fn medians(&self, row: &str) -> [Option<f64>; 3] {
        let cells = self.rows.iter().find(|(r, _)| r == row).map(|(_, c)| c);
        std::array::from_fn(|t| cells.and_then(|c| median(&c[t])))
    }
}

/// How a row compares the proxies to direct.
#[derive(Clone, Copy)]
pub enum Compare {
    /// Higher is better: proxy ÷ direct.
    Ratio,
    /// Latency: proxy − direct, in µs.
    Added,
}

/// A Markdown table with a title and a note under it.
pub struct Table {
    pub title: String,
    pub note: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table of the three targets and both proxies against direct.
    pub fn versus_direct(title: impl Into<String>, note: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            note: note.into(),
            header: [
                "measurement",
                "direct",
                "mcp-relay",
                "nginx",
                "mcp-relay÷direct",
                "nginx÷direct",
            ]
            .map(String::from)
            .to_vec(),
            rows: Vec::new(),
        }
    }

    /// A table of the two proxies (memory, tasks: direct has no proxy to measure).
    pub fn proxies(title: impl Into<String>, note: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            note: note.into(),
            header: ["measurement", "mcp-relay", "nginx", "mcp-relay÷nginx"]
                .map(String::from)
                .to_vec(),
            rows: Vec::new(),
        }
    }

    /// A row of medians with its comparison to direct; `fmt` formats a value.
    pub fn add_versus_direct(
        &mut self,
        label: &str,
        m: [Option<f64>; 3],
        compare: Compare,
        fmt: fn(f64) -> String,
    ) {
        let cell = |v: Option<f64>| v.map_or("n/a".to_owned(), fmt);
        let vs = |t: usize| match (m[t], m[DIRECT], compare) {
            (Some(v), Some(d), Compare::Ratio) if d > 0.0 => format!("{:.2}×", v / d),
            (Some(v), Some(d), Compare::Added) => {
                let sign = if v >= d { "+" } else { "−" };
                format!("{sign}{} µs", int((v - d).abs()))
            }
            _ => "n/a".to_owned(),
        };
        self.rows.push(vec![
            label.to_owned(),
            cell(m[DIRECT]),
            cell(m[RELAY]),
            cell(m[NGINX]),
            vs(RELAY),
            vs(NGINX),
        ]);
    }

    /// A row of the two proxies' values (already formatted) and their ratio.
    pub fn add_proxies(
        &mut self,
        label: &str,
        relay: Option<f64>,
        nginx: Option<f64>,
        fmt: fn(f64) -> String,
    ) {
        let cell = |v: Option<f64>| v.map_or("n/a".to_owned(), fmt);
        let ratio = match (relay, nginx) {
            (Some(r), Some(n)) if n > 0.0 => format!("{:.2}×", r / n),
            _ => "n/a".to_owned(),
        };
        self.rows
            .push(vec![label.to_owned(), cell(relay), cell(nginx), ratio]);
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        if !self.note.is_empty() {
            let _ = writeln!(s, "{}\n", self.note);
        }
        let _ = writeln!(s, "| {} |", self.header.join(" | "));
        let _ = writeln!(
            s,
            "|{}",
            self.header
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
                .collect::<String>()
        );
        for row in &self.rows {
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        s
    }
}

/// `12345.6` → `12,346`.
pub fn int(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Microseconds, whole.
pub fn us(v: f64) -> String {
    format!("{} µs", int(v))
}

pub fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1_048_576.0)
}

pub fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

pub fn bytes(v: f64) -> String {
    format!("{} B", int(v))
}

pub fn secs(v: f64) -> String {
    format!("{v:.2} s")
}

pub fn two(v: f64) -> String {
    format!("{v:.2}")
}

/// Where and how the numbers were measured.
pub fn machine_header(settings_line: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = command_output("nproc", &[]);
    let repo = env!("CARGO_MANIFEST_DIR");
    let commit = command_output("git", &["-C", repo, "rev-parse", "HEAD"]);
    let dirty = !command_output(
        "git",
        &["-C", repo, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_empty();
    let wrk = command_output("wrk", &["-v"]);
    let wrk = wrk.lines().next().unwrap_or_default().to_owned();
    let mut s = String::from("## mcp-relay load harness: direct vs mcp-relay vs nginx\n\n");
    let mut item = |k: &str, v: String| {
        let _ = writeln!(s, "- **{k}:** {v}");
    };
    item(
        "date",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
    );
    item(
        "mcp-relay commit",
        format!(
            "`{commit}`{}",
            if dirty {
                " (the working tree had uncommitted changes)"
            } else {
                ""
            }
        ),
    );
    item("machine", format!("{nproc} CPUs (`nproc`), {cpu}"));
    item("kernel", command_output("uname", &["-r"]));
    item("rustc", command_output("rustc", &["--version"]));
    item(
        "nginx",
        command_output(crate::nginx::nginx_binary(), &["-v"]),
    );
    item("wrk", wrk);
    item("command", format!("`{settings_line}`"));
    s
}
