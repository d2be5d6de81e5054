//! Time bounds for `--from` / `--to`, and wall-clock formatting.
//!
//! Accepted forms ([`TimeSpec::parse`]):
//! - absolute: RFC 3339 (`2026-11-24T06:30:00Z`, `2026-11-24T06:30:00.5+02:00`,
//!   `2026-11-24 06:30:00` which is UTC), or a bare date (`2026-11-24`, midnight UTC);
//! - a time of day `HH:MM[:SS[.frac]]` (UTC), meaning that time on the day the capture
//!   started (the next day when it is more than 12 hours before the start, for captures that
//!   run past midnight);
//! - relative to the capture start: `+30s`, `+5m`, `90s`, `1h30m`, `500ms`, or a bare number
//!   of seconds (`90`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NS_PER_SEC: u64 = 1_000_000_000;
const NS_PER_DAY: u64 = 86_400 * NS_PER_SEC;

/// A malformed time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time '{input}': {reason}")]
pub struct TimeError {
    /// What was given.
    pub input: String,
    /// Why it does not parse.
    pub reason: String,
}

/// A time bound, before it is resolved against the capture start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    /// Wall-clock ns since the Unix epoch.
    Absolute(u64),
    /// ns since midnight UTC on the day the capture started.
    TimeOfDay(u64),
    /// ns after the capture start.
    Relative(u64),
}

impl TimeSpec {
    /// Parses one of the forms in the [module documentation](self).
    pub fn parse(input: &str) -> Result<TimeSpec, TimeError> {
        let s = input.trim();
        let err = |reason: &str| TimeError {
            input: input.to_string(),
            reason: reason.into(),
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if let Some(rest) = s.strip_prefix('+') {
            return parse_duration(rest).map(TimeSpec::Relative).ok_or_else(|| {
                err("expected a duration after '+', like +30s, +5m, +1h30m, +500ms")
            });
        }
        if let Some(d) = parse_duration(s) {
            return Ok(TimeSpec::Relative(d));
        }
        if is_time_of_day(s) {
            return parse_time_of_day(s)
                .map(TimeSpec::TimeOfDay)
                .ok_or_else(|| err("expected HH:MM[:SS[.fraction]] with HH < 24, MM and SS < 60"));
        }
        if s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') {
            return parse_absolute(s).map(TimeSpec::Absolute).ok_or_else(|| {
                err("expected RFC 3339, like 2026-11-24T06:30:00Z or 2026-11-24T08:30:00+02:00")
            });
        }
        Err(err(
            "expected RFC 3339 (2026-11-24T06:30:00Z), a time of day (06:30:00), or a duration \
             after the capture start (+30s, 5m)",
        ))
    }

    /// The wall-clock time (ns since the epoch) this bound means for a capture that started at
    /// `start_wall_ns`.
    pub fn resolve(self, start_wall_ns: u64) -> u64 {
        match self {
            TimeSpec::Absolute(ns) => ns,
            TimeSpec::Relative(d) => start_wall_ns.saturating_add(d),
            TimeSpec::TimeOfDay(tod) => {
                let day = start_wall_ns - start_wall_ns % NS_PER_DAY;
                let t = day.saturating_add(tod);
                if t.saturating_add(NS_PER_DAY / 2) < start_wall_ns {
                    t.saturating_add(NS_PER_DAY)
                } else {
                    t
                }
            }
        }
    }
}

impl std::str::FromStr for TimeSpec {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TimeSpec::parse(s)
    }
}

fn parse_duration(s: &str) -> Option<u64> {
    if !s.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().ok()?.checked_mul(NS_PER_SEC);
    }
    if s.contains(':') || s.contains('-') {
        return None;
    }
    let d = humantime::parse_duration(s).ok()?;
    u64::try_from(d.as_nanos()).ok()
}

fn is_time_of_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 4
        && b.iter()
            .all(|c| c.is_ascii_digit() || *c == b':' || *c == b'.')
        && s.contains(':')
}

