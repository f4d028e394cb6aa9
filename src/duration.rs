//! Durations as the user writes them: `2.5` (seconds), `500ms`, `30s`, `5m`, `2h`.

use std::time::Duration;

/// Parses a non-negative duration. Plain numbers are seconds and may have a
/// fraction or an exponent (flock(1) accepts `1e-3`) or be C hexadecimal
/// (`0x10`, `0x1.8p1`, which flock(1)'s strtold reads too); the suffixes
/// `ms`, `s`, `m` and `h` scale them. Leading blanks are skipped, trailing
/// ones refused, as strtold does. Negative, NaN, infinite and absurdly large
/// values are refused with a message that says why.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim_start();
    let (number, scale) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .iter()
        .find_map(|(suffix, scale)| {
            trimmed
                .strip_suffix(suffix)
                .filter(|n| n.ends_with(|c: char| c.is_ascii_digit() || c == '.'))
                .map(|n| (n, *scale))
        })
        .unwrap_or((trimmed, 1.0));
    let value: f64 = parse_hex_float(number)
        .or_else(|| number.parse().ok())
        .ok_or(())
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

/// A C hexadecimal floating-point number (`0x10`, `-0x1.8p1`), as strtold
/// reads it: hex digits with an optional fraction, an optional binary
/// exponent. None for anything else.
fn parse_hex_float(text: &str) -> Option<f64> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    let (mantissa, exponent) = match digits.find(['p', 'P']) {
        Some(at) => (&digits[..at], digits[at + 1..].parse::<i32>().ok()?),
        None => (digits, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut value = 0f64;
    for c in whole.chars() {
        value = value * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in fraction.chars() {
        value += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    let value = value * 2f64.powi(exponent);
    Some(if negative { -value } else { value })
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
        assert_eq!(parse_duration("0x10"), Ok(Duration::from_secs(16)));
        assert_eq!(parse_duration("0x1.8p1"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0x.8"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn refuses_bad_values() {
        for bad in [
            "", "-1", "-0", "nan", "inf", "abc", "1x", "ms", "1e30", "--1", "s", "5 ", "0x", "0xg",
            "-0x1", "0x1p", "0x.",
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
