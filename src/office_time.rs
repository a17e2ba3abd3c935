//! The office's clock: records are stored in UTC (unix milliseconds) and shown, filtered and
//! grouped by day and month in the office's time zone (`[web] time_zone`, default the
//! machine's zone). Days are calendar days of that zone, so a day in a DST change lasts 23 or
//! 25 hours and a call at 00:30 local time belongs to the day it happened on.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The office's time zone and the conversions the dashboard needs.
#[derive(Debug, Clone)]
pub struct OfficeTime {
    tz: TimeZone,
    name: String,
}

impl Default for OfficeTime {
    fn default() -> Self {
        OfficeTime::utc()
    }
}

impl OfficeTime {
    pub fn utc() -> OfficeTime {
        OfficeTime {
            tz: TimeZone::UTC,
            name: "UTC".into(),
        }
    }

    /// The zone called `name` (IANA), or the machine's zone when `None`; UTC when neither can
    /// be found (the configuration checked the name already).
    pub fn new(name: Option<&str>) -> OfficeTime {
        match name {
            Some(n) => match TimeZone::get(n) {
                Ok(tz) => OfficeTime {
                    tz,
                    name: n.to_owned(),
                },
                Err(_) => OfficeTime::utc(),
            },
            None => {
                let tz = TimeZone::system();
                let name = tz.iana_name().unwrap_or("UTC").to_owned();
                OfficeTime { tz, name }
            }
        }
    }

