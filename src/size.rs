//! Byte counts as flock(1) reads `--start` and `--length`: util-linux's
//! strtosize. Pure parsing; what the numbers mean is the caller's business.

/// Why a size was refused, in strtosize's two kinds, so that messages can
/// say what util-linux says (EINVAL, ERANGE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeError {
    /// Not a size: empty, negative, garbage, an unknown suffix, a fraction
    /// without a suffix.
    Invalid,
    /// A size, but larger than a file offset can be (2^63 - 1).
    TooLarge,
}

/// Parses a byte count the way util-linux's strtosize does: a number in C
/// notation (`4096`, `0x1000`, `010` is octal 8), optionally followed by a
/// binary suffix `K`, `M`, `G`, `T`, `P`, `E` (either case; `KiB` too) or a
/// decimal one `KB`, `MB`, ... (`1KB` = 1000, `1K` = `1KiB` = 1024). With a
/// suffix the number may have a fraction: `1.5K` = 1536 (rounded down).
/// Leading blanks are allowed; a sign `-` is not. Sizes beyond 2^63 - 1
/// (the largest file offset) are [`SizeError::TooLarge`].
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let body = text.trim_start();
    if body.starts_with('-') {
        return Err(SizeError::Invalid);
    }
    let body = body.strip_prefix('+').unwrap_or(body);
    let (whole, rest) = leading_integer(body)?;
    if rest.is_empty() {
        return fits_offset(u128::from(whole));
    }
    // A fraction is only meaningful before a suffix: "1.5" alone is refused.
    let (fraction, suffix) = match rest.strip_prefix('.') {
        Some(after) => {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            (&after[..digits], &after[digits..])
        }
        None => ("", rest),
    };
    let multiplier = suffix_multiplier(suffix).ok_or(SizeError::Invalid)?;
    let mut value = u128::from(whole)
        .checked_mul(multiplier)
        .ok_or(SizeError::TooLarge)?;
    if !fraction.is_empty() {
        // Enough digits for any exact byte; more only add noise below 1 byte.
        let fraction = &fraction[..fraction.len().min(30)];
        let numerator: u128 = fraction.parse().map_err(|_| SizeError::Invalid)?;
        let denominator = 10u128.pow(fraction.len() as u32);
        let part = numerator
            .checked_mul(multiplier)
            .map(|n| n / denominator)
            .ok_or(SizeError::TooLarge)?;
        value = value.checked_add(part).ok_or(SizeError::TooLarge)?;
    }
    fits_offset(value)
}

/// The number at the start of `text` in C notation (strtoumax base 0:
/// `0x` hexadecimal, a leading `0` octal), and what follows it.
fn leading_integer(text: &str) -> Result<(u64, &str), SizeError> {
    let (radix, digits_at) = if text.len() > 2
        && (text.starts_with("0x") || text.starts_with("0X"))
        && text.as_bytes()[2].is_ascii_hexdigit()
    {
        (16, 2)
    } else if text.starts_with('0') {
        (8, 0)
    } else {
        (10, 0)
    };
    let digits = &text[digits_at..];
    let len = digits
        .bytes()
        .take_while(|b| (*b as char).is_digit(radix))
        .count();
    if len == 0 {
        return Err(SizeError::Invalid);
    }
    let value = u64::from_str_radix(&digits[..len], radix).map_err(|_| SizeError::TooLarge)?;
    Ok((value, &digits[len..]))
}

/// `K` and `KiB` are 1024, `KB` is 1000, and so on up to `E` (Z and Y do
/// not fit a file offset); None for anything else.
fn suffix_multiplier(suffix: &str) -> Option<u128> {
    let mut chars = suffix.chars();
    let letter = chars.next()?.to_ascii_uppercase();
    let power = "KMGTPEZY".find(letter)? as u32 + 1;
    let base: u128 = match chars.as_str() {
        "" | "iB" | "ib" => 1024,
        "B" | "b" => 1000,
        _ => return None,
    };
    base.checked_pow(power)
}

fn fits_offset(value: u128) -> Result<u64, SizeError> {
    u64::try_from(value)
        .ok()
        .filter(|v| i64::try_from(*v).is_ok())
        .ok_or(SizeError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_suffixes_as_strtosize() {
        for (text, bytes) in [
            ("0", 0),
            ("4096", 4096),
            (" 12", 12),
            ("+7", 7),
            ("0x10", 16),
            ("010", 8),
            ("1K", 1024),
            ("1k", 1024),
            ("1KiB", 1024),
            ("1KB", 1000),
            ("1kb", 1000),
            ("1M", 1_048_576),
            ("2MB", 2_000_000),
            ("1G", 1 << 30),
            ("1.5K", 1536),
            ("1.5KB", 1500),
            ("0.25G", 1 << 28),
            ("7E", 7 << 60),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn garbage_and_negatives_are_invalid() {
        for text in [
            "", " ", "-1", "- 1", "abc", "1.5", "1B", "1X", "1KiBx", "1 K", "5 ", "0x", "1..5K",
            "K",
        ] {
            assert_eq!(parse_size(text), Err(SizeError::Invalid), "{text:?}");
        }
    }

    #[test]
    fn sizes_beyond_a_file_offset_are_too_large() {
        assert_eq!(parse_size("9223372036854775807"), Ok(i64::MAX as u64));
        for text in [
            "9223372036854775808",
            "99999999999999999999999",
            "8E",
            "1Z",
            "1Y",
        ] {
            assert_eq!(parse_size(text), Err(SizeError::TooLarge), "{text}");
        }
    }
}
