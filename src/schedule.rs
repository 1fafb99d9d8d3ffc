//! Maintenance windows: when `check --auto` may apply a release (zincati's "periodic"
//! strategy). A window is days of the week and a start and end time in a time zone, e.g.
//! `Mon-Fri 02:00-04:00` or `Sat 22:00-02:00` (an end before the start is on the next day).
//! Civil times that a DST change skips or repeats resolve as the zone's "compatible" rule
//! does: a skipped start moves forward, a repeated one takes the first occurrence.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// One weekly window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Monday = 0 … Sunday = 6.
    days: [bool; 7],
    /// Minutes after midnight.
    start: u16,
    end: u16,
    /// As written, for messages.
    spec: String,
}

/// The windows in their time zone. No windows: applying is always allowed.
#[derive(Debug, Clone)]
pub struct Schedule {
    windows: Vec<Window>,
    tz: TimeZone,
    tz_name: String,
}

const DAYS: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

fn day(s: &str) -> Result<usize, String> {
    let l = s.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|(short, long)| l == *short || l == *long)
        .ok_or_else(|| format!("{s:?} is not a day of the week (Mon … Sun)"))
}

fn clock(s: &str) -> Result<u16, String> {
    let err = || format!("{s:?} is not a time (HH:MM, 00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(err)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
    if h > 24 || m > 59 || (h == 24 && m != 0) || s.len() != 5 {
        return Err(err());
    }
    Ok(h * 60 + m)
}

impl Window {
    /// Parses `Mon-Fri 02:00-04:00`, `Sat,Sun 22:00-02:00`, `daily 03:00-05:00`.
    pub fn parse(spec: &str) -> Result<Window, String> {
        let bad = |why: String| format!("window {spec:?}: {why}");
        let (days_s, times) = spec
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected DAYS HH:MM-HH:MM".into()))?;
        let mut days = [false; 7];
        if matches!(days_s.to_ascii_lowercase().as_str(), "daily" | "*") {
            days = [true; 7];
        } else {
            for part in days_s.split(',') {
                match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a).map_err(bad)?, day(b).map_err(bad)?);
                        let mut d = a;
                        loop {
                            days[d] = true;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => days[day(part).map_err(bad)?] = true,
                }
            }
        }
        let (s, e) = times
            .trim()
            .split_once('-')
            .ok_or_else(|| bad("expected HH:MM-HH:MM".into()))?;
        let (start, end) = (clock(s.trim()).map_err(bad)?, clock(e.trim()).map_err(bad)?);
        if start == end || start == 24 * 60 {
            return Err(bad("the window is empty".into()));
        }
        Ok(Window {
            days,
            start,
            end,
            spec: spec.trim().to_string(),
        })
    }
}

/// A window's occurrence: [start, end).
pub type Occurrence = (Timestamp, Timestamp);

fn at(date: Date, minutes: u16, tz: &TimeZone) -> Option<Timestamp> {
    let (date, minutes) = if minutes == 24 * 60 {
        (date.tomorrow().ok()?, 0)
    } else {
        (date, minutes)
    };
    let time = Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0).ok()?;
    let dt = date.to_datetime(time);
    tz.to_ambiguous_zoned(dt)
        .compatible()
        .ok()
        .map(|z| z.timestamp())
}

impl Schedule {
    /// Windows in `tz` (an IANA name; `None`: the host's time zone).
    pub fn parse(specs: &[String], tz: Option<&str>) -> Result<Schedule, String> {
        let (tz, tz_name) = match tz.filter(|t| !t.is_empty()) {
            Some(name) => (
                TimeZone::get(name).map_err(|e| format!("time zone {name:?}: {e}"))?,
                name.to_string(),
            ),
            None => {
                let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
                let name = tz.iana_name().unwrap_or("UTC").to_string();
                (tz, name)
            }
        };
        let windows = specs
            .iter()
            .map(|s| Window::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule {
            windows,
            tz,
            tz_name,
        })
    }

    /// True when no window is configured.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The time zone's name.
    pub fn tz_name(&self) -> &str {
        &self.tz_name
    }

