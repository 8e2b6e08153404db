//! A run while it goes and when it ends: the main event loop ([`event_loop`]: timeout, end,
//! host-memory samples), how a run ends and its exit status ([`state`]), the statistics and
//! `--stats-json` ([`stats`]), and the failure dumps ([`fault_report`]).

pub mod event_loop;
pub mod fault_report;
pub mod state;
pub mod stats;
