//! A run while it goes and when it ends: the main event loop ([`event_loop`]: timeout, end,
//! host-memory samples), how a run ends and its exit status ([`state`]), the statistics and
//! `--stats-json` ([`stats`]), the failure dumps ([`fault_report`]), and the stop signals
//! (SIGINT, SIGTERM, SIGHUP) that end a run the orderly way ([`signals`]).

pub mod event_loop;
pub mod fault_report;
pub mod signals;
pub mod state;
pub mod stats;
