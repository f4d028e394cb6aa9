//! Durations as the user writes them: `2.5` (seconds), `500ms`, `30s`, `5m`, `2h`.

use std::time::Duration;

/// Parses a non-negative duration. Plain numbers are seconds and may have a
/// fraction or an exponent (flock(1) accepts `1e-3`); the suffixes `ms`, `s`,
/// `m` and `h` scale them. Negative, NaN, infinite and absurdly large values
/// are refused with a message that says why.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let (number, scale) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .iter()
        .find_map(|(suffix, scale)| {
            trimmed
                .strip_suffix(suffix)
                .filter(|n| n.ends_with(|c: char| c.is_ascii_digit() || c == '.'))
                .map(|n| (n, *scale))
        })
        .unwrap_or((trimmed, 1.0));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (use e.g. 2.5, 500ms, 30s, 5m, 2h)"))?;
    let seconds = value * scale;
    if !seconds.is_finite() || seconds < 0.0 || value.is_sign_negative() {
        return Err(format!(
            "'{text}' is not a duration (it must be a finite number >= 0)"
        ));
    }
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| d.as_secs() < 100 * 365 * 86400)
        .ok_or_else(|| format!("'{text}' is too long a duration"))
}

/// Formats a duration for people: `850ms`, `12s`, `12m3s`, `2h5m`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{}h{}m", secs / 3600, secs % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_suffixed() {
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1e-3"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration(" 1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn refuses_bad_values() {
        for bad in [
            "", "-1", "-0", "nan", "inf", "abc", "1x", "ms", "1e30", "--1", "s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn human_is_short() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_secs(723)), "12m3s");
        assert_eq!(human(Duration::from_secs(7500)), "2h5m");
    }
}
