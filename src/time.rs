//! UTC calendar arithmetic, hand-written so that no clock is read here.
//!
//! Owns: epoch seconds <-> civil dates, parsing the ISO-8601 forms Microsoft
//! sends (`2026-11-24T10:00:00.1234567`, with or without `Z`/offset), and the
//! few output forms we write (RFC 3339, RFC 3164 syslog stamps, `YYYY-MM-DD`).
//! Must not: read the system clock — callers pass `now`.

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
// why: its one caller, `parse_date`, passes validated fields: y 0..=9999, m 1..=12, d 1..=31.
#[allow(clippy::arithmetic_side_effects)]
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) for days since 1970-01-01.
// why: every caller passes `secs.div_euclid(DAY)`, so |z| < 2^47 and no step nears i64's range.
#[allow(clippy::arithmetic_side_effects)]
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn num(s: &[u8]) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    // One pass (digit check and value together): dates are parsed for every record.
    s.iter().try_fold(0u32, |acc, &b| {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u32::from(d))
    })
}

/// A parsed instant: whole seconds since the epoch plus nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant {
    pub secs: i64,
    pub nanos: u32,
}

/// Parse `YYYY-MM-DD` into epoch seconds at midnight UTC.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let y = num(b.get(0..4)?)?;
    let m = num(b.get(5..7)?)?;
    let d = num(b.get(8..10)?)?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(i64::from(y), m) {
        return None;
    }
    days_from_civil(i64::from(y), m, d).checked_mul(DAY)
}

/// Parse ISO 8601 `YYYY-MM-DDThh:mm:ss[.f{1,9}][Z|±hh:mm]`; no zone means UTC
/// (the Reporting Web Service's `Received` has none and is UTC).
pub fn parse_iso(s: &str) -> Option<Instant> {
    let b = s.as_bytes();
    let date = parse_date(s.get(0..10)?)?;
    if !matches!(b.get(10), Some(b'T') | Some(b't') | Some(b' ')) {
        return None;
    }
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let hh = num(b.get(11..13)?)?;
    let mm = num(b.get(14..16)?)?;
    let ss = num(b.get(17..19)?)?;
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = b.get(19..)?;
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let digits = frac.get(..n)?;
        for i in 0..9 {
            let digit = digits
                .get(i)
                .and_then(|&d| char::from(d).to_digit(10))
                .unwrap_or(0);
            nanos = nanos.saturating_mul(10).saturating_add(digit); // at most 999_999_999
        }
        rest = frac.get(n..)?;
    }
    let offset: i64 = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = i64::from(num(&[*h1, *h2])?);
            let m = i64::from(num(&[*m1, *m2])?);
            let v = h.saturating_mul(3600).saturating_add(m.saturating_mul(60));
            if *sign == b'+' {
                v
            } else {
                v.saturating_neg()
            }
        }
        _ => return None,
    };
    let secs = date
        .checked_add(i64::from(hh).saturating_mul(3600))?
        .checked_add(i64::from(mm).saturating_mul(60))?
        .checked_add(i64::from(ss))?
        .checked_sub(offset)?;
    Some(Instant { secs, nanos })
}