    /// Every occurrence that starts between a day before `now` and eight days after.
    fn occurrences(&self, now: Timestamp) -> Vec<Occurrence> {
        let today = now.to_zoned(self.tz.clone()).date();
        let mut out = Vec::new();
        for offset in -1i64..=8 {
            let Ok(date) = today.checked_add(jiff::Span::new().days(offset)) else {
                continue;
            };
            let weekday = date.weekday().to_monday_zero_offset() as usize;
            for w in &self.windows {
                if !w.days[weekday] {
                    continue;
                }
                let end_date = if w.end <= w.start {
                    match date.tomorrow() {
                        Ok(d) => d,
                        Err(_) => continue,
                    }
                } else {
                    date
                };
                if let (Some(s), Some(e)) =
                    (at(date, w.start, &self.tz), at(end_date, w.end, &self.tz))
                {
                    if e > s {
                        out.push((s, e));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The window open at `now`, if any.
    pub fn current(&self, now: Timestamp) -> Option<Occurrence> {
        self.occurrences(now)
            .into_iter()
            .find(|(s, e)| *s <= now && now < *e)
    }

    /// True when applying is allowed at `now`: no windows, or inside one.
    pub fn allows(&self, now: Timestamp) -> bool {
        self.is_empty() || self.current(now).is_some()
    }

    /// The window open at `now`, else the next one to open; `None` without windows.
    pub fn next(&self, now: Timestamp) -> Option<Occurrence> {
        if let Some(c) = self.current(now) {
            return Some(c);
        }
        self.occurrences(now).into_iter().find(|(s, _)| *s > now)
    }

    /// The windows as written.
    pub fn specs(&self) -> Vec<String> {
        self.windows.iter().map(|w| w.spec.clone()).collect()
    }
}

/// µs since the epoch as `2026-11-27 03:00:00 UTC`; `never` for 0.
pub fn format_us(us: u64) -> String {
    if us == 0 {
        return "never".into();
    }
    match Timestamp::from_microsecond(us.min(i64::MAX as u64) as i64) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{us} µs after the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sched(specs: &[&str], tz: &str) -> Schedule {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        Schedule::parse(&specs, Some(tz)).unwrap()
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(format_us(0), "never");
        assert_eq!(format_us(1_796_000_400_000_000), "2026-11-30 01:00:00 UTC");
    }

    #[test]
    fn windows_parse_or_say_why_not() {
        assert!(Window::parse("Mon-Fri 02:00-04:00").is_ok());
        assert!(Window::parse("sat,sun 22:00-02:00").is_ok());
        assert!(Window::parse("Fri-Mon 23:00-24:00").is_ok());
        assert!(Window::parse("daily 03:00-05:00").is_ok());
        for (bad, says) in [
            ("Mon 02:00", "expected"),
            ("Funday 02:00-03:00", "not a day"),
            ("Mon 2:00-03:00", "not a time"),
            ("Mon 02:00-25:00", "not a time"),
            ("Mon 02:00-02:00", "empty"),
            ("Mon-Fri", "expected"),
        ] {
            let e = Window::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(Schedule::parse(&["Mon 02:00-03:00".into()], Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn inside_outside_and_the_next_window() {
        // 2026-11-27 is a Friday.
        let s = sched(&["Mon-Fri 02:00-04:00", "Sat 22:00-02:00"], "Europe/Paris");
        // Friday 03:00 Paris (02:00 UTC): inside.
        assert!(s.allows(ts("2026-11-27T02:00:00Z")));
        // Friday 12:00 Paris: outside; next is Saturday 22:00 Paris = 21:00 UTC.
        let now = ts("2026-11-27T11:00:00Z");
        assert!(!s.allows(now));
        assert_eq!(s.next(now).unwrap().0, ts("2026-11-28T21:00:00Z"));
        // The Saturday window crosses midnight: Sunday 01:30 Paris is inside it.
        assert!(s.allows(ts("2026-11-29T00:30:00Z")));
        assert!(
            !s.allows(ts("2026-11-29T01:30:00Z")),
            "Sunday 02:30 is past its end"
        );
        // Sunday afternoon: next is Monday 02:00 Paris = 01:00 UTC.
        assert_eq!(
            s.next(ts("2026-11-29T14:00:00Z")).unwrap().0,
            ts("2026-11-30T01:00:00Z")
        );
        // No windows: always allowed, no next window.
        let none = sched(&[], "UTC");
        assert!(none.allows(now) && none.next(now).is_none());
    }

    #[test]
    fn dst_changes_are_honoured() {
        // Europe/Paris springs forward on 2027-03-28 at 02:00 (to 03:00): a 02:00-04:00
        // window that Sunday opens at 03:00 CEST (01:00 UTC) and lasts one hour.
        let s = sched(&["Sun 02:00-04:00"], "Europe/Paris");
        let (start, end) = s.next(ts("2027-03-27T12:00:00Z")).unwrap();
        assert_eq!(start, ts("2027-03-28T01:00:00Z"));
        assert_eq!(end, ts("2027-03-28T02:00:00Z"));
        // It falls back on 2026-10-25 at 03:00 (to 02:00): 02:00-04:00 that Sunday starts at
        // the first 02:00 (CEST, 00:00 UTC) and ends at 04:00 CET (03:00 UTC): three hours.
        let (start, end) = s.next(ts("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(start, ts("2026-10-25T00:00:00Z"));
        assert_eq!(end, ts("2026-10-25T03:00:00Z"));
    }
}
