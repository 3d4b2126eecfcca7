//! `/proc` readings shared by the bench targets (`sse_stream`, `load`): included with
//! `#[path]`, since a bench target is its own crate.

/// Resident set size of a process (`VmRSS` in `/proc/<pid>/status`), in bytes; 0 if it is gone.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
