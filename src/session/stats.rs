//! The session core's own counters: what it refuses and what it replays. Replays are counted
//! here, where the replay window lives, whoever asked for them (a client's resumption through
//! the data plane, an operator's `ForceReplay` through the control plane). Each is declared
//! once, with its Prometheus name and HELP text ([`crate::counters`]).

use crate::counters::counters;

counters! {
    /// Counters of the session core (monotonic). Read with [`SessionStats::snapshot`].
    pub struct SessionStats / SessionStatsSnapshot {
        /// Events re-sent to a client from a replay window (resumption or forced replay).
        events_replayed: Counter(
            "mcp_relay_sse_events_replayed_total",
            "SSE events re-sent to a client from a replay window.",
        ),
        /// `initialize` requests refused because `session.max_sessions` sessions were live.
        sessions_refused: Counter(
            "mcp_relay_sessions_refused_total",
            "initialize requests refused (503) because session.max_sessions sessions were live.",
        ),
    }
}
