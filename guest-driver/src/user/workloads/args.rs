//! Small helpers the workloads share: `--name value` options and a replayable random source.

/// The value of option `name` (`--name value`), `default` if absent, None if not a number.
pub fn flag(args: &[&str], name: &str, default: u64) -> Option<u64> {
    match args.iter().position(|a| *a == name) {
        None => Some(default),
        Some(i) => args.get(i + 1)?.parse().ok(),
    }
}

/// A small xorshift generator (deterministic, so a failure can be replayed from its seed).
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