fn parse_time_of_day(s: &str) -> Option<u64> {
    let (hms, frac) = match s.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (s, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty() || p.len() > 2) {
        return None;
    }
    let h: u64 = parts[0].parse().ok()?;
    let m: u64 = parts[1].parse().ok()?;
    let sec: u64 = match parts.get(2) {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if h >= 24 || m >= 60 || sec >= 60 || (frac.is_some() && parts.len() != 3) {
        return None;
    }
    let frac_ns = match frac {
        Some(f) => parse_fraction(f)?,
        None => 0,
    };
    Some(((h * 60 + m) * 60 + sec) * NS_PER_SEC + frac_ns)
}

/// `"5"` → 500 ms, `"123456789"` → 123456789 ns.
fn parse_fraction(f: &str) -> Option<u64> {
    if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: u64 = f.parse().ok()?;
    Some(digits * 10u64.pow(9 - u32::try_from(f.len()).ok()?))
}

fn parse_absolute(s: &str) -> Option<u64> {
    // A bare date: midnight UTC.
    if s.len() == 10 {
        return parse_absolute(&format!("{s}T00:00:00Z"));
    }
    // Split off a numeric offset (+HH:MM / -HH:MM / +HHMM) after the time part.
    let (base, offset_secs) = split_offset(s)?;
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    let ns = u64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()?;
    let adj = i128::from(ns) - i128::from(offset_secs) * i128::from(NS_PER_SEC);
    u64::try_from(adj).ok()
}

fn split_offset(s: &str) -> Option<(&str, i64)> {
    if let Some(base) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return Some((base, 0));
    }
    // Offsets only appear after the time part, past position 10 (the date).
    let time_part = s.get(10..)?;
    let Some(pos) = time_part.rfind(['+', '-']) else {
        return Some((s, 0));
    };
    let (base, off) = s.split_at(10 + pos);
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let digits: String = off[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = digits[2..].parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    Some((base, sign * (h * 3600 + m * 60)))
}

/// Formats wall-clock ns as RFC 3339 UTC with nanoseconds: `2026-11-24T06:30:00.123456789Z`.
pub fn format_wall(wall_ns: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(wall_ns);
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Formats wall-clock times like [`format_wall`], reusing the date and time of day while the
/// second does not change (streams of events format many times per second).
#[derive(Clone, Debug, Default)]
pub struct WallFormatter {
    sec: Option<u64>,
    prefix: String,
}

impl WallFormatter {
    /// Appends `wall_ns` as RFC 3339 UTC with nanoseconds.
    pub fn push(&mut self, out: &mut String, wall_ns: u64) {
        let sec = wall_ns / NS_PER_SEC;
        if self.sec != Some(sec) {
            let full = format_wall(sec * NS_PER_SEC);
            self.prefix = full.get(..19).unwrap_or(&full).to_string();
            self.sec = Some(sec);
        }
        out.push_str(&self.prefix);
        let _ = std::fmt::Write::write_fmt(out, format_args!(".{:09}Z", wall_ns % NS_PER_SEC));
    }
}

/// Formats a duration in ns compactly: `850ns`, `12.3µs`, `4.56ms`, `1.234s`, `2m03s`.
pub fn format_duration(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < NS_PER_SEC {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else if ns < 60 * NS_PER_SEC {
        format!("{:.3}s", ns as f64 / 1e9)
    } else {
        let s = ns / NS_PER_SEC;
        if s < 3600 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60)
        }
    }
}

/// Wall-clock ns since the epoch for a [`SystemTime`] (0 before the epoch).
pub fn system_time_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-24T06:30:00Z
    const T0: u64 = 1_795_501_800 * NS_PER_SEC;

    #[test]
    fn absolute_forms() {
        assert_eq!(
            TimeSpec::parse("2026-11-24T06:30:00Z"),
            Ok(TimeSpec::Absolute(T0))
        );
        assert_eq!(
            TimeSpec::parse("2026-11-24 06:30:00"),
            Ok(TimeSpec::Absolute(T0))
        );
        assert_eq!(
            TimeSpec::parse("2026-11-24T06:30:00.25Z"),
            Ok(TimeSpec::Absolute(T0 + 250_000_000))
        );
        assert_eq!(
            TimeSpec::parse("2026-11-24T08:30:00+02:00"),
            Ok(TimeSpec::Absolute(T0))
        );
        assert_eq!(
            TimeSpec::parse("2026-11-24T01:30:00-0500"),
            Ok(TimeSpec::Absolute(T0))
        );
        assert_eq!(
            TimeSpec::parse("2026-11-24"),
            Ok(TimeSpec::Absolute(T0 - (6 * 3600 + 1800) * NS_PER_SEC))
        );
        assert_eq!(format_wall(T0 + 5), "2026-11-24T06:30:00.000000005Z");
        let mut f = WallFormatter::default();
        for t in [
            T0 + 5,
            T0 + 7,
            T0 + NS_PER_SEC + 3,
            T0 + 86_400 * NS_PER_SEC - 1,
        ] {
            let mut s = String::new();
            f.push(&mut s, t);
            assert_eq!(s, format_wall(t));
        }
    }

    #[test]
    fn relative_forms() {
        assert_eq!(
            TimeSpec::parse("+30s"),
            Ok(TimeSpec::Relative(30 * NS_PER_SEC))
        );
        assert_eq!(
            TimeSpec::parse("+5m"),
            Ok(TimeSpec::Relative(300 * NS_PER_SEC))
        );
        assert_eq!(
            TimeSpec::parse("90s"),
            Ok(TimeSpec::Relative(90 * NS_PER_SEC))
        );
        assert_eq!(
            TimeSpec::parse("90"),
            Ok(TimeSpec::Relative(90 * NS_PER_SEC))
        );
        assert_eq!(
            TimeSpec::parse("1h30m"),
            Ok(TimeSpec::Relative(5400 * NS_PER_SEC))
        );
        assert_eq!(
            TimeSpec::parse("+500ms"),
            Ok(TimeSpec::Relative(500_000_000))
        );
        assert_eq!(TimeSpec::Relative(5).resolve(T0), T0 + 5);
    }

    #[test]
    fn time_of_day_is_on_the_capture_day() {
        let tod = TimeSpec::parse("06:31:00").expect("valid");
        assert_eq!(tod, TimeSpec::TimeOfDay((6 * 3600 + 31 * 60) * NS_PER_SEC));
        assert_eq!(tod.resolve(T0), T0 + 60 * NS_PER_SEC);
        // Slightly before the start: same day, so the window starts at the capture start.
        assert_eq!(
            TimeSpec::parse("06:29").expect("valid").resolve(T0),
            T0 - 60 * NS_PER_SEC
        );
        // A capture started at 23:50 and a time of 00:10: the next day.
        let late = T0 - T0 % NS_PER_DAY + (23 * 3600 + 50 * 60) * NS_PER_SEC;
        let r = TimeSpec::parse("00:10:00").expect("valid").resolve(late);
        assert_eq!(r, late + 20 * 60 * NS_PER_SEC);
        assert_eq!(
            TimeSpec::parse("06:30:00.5").expect("valid").resolve(T0),
            T0 + NS_PER_SEC / 2
        );
    }

    #[test]
    fn bad_times_say_why() {
        for bad in [
            "",
            "+",
            "+abc",
            "25:00:00",
            "06:61",
            "yesterday",
            "2026-13-40T00:00:00Z",
            "2026-11-24T06:30:00+25:00",
            "-5m",
            "06:30:00.1234567891",
        ] {
            let e = TimeSpec::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(bad.trim()), "{e}");
        }
    }

    #[test]
    fn random_input_never_panics() {
        let alphabet = [
            "0",
            "1",
            "9",
            ":",
            ".",
            "-",
            "+",
            "T",
            "Z",
            "z",
            " ",
            "s",
            "ms",
            "h",
            "2026",
            "-11-24",
            "é",
            "\u{0}",
            "99999999999999999999",
            "::",
            "+25:00",
        ];
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..(seed % 7 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push_str(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            if let Ok(t) = TimeSpec::parse(&s) {
                let _ = t.resolve(u64::MAX - 5);
                let _ = t.resolve(0);
            }
        }
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(format_duration(850), "850ns");
        assert_eq!(format_duration(12_300), "12.3µs");
        assert_eq!(format_duration(4_560_000), "4.56ms");
        assert_eq!(format_duration(1_234_000_000), "1.234s");
        assert_eq!(format_duration(123 * NS_PER_SEC), "2m03s");
        assert_eq!(format_duration(3723 * NS_PER_SEC), "1h02m03s");
    }
}
