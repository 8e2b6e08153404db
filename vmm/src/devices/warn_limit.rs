//! Warnings a guest can cause at will (a malformed write to one of our ports, say; in the
//! vhost-user backend, a frontend breaking a ring): the first few are logged, the rest only
//! counted, so a guest that repeats one in a loop cannot flood the log.

/// How many warnings of one kind are logged.
pub const LOGGED: u64 = 8;

/// The count of one kind of guest-caused warning.
#[derive(Debug, Default)]
pub struct WarnLimit {
    seen: u64,
}

impl WarnLimit {
    /// None seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more. Returns what to append to its log line when it is to be logged (the
    /// last one logged says that the rest will not be), or `None` past [`LOGGED`].
    pub fn count(&mut self) -> Option<&'static str> {
        self.seen = self.seen.saturating_add(1);
        match self.seen {
            n if n < LOGGED => Some(""),
            LOGGED => Some(" (further ones are not logged)"),
            _ => None,
        }
    }

    /// How many were counted, logged or not.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_few_then_only_counts() {
        let mut w = WarnLimit::new();
        let said: Vec<_> = (0..LOGGED + 5).map(|_| w.count()).collect();
        assert!(said[..LOGGED as usize - 1].iter().all(|s| *s == Some("")));
        assert_eq!(
            said[LOGGED as usize - 1],
            Some(" (further ones are not logged)")
        );
        assert!(said[LOGGED as usize..].iter().all(Option::is_none));
        assert_eq!(w.seen(), LOGGED + 5);
    }
}