    /// The zone's name, as shown next to times (`Europe/Berlin`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn civil(&self, ms: i64) -> Option<jiff::civil::DateTime> {
        let ts = Timestamp::from_millisecond(ms).ok()?;
        Some(ts.to_zoned_datetime(self.tz.clone()).datetime())
    }

    /// `ms` as `YYYY-MM-DD HH:MM:SS` in the office's zone.
    pub fn show(&self, ms: i64) -> String {
        match self.civil(ms) {
            Some(dt) => dt.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            None => String::from("?"),
        }
    }

    /// The office-zone date of `ms` as `YYYY-MM-DD`.
    pub fn day(&self, ms: i64) -> String {
        match self.civil(ms) {
            Some(dt) => dt.date().strftime("%Y-%m-%d").to_string(),
            None => String::from("?"),
        }
    }

    /// The office-zone date of `ms` as `YYYY-MM`.
    pub fn month(&self, ms: i64) -> String {
        match self.civil(ms) {
            Some(dt) => dt.date().strftime("%Y-%m").to_string(),
            None => String::from("?"),
        }
    }

    /// The instant (unix ms) the office-zone day `date` begins.
    pub fn start_of(&self, date: Date) -> Option<i64> {
        let zoned = date.to_zoned_datetime(self.tz.clone()).ok()?;
        Some(zoned.start_of_day().ok()?.timestamp().as_millisecond())
    }

    /// The start of a `YYYY-MM-DD` day given by a person (forms, query strings).
    pub fn parse_day(&self, text: &str) -> Option<i64> {
        let date: Date = text.trim().parse().ok()?;
        if date.year() < 1970 {
            return None;
        }
        self.start_of(date)
    }

    /// `[start, end)` of a `YYYY-MM` month given by a person.
    pub fn parse_month(&self, text: &str) -> Option<(i64, i64)> {
        let t = text.trim();
        let (y, m) = t.split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        let year: i16 = y.parse().ok()?;
        let month: i8 = m.parse().ok()?;
        if !(1970..=9998).contains(&year) {
            return None;
        }
        let first = Date::new(year, month, 1).ok()?;
        let next = first.checked_add(jiff::Span::new().months(1)).ok()?;
        Some((self.start_of(first)?, self.start_of(next)?))
    }

    fn date_of(&self, ms: i64) -> Option<Date> {
        self.civil(ms).map(|dt| dt.date())
    }

    /// Today (`[start, end)`) and this month in the office's zone, at the instant `now_ms`.
    pub fn today_and_month(&self, now_ms: i64) -> Option<((i64, i64), (i64, i64))> {
        let today = self.date_of(now_ms)?;
        let tomorrow = today.tomorrow().ok()?;
        let first = today.first_of_month();
        let next = first.checked_add(jiff::Span::new().months(1)).ok()?;
        Some((
            (self.start_of(today)?, self.start_of(tomorrow)?),
            (self.start_of(first)?, self.start_of(next)?),
        ))
    }

    /// The starts of the last `days` days up to and including today, then the end of today
    /// (`days + 1` instants), for per-day charts.
    pub fn day_starts(&self, now_ms: i64, days: u16) -> Vec<i64> {
        let Some(today) = self.date_of(now_ms) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(usize::from(days) + 1);
        let mut d = today;
        for _ in 1..days {
            match d.yesterday() {
                Ok(y) => d = y,
                Err(_) => break,
            }
        }
        while let Some(ms) = self.start_of(d) {
            out.push(ms);
            if d > today {
                break;
            }
            match d.tomorrow() {
                Ok(t) => d = t,
                Err(_) => break,
            }
        }
        out
    }

    /// The next instant after `now_ms` at which the office's clock shows `hour:minute` (the
    /// first such instant of the day in a DST gap or fold: the clock time after the gap).
    pub fn next_at(&self, now_ms: i64, hour: u8, minute: u8) -> Option<i64> {
        let time =
            jiff::civil::Time::new(i8::try_from(hour).ok()?, i8::try_from(minute).ok()?, 0, 0)
                .ok()?;
        let mut day = self.date_of(now_ms)?;
        for _ in 0..3 {
            let zoned = day
                .to_datetime(time)
                .to_zoned_datetime(self.tz.clone())
                .ok()?;
            let ms = zoned.timestamp().as_millisecond();
            if ms > now_ms {
                return Some(ms);
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    /// The current month as `YYYY-MM`.
    pub fn this_month(&self, now_ms: i64) -> String {
        self.month(now_ms)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {

    #[test]
    fn next_at_is_later_today_or_tomorrow_in_the_office_zone() {
        let berlin = OfficeTime::new(Some("Europe/Berlin"));
        // 2026-03-10 01:00 UTC = 02:00 in Berlin (CET): 03:15 is today, 01:30 tomorrow.
        let now = 1_773_104_400_000;
        assert_eq!(berlin.show(now), "2026-03-10 02:00:00");
        let next = berlin.next_at(now, 3, 15).unwrap();
        assert_eq!(berlin.show(next), "2026-03-10 03:15:00");
        let next = berlin.next_at(now, 1, 30).unwrap();
        assert_eq!(berlin.show(next), "2026-03-11 01:30:00");
        // Exactly at the time: the next day's.
        let at = berlin.next_at(now, 2, 0).unwrap();
        assert_eq!(berlin.show(at), "2026-03-11 02:00:00");
        // 02:30 does not exist on 2026-03-29 (DST): the first instant after the gap.
        let before_gap = berlin.parse_day("2026-03-29").unwrap();
        let in_gap = berlin.next_at(before_gap, 2, 30).unwrap();
        assert_eq!(berlin.show(in_gap), "2026-03-29 03:30:00");
        assert!(berlin.next_at(now, 24, 0).is_none());
    }
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn berlin_days_and_dst() {
        let t = OfficeTime::new(Some("Europe/Berlin"));
        // 2026-03-28 23:30 UTC is 2026-03-29 00:30 CET, the day DST starts.
        let start = t.parse_day("2026-03-29").unwrap_or_default();
        assert_eq!(t.show(start), "2026-03-29 00:00:00");
        let next = t.parse_day("2026-03-30").unwrap_or_default();
        assert_eq!(next - start, 23 * H, "the spring day is 23 hours long");
        let late_utc = start + H / 2;
        assert_eq!(t.day(late_utc), "2026-03-29");
        assert_eq!(OfficeTime::utc().day(late_utc), "2026-03-28");
    }

    #[test]
    fn months_and_today() {
        let t = OfficeTime::new(Some("America/New_York"));
        let (a, b) = t.parse_month("2026-12").unwrap_or_default();
        assert_eq!(t.show(a), "2026-12-01 00:00:00");
        assert_eq!(t.show(b), "2027-01-01 00:00:00");
        assert_eq!(t.parse_month("2026-13"), None);
        assert_eq!(t.parse_month("<script>"), None);
        assert_eq!(t.parse_day("2026-02-31"), None);
        // 2026-12-01 03:00 UTC is still 30 November in New York.
        let now = OfficeTime::utc()
            .parse_day("2026-12-01")
            .unwrap_or_default()
            + 3 * H;
        let Some(((d0, d1), (m0, m1))) = t.today_and_month(now) else {
            panic!("no periods")
        };
        assert_eq!(t.show(d0), "2026-11-30 00:00:00");
        assert_eq!(d1 - d0, 24 * H);
        assert_eq!(t.show(m0), "2026-11-01 00:00:00");
        assert_eq!(t.show(m1), "2026-12-01 00:00:00");
        let starts = t.day_starts(now, 30);
        assert_eq!(starts.len(), 31);
        assert_eq!(starts[29], d0);
        assert_eq!(starts[30], d1);
    }

    #[test]
    fn unknown_zone_is_utc() {
        assert_eq!(OfficeTime::new(Some("Mars/Olympus")).name(), "UTC");
    }
}
