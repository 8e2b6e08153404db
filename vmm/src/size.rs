//! Parsing human-readable byte sizes such as `256M`, `1G`, `512K`, `2MiB` or `4096`.
//!
//! Units are binary (powers of 1024) and case-insensitive: `K`/`KB`/`KiB`, `M`/`MB`/`MiB`,
//! `G`/`GB`/`GiB`, `T`/`TB`/`TiB`, and `B` or nothing for bytes.

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nothing to parse.
    #[error("empty size")]
    Empty,
    /// No digits, or something that is not a number.
    #[error("'{0}' is not a size (expected e.g. 256M, 1G, 512K or 4096)")]
    Invalid(String),
    /// An unknown unit suffix.
    #[error("'{0}' has an unknown unit (use K, M, G, T, with optional B or iB)")]
    BadUnit(String),
    /// The value does not fit in 64 bits.
    #[error("'{0}' is too large")]
    Overflow(String),
}

/// Parses a size in bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(SizeError::Invalid(s.to_owned()));
    }
    let (num, unit) = t.split_at(digits_end);
    let value: u64 = num.parse().map_err(|_| SizeError::Overflow(s.to_owned()))?;
    let shift = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(SizeError::BadUnit(s.to_owned())),
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::Overflow(s.to_owned()))
}

/// Formats a byte count for people: `4.2 MiB`, `256 MiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("2mb"), Ok(2 << 20));
        assert_eq!(parse_size("3GiB"), Ok(3 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size(" 64 M "), Ok(64 << 20));
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("   "), Err(SizeError::Empty));
        assert!(matches!(parse_size("M"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("-1"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("abc"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("1.5G"), Err(SizeError::BadUnit(_))));
        assert!(matches!(parse_size("12X"), Err(SizeError::BadUnit(_))));
        assert!(matches!(parse_size("1GG"), Err(SizeError::BadUnit(_))));
        assert!(matches!(parse_size("0x100"), Err(SizeError::BadUnit(_))));
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(matches!(
            parse_size("99999999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("16777216T"),
            Err(SizeError::Overflow(_))
        ));
        assert_eq!(parse_size("16777215T"), Ok(16_777_215u64 << 40));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(256 << 20), "256 MiB");
        assert_eq!(format_size(4_404_019), "4.2 MiB");
        assert_eq!(format_size(1 << 30), "1 GiB");
    }
}
