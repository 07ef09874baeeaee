//! Metering: the tokens a request used, the budgets of a subject and of a real key, and the UTC calendar
//! windows those budgets reset with.
//!
//! A session's own limits are [`Limits`](crate::Limits); the budgets here span sessions: every session of
//! one subject (a user), every session of one `secret_key_id` (a real key). Day and month windows are UTC
//! calendar windows, so they reset by themselves at midnight UTC and on the first of the month, whatever
//! the clock of the instance that counts.

use std::fmt;
use std::time::{Duration, SystemTime};

/// Tokens an answer reported (or that a reservation stands for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokenUsage {
    /// Tokens of the request (the prompt), cached ones included.
    pub input: u64,
    /// Tokens of the answer.
    pub output: u64,
}

impl TokenUsage {
    /// Input and output together: what a token budget counts.
    pub fn total(self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// The budgets of every session of one subject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubjectLimits {
    /// Input and output tokens per UTC day.
    pub tokens_per_day: Option<u64>,
    /// Input and output tokens per UTC calendar month.
    pub tokens_per_month: Option<u64>,
    /// Proxied requests per minute, over all its sessions.
    pub requests_per_minute: Option<u32>,
}

impl SubjectLimits {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }
}

/// The budget of every session of one real key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecretKeyLimits {
    /// Input and output tokens per UTC day: the whole key's daily cap.
    pub tokens_per_day: Option<u64>,
}

impl SecretKeyLimits {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }
}

/// A calendar window of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
}

/// One window: its label, and the instants it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// `2026-12-07` for a day, `2026-12` for a month: part of the counters' names.
    pub label: String,
    /// The first instant inside.
    pub start: SystemTime,
    /// The first instant after.
    pub end: SystemTime,
}

const DAY: u64 = 86_400;

impl Period {
    /// The window of this period that contains `now` (instants before 1970 fall in the first window).
    pub fn window(self, now: SystemTime) -> Window {
        let seconds = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let days = seconds / DAY;
        let (year, month, day) = civil_from_days(days);
        let at = |days: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(days * DAY);
        match self {
            Self::Day => {
                Window { label: format!("{year:04}-{month:02}-{day:02}"), start: at(days), end: at(days + 1) }
            }
            Self::Month => {
                let first = days - (day - 1);
                let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                Window {
                    label: format!("{year:04}-{month:02}"),
                    start: at(first),
                    end: at(days_from_civil(next_year, next_month, 1)),
                }
            }
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Day => "day",
            Self::Month => "month",
        })
    }
}

/// The (year, month, day) of a count of days since 1970-01-01, in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The count of days since 1970-01-01 of a date (the inverse of [`civil_from_days`]), for years ≥ 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_day_runs_from_midnight_utc_to_the_next() {
        // 2026-12-07T01:33:33Z
        let window = Period::Day.window(at(1_796_607_213));
        assert_eq!(window.label, "2026-12-07");
        assert_eq!(window.start, at(1_796_601_600));
        assert_eq!(window.end, at(1_796_688_000));
        assert_eq!(Period::Day.window(at(1_796_688_000 - 1)).label, "2026-12-07", "the last second");
        assert_eq!(Period::Day.window(at(1_796_688_000)).label, "2026-12-08", "the boundary is the next day");
    }

    #[test]
    fn a_month_runs_from_its_first_day_to_the_next_months_across_years_and_leap_days() {
        let december = Period::Month.window(at(1_796_607_213));
        assert_eq!(december.label, "2026-12");
        assert_eq!(december.start, at(days_from_civil(2026, 12, 1) * DAY));
        assert_eq!(december.end, at(days_from_civil(2027, 1, 1) * DAY));
        let february = Period::Month.window(at(days_from_civil(2028, 2, 29) * DAY + 3600));
        assert_eq!(february.label, "2028-02");
        assert_eq!(february.end, at(days_from_civil(2028, 3, 1) * DAY));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    proptest! {
        #[test]
        fn every_instant_lies_in_its_window_and_windows_tile_time(seconds in 0u64..8_000_000_000) {
            for period in [Period::Day, Period::Month] {
                let window = period.window(at(seconds));
                prop_assert!(window.start <= at(seconds) && at(seconds) < window.end);
                prop_assert_eq!(period.window(window.end).start, window.end);
            }
        }

        #[test]
        fn days_and_dates_convert_both_ways(days in 0u64..3_000_000) {
            let (year, month, day) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(year, month, day), days);
        }
    }
}
