//! Wall-clock time and its one canonical text: RFC 3339 in UTC with exactly three fractional
//! digits, `YYYY-MM-DDTHH:MM:SS.mmmZ` (e.g. `2026-12-01T21:01:01.123Z`).
//!
//! Why here: records, events and replies carry timestamps written by the host, daemons and
//! worker processes alike, and clients compare and sort them as text. One formatter and one
//! parser in the protocol crate keep every writer on the same bytes (fixed width, so text order
//! is time order for years 0000–9999) and every reader accepting the same inputs.
//!
//! - [`format_ms`] / [`now_text`]: epoch milliseconds → canonical text.
//! - [`parse_date_ms`]: `YYYY-MM-DD`, or `YYYY-MM-DD[T ]HH:MM[:SS[.fff…]](Z|±HH:MM)` → epoch
//!   milliseconds, within [`MIN_MS`]..=[`MAX_MS`]; `parse_date_ms(&format_ms(ms)) == Some(ms)`
//!   over that range.

/// The earliest instant [`parse_date_ms`] accepts: `0000-01-01T00:00:00.000Z`.
pub const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01
/// The latest instant [`parse_date_ms`] accepts: `9999-12-31T23:59:59.999Z`.
pub const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The canonical text of now.
pub fn now_text() -> String {
    format_ms(now_ms())
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Canonical UTC text for epoch milliseconds.
pub fn format_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, sec, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{milli:03}Z");
    }
    // The common case without the formatting machinery (every write formats one or more).
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + u8::try_from(v % 10).unwrap_or(0);
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, h);
    put(14, 2, mi);
    put(17, 2, sec);
    put(20, 3, milli);
    String::from_utf8_lossy(&b).into_owned()
}

/// Parse `YYYY-MM-DD`, or `YYYY-MM-DD[T ]HH:MM[:SS[.fff…]](Z|±HH:MM)` into epoch milliseconds.
pub fn parse_date_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    let day_ms = days_from_civil(y, mo, d) * 86_400_000;
    if b.len() == 10 {
        return Some(day_ms);
    }
    if b[10] != b'T' && b[10] != b't' && b[10] != b' ' {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    if b.get(13) != Some(&b':') {
        return None;
    }
    let mut i = 16;
    let mut sec = 0;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b':') {
        sec = num(17..19)?;
        i = 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return None;
            }
            let digits = &s[start..i.min(start + 3)];
            let scale = 10_i64.pow(u32::try_from(3 - digits.len()).ok()?);
            frac_ms = digits.parse::<i64>().ok()? * scale;
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let offset_ms = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = (oh * 60 + om) * 60_000;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let ms = day_ms + ((h * 60 + mi) * 60 + sec) * 1000 + frac_ms - offset_ms;
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_normalise() {
        assert_eq!(parse_date_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        let ms = parse_date_ms("2024-02-29T12:34:56.789+02:00").expect("date");
        assert_eq!(format_ms(ms), "2024-02-29T10:34:56.789Z");
        assert_eq!(
            parse_date_ms("2024-02-29"),
            parse_date_ms("2024-02-29T00:00Z")
        );
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-01-01T25:00Z",
            "yesterday",
            "2024-01-01T10:00",
        ] {
            assert_eq!(parse_date_ms(bad), None, "{bad}");
        }
        for ms in [-86_400_001, 0, 1_700_000_000_123, MAX_MS, MIN_MS] {
            assert_eq!(parse_date_ms(&format_ms(ms)), Some(ms));
        }
        assert_eq!(format_ms(MIN_MS), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_ms(MAX_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(MIN_MS - 1), "-001-12-31T23:59:59.999Z");
        assert_eq!(format_ms(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    }
}
