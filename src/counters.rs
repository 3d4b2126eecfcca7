//! Groups of counters declared once. [`counters!`] turns one list of fields into the struct
//! of atomics the code counts in, its point-in-time copy with the function taking it, and the
//! rows the Prometheus exporter registers ([`Export`]). A leaf module: the session core and
//! the data plane declare their groups with it without importing each other, and
//! [`crate::telemetry::metrics`] exports them. The gRPC conversion stays written out by hand
//! (`control::metrics`): the proto is a contract of its own.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds one to `counter` and returns the new total when this occurrence is one to log: the
/// first, then each power of two (1, 2, 4, 8, …). A flood of the same refusal or timeout then
/// writes O(log n) log lines while the counter keeps the exact count.
pub fn incr_sampled(counter: &AtomicU64) -> Option<u64> {
    let total = counter.fetch_add(1, Ordering::Relaxed) + 1;
    total.is_power_of_two().then_some(total)
}

/// How an exported number is presented to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic counter (`# TYPE … counter`), exported as the integer it holds.
    Counter,
    /// A gauge (`# TYPE … gauge`).
    Gauge,
    /// A gauge kept in microseconds, exported in seconds.
    GaugeMicrosAsSeconds,
}

/// One series the Prometheus exporter publishes from a snapshot `S`.
#[derive(Debug)]
pub struct Export<S> {
    /// Its Prometheus name (`mcp_relay_…`).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Its `# HELP` text, as operators read it.
    pub help: &'static str,
    /// The number it publishes.
    pub read: fn(&S) -> u64,
}

/// Declares a group of `u64` counters once:
///
/// ```ignore
/// counters! {
///     /// Docs of the group.
///     pub struct Stats / StatsSnapshot {
///         /// Docs of the field (on both structs).
///         events: Counter("mcp_relay_events_total", "The HELP text."),
///         /// A field counted and snapshotted but not exported.
///         internal,
///     }
/// }
/// ```
///
/// makes `Stats` (a `pub` [`AtomicU64`](std::sync::atomic::AtomicU64) per field, `Debug` and
/// `Default`), `StatsSnapshot` (a `pub u64` per field, `Copy`, `Eq`, `Default`),
/// `Stats::snapshot()` (each field read with `Relaxed` ordering: the copy is not atomic as a
/// whole), and `StatsSnapshot::EXPORTS`, an [`Export`] per field given a [`Kind`], a
/// Prometheus name and a HELP text, in declaration order.
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident / $snapshot:ident {
            $(
                $(#[$field_meta:meta])*
                $field:ident $(: $kind:ident($export:literal, $help:literal $(,)?))?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $(
                $(#[$field_meta])*
                pub $field: ::std::sync::atomic::AtomicU64,
            )*
        }

        #[doc = concat!("A point-in-time copy of [`", stringify!($name), "`].")]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $vis struct $snapshot {
            $(
                $(#[$field_meta])*
                pub $field: u64,
            )*
        }

        impl $name {
            /// Reads every counter (each on its own: the copy is not atomic as a whole).
            pub fn snapshot(&self) -> $snapshot {
                $snapshot {
                    $( $field: self.$field.load(::std::sync::atomic::Ordering::Relaxed), )*
                }
            }
        }

        impl $snapshot {
            /// What the Prometheus endpoint exports from this snapshot, in declaration order.
            pub const EXPORTS: &'static [$crate::counters::Export<Self>] = &[
                $($(
                    $crate::counters::Export {
                        name: $export,
                        kind: $crate::counters::Kind::$kind,
                        help: $help,
                        read: |s| s.$field,
                    },
                )?)*
            ];
        }
    };
}

pub(crate) use counters;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{Kind, incr_sampled};

    #[test]
    fn a_sampled_count_is_logged_the_first_time_then_at_powers_of_two() {
        let counter = AtomicU64::new(0);
        let logged: Vec<u64> = (0..20).filter_map(|_| incr_sampled(&counter)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16]);
        assert_eq!(
            counter.load(Ordering::Relaxed),
            20,
            "every occurrence is counted"
        );
    }

    counters! {
        /// A test group.
        struct Group / GroupSnapshot {
            /// Exported as a counter.
            first: Counter("first_total", "The first."),
            /// Not exported.
            hidden,
            /// Exported in seconds.
            micros: GaugeMicrosAsSeconds(
                "micros_seconds",
                "Split over \
                 two lines.",
            ),
        }
    }

    #[test]
    fn a_group_snapshots_every_field_and_exports_those_given_a_name() {
        let group = Group::default();
        group.first.store(1, Ordering::Relaxed);
        group.hidden.store(2, Ordering::Relaxed);
        group.micros.store(3, Ordering::Relaxed);
        let snapshot = group.snapshot();
        assert_eq!(
            snapshot,
            GroupSnapshot {
                first: 1,
                hidden: 2,
                micros: 3
            }
        );
        let rows: Vec<_> = GroupSnapshot::EXPORTS
            .iter()
            .map(|e| (e.name, e.kind, e.help, (e.read)(&snapshot)))
            .collect();
        assert_eq!(
            rows,
            [
                ("first_total", Kind::Counter, "The first.", 1),
                (
                    "micros_seconds",
                    Kind::GaugeMicrosAsSeconds,
                    "Split over two lines.",
                    3
                ),
            ]
        );
    }
}