/// True when `s` is `YYYY-MM-DDThh:mm:ss` with an optional `.` and 1–9 digits and no
/// zone, a valid date and time (exactly what `parse_iso` accepts in that shape): the
/// form of every Reporting Web Service date, so `normalize_date` takes it without
/// computing the instant.
pub fn is_plain_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let Some((head, rest)) = b.split_first_chunk::<19>() else {
        return false;
    };
    let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1, b'T', h0, h1, b':', i0, i1, b':', s0, s1] =
        *head
    else {
        return false;
    };
    let two = |a: u8, b: u8| -> Option<u32> {
        let (a, b) = (a.wrapping_sub(b'0'), b.wrapping_sub(b'0'));
        (a <= 9 && b <= 9).then(|| u32::from(a).saturating_mul(10).saturating_add(u32::from(b)))
    };
    let (Some(yh), Some(yl), Some(mo), Some(d), Some(hh), Some(mm), Some(ss)) = (
        two(y0, y1),
        two(y2, y3),
        two(m0, m1),
        two(d0, d1),
        two(h0, h1),
        two(i0, i1),
        two(s0, s1),
    ) else {
        return false;
    };
    let y = i64::from(yh)
        .saturating_mul(100)
        .saturating_add(i64::from(yl));
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y, mo)
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return false;
    }
    match rest.split_first() {
        None => true,
        Some((b'.', frac)) => !frac.is_empty() && frac.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// `YYYY-MM-DDThh:mm:ssZ`.
pub fn rfc3339(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(DAY));
    let t = secs.rem_euclid(DAY);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// `YYYY-MM-DDThh:mm:ss` without zone, as the Reporting Web Service's `$filter` takes it.
pub fn odata_datetime(secs: i64) -> String {
    let mut s = rfc3339(secs);
    s.pop();
    s
}

/// `YYYY-MM-DD` (tests only: production code writes RFC 3339).
#[cfg(test)]
pub fn ymd(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(DAY));
    format!("{y:04}-{mo:02}-{d:02}")
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// RFC 3164 stamp `Mmm dd HH:MM:SS`, day padded with a space (`Jan  5`), UTC.
pub fn rfc3164(secs: i64) -> String {
    let (_, mo, d) = civil_from_days(secs.div_euclid(DAY));
    let t = secs.rem_euclid(DAY);
    let month = (mo as usize)
        .checked_sub(1)
        .and_then(|i| MONTHS.get(i))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{month} {d:>2} {:02}:{:02}:{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// A duration in words for logs: `3d 4h`, `12m 5s`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m, sec) = (s / DAY, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

/// The system clock, for the IO edge only.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The system clock in milliseconds (the pull id).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_utc_agrees_with_parse_iso() {
        for ok in [
            "2026-11-24T10:00:00",
            "2026-11-24T10:00:00.1234567",
            "2024-02-29T23:59:60.5",
            "0000-01-01T00:00:00",
        ] {
            assert!(is_plain_utc(ok), "{ok}");
            assert!(parse_iso(ok).is_some(), "{ok}");
        }
        for not in [
            "2026-11-24T10:00:00Z",
            "2026-11-24 10:00:00",
            "2026-11-24t10:00:00",
            "2026-11-24T10:00:00.",
            "2026-11-24T10:00:00+00:00",
            "2025-02-29T10:00:00",
            "2026-13-01T10:00:00",
            "2026-11-24T24:00:00",
            "2026-11-24T10:60:00",
            "2026-11-24T10:00:61",
            "2026-1x-24T10:00:00",
            "2026-11-24T10:00",
            "",
        ] {
            assert!(!is_plain_utc(not), "{not}");
        }
    }

    #[test]
    fn civil_round_trip_including_leap_days() {
        for days in [-1_000_000i64, -1, 0, 1, 11_016, 19_782, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(parse_date("2024-02-29"), Some(19_782 * DAY));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2100-02-29"), None);
        assert_eq!(parse_date("2000-02-29").map(|s| s / DAY), Some(11_016));
    }

    #[test]
    fn parses_microsoft_forms() {
        let a = parse_iso("2026-11-24T10:00:00.1234567").unwrap();
        assert_eq!(rfc3339(a.secs), "2026-11-24T10:00:00Z");
        assert_eq!(a.nanos, 123_456_700);
        assert_eq!(parse_iso("2026-11-24T10:00:00Z").unwrap().nanos, 0);
        assert_eq!(
            parse_iso("2026-11-24T12:00:00+02:00").unwrap().secs,
            parse_iso("2026-11-24T10:00:00").unwrap().secs
        );
        assert!(parse_iso("2026-11-24T10:00").is_none());
        assert!(parse_iso("2026-13-24T10:00:00").is_none());
        assert!(parse_iso("2026-11-24T10:00:00.").is_none());
        assert!(parse_iso("").is_none());
    }

    #[test]
    fn formats() {
        let t = parse_iso("2026-01-05T03:04:05Z").unwrap().secs;
        assert_eq!(rfc3164(t), "Jan  5 03:04:05");
        assert_eq!(odata_datetime(t), "2026-01-05T03:04:05");
        assert_eq!(ymd(t), "2026-01-05");
        assert_eq!(human_duration(3 * DAY + 4 * 3600 + 5), "3d 4h");
    }

    /// The calendar helpers' `// why:` bounds: extreme inputs neither overflow (a panic
    /// in this debug build) nor wrap.
    #[test]
    fn extremes_do_not_overflow() {
        assert_eq!(
            parse_iso("2026-11-24T04:30:00-05:30").unwrap().secs,
            parse_iso("2026-11-24T10:00:00").unwrap().secs
        );
        let late = parse_iso("9999-12-31T23:59:60.999999999-99:99").unwrap();
        assert_eq!(late.nanos, 999_999_999);
        let utc = parse_iso("9999-12-31T23:59:60Z").unwrap().secs;
        assert_eq!(late.secs, utc + 99 * 3600 + 99 * 60);
        assert!(parse_iso("0000-01-01T00:00:00+99:99").unwrap().secs < 0);
        for secs in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
            let (a, b) = (rfc3339(secs), rfc3164(secs));
            assert!(a.ends_with('Z') && b.len() == 15, "{secs}: {a} {b}");
        }
    }
}
