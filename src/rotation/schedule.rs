//! Schedules: rules that say which clients are rotated how often and when, and when each client
//! is due. The first rule that selects a client governs it. Due times are computed the same way
//! on every replica from the client's ledger record, so that replicas agree on them.

use std::time::{Duration, SystemTime};

use jiff::{
    SignedDuration, Timestamp,
    civil::{Date, Time, Weekday},
    tz::TimeZone,
};

use super::{
    client::Client,
    command::Selector,
    ids::{ClientId, Spelled},
    records::Strategy,
};

/// The rules in force; empty when no schedule is configured.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    pub rules: Vec<Rule>,
}

impl Schedule {
    /// The rule that governs `client`: the first that selects it.
    pub fn rule_for(&self, client_id: &ClientId, client: &Client) -> Option<&Rule> {
        self.governing(client_id, client).map(|at| &self.rules[at])
    }

    /// When this schedule rotates `client` next, last rotated at `last` (`None`: due since
    /// `started`) with a credential that expires at `expires`; `None` when no rule governs it.
    pub fn next_rotation(
        &self,
        client_id: &ClientId,
        client: &Client,
        last: Option<SystemTime>,
        expires: Option<SystemTime>,
        started: SystemTime,
    ) -> Option<ScheduledRotation> {
        let rule = self.rule_for(client_id, client)?;
        Some(ScheduledRotation {
            at: rule.due(client_id, last, expires, started),
            rule: rule.label.clone(),
            dry_run: rule.dry_run,
        })
    }

    /// Where in `rules` the rule that governs `client` is.
    pub fn governing(&self, client_id: &ClientId, client: &Client) -> Option<usize> {
        self.rules
            .iter()
            .position(|rule| rule.selector.matches(client_id, client))
    }
}

/// When a schedule rotates a client next, and which rule says so (ListClients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRotation {
    pub at: SystemTime,
    pub rule: String,
    pub dry_run: bool,
}

/// Which clients, how often, how and when.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Names the rule in logs, metrics, reasons and ListClients.
    pub label: String,
    pub selector: Selector,
    /// A client is due once its last rotation is this old.
    pub max_age: Spelled,
    /// A key client is due this long before its credential expires, when that is sooner.
    pub before_expiry: Option<Duration>,
    pub strategy: Strategy,
    /// When rotations may start; any time when `None`.
    pub window: Option<Window>,
    /// Each client's due time is delayed by its own share of this, so that clients rotated
    /// together are not due together again.
    pub jitter: Duration,
    /// Logs and reports what it would rotate, and rotates nothing.
    pub dry_run: bool,
}

impl Rule {
    /// When `client_id` is due: its last rotation plus `max_age` (or `since`, when it has none:
    /// due at once), plus its jitter offset, or `before_expiry` before its credential
    /// `expires` when that is sooner; moved into the window when outside it.
    pub fn due(
        &self,
        client_id: &ClientId,
        last: Option<SystemTime>,
        expires: Option<SystemTime>,
        since: SystemTime,
    ) -> SystemTime {
        let offset = jitter_offset(client_id, self.jitter);
        let by_age = last.map_or(since, |t| t + self.max_age.get()) + offset;
        let base = match self.expiring_from(expires) {
            Some(from) => by_age.min(from),
            None => by_age,
        };
        match &self.window {
            None => base,
            Some(window) => window.place(base, offset),
        }
    }

    /// From when a credential that `expires` then is due under `before_expiry`.
    pub fn expiring_from(&self, expires: Option<SystemTime>) -> Option<SystemTime> {
        let (expires, before) = (expires?, self.before_expiry?);
        Some(expires.checked_sub(before).unwrap_or(std::time::UNIX_EPOCH))
    }
}

/// Where in `[0, jitter)` a client's due time falls: the same on every replica and every
/// release (FNV-1a of the client id, not std's hasher, whose output may change).
fn jitter_offset(client_id: &ClientId, jitter: Duration) -> Duration {
    let millis = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    let hash = client_id
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    Duration::from_millis(hash % millis)
}

/// Days of the week and hours of the day, in a time zone, when rotations may start.
#[derive(Debug, Clone)]
pub struct Window {
    /// Monday first.
    days: [bool; 7],
    opens: Time,
    /// From opening to closing; past midnight when the window closes the next day.
    length: SignedDuration,
    time_zone: TimeZone,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    #[error("days must name at least one day")]
    NoDays,
    #[error("hours must be HH:MM-HH:MM (24-hour clock, 24:00 for midnight at the end), not {0:?}")]
    Hours(String),
    #[error("hours must not open and close at the same time ({0:?})")]
    EmptyHours(String),
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/Berlin or UTC")]
    TimeZone(String),
}

impl Window {
    /// `hours` is `HH:MM-HH:MM`, closing the next day when it closes before it opens
    /// (`22:00-06:00`); every hour when `None`.
    pub fn new(
        days: &[Weekday],
        hours: Option<&str>,
        time_zone: &str,
    ) -> Result<Self, WindowError> {
        if days.is_empty() {
            return Err(WindowError::NoDays);
        }
        let mut open = [false; 7];
        for day in days {
            open[usize::try_from(day.to_monday_zero_offset()).unwrap_or(0)] = true;
        }
        let time_zone =
            TimeZone::get(time_zone).map_err(|_| WindowError::TimeZone(time_zone.to_owned()))?;
        let (opens, length) = match hours {
            None => (Time::midnight(), SignedDuration::from_hours(24)),
            Some(hours) => parse_hours(hours)?,
        };
        Ok(Self {
            days: open,
            opens,
            length,
            time_zone,
        })
    }

    /// `at` when the window is open then; else when it next opens, plus `offset` (kept within
    /// the window, so that the clients waiting for it do not all start at its opening).
    fn place(&self, at: SystemTime, offset: Duration) -> SystemTime {
        let Ok(at_ts) = Timestamp::try_from(at) else {
            return at;
        };
        let Some((opens, closes)) = self.next_opening(at_ts) else {
            return at;
        };
        if opens <= at_ts {
            return at;
        }
        let open_for = closes.duration_since(opens).unsigned_abs();
        let spread = match open_for.as_millis() {
            0 => Duration::ZERO,
            len => {
                Duration::from_millis(u64::try_from(offset.as_millis() % len).unwrap_or_default())
            }
        };
        SystemTime::from(opens) + spread
    }

    /// The first opening of the window that closes after `at`: its opening and closing times.
    fn next_opening(&self, at: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let today: Date = at.to_zoned(self.time_zone.clone()).date();
        // From yesterday (a window open past midnight) to a week ahead: every day is covered.
        for n in -1..=8_i64 {
            let day = today.checked_add(SignedDuration::from_hours(24 * n)).ok()?;
            let index = usize::try_from(day.weekday().to_monday_zero_offset()).ok()?;
            if !self.days[index] {
                continue;
            }
            let opening = day.to_datetime(self.opens);
            let closing = opening.checked_add(self.length).ok()?;
            // A time the clocks skip (daylight saving) moves forward, as a wall clock does.
            let opens = opening.to_zoned(self.time_zone.clone()).ok()?.timestamp();
            let closes = closing.to_zoned(self.time_zone.clone()).ok()?.timestamp();
            if closes > at {
                return Some((opens, closes));
            }
        }
        None
    }
}

/// `09:00-17:00` as its opening time and length.
fn parse_hours(hours: &str) -> Result<(Time, SignedDuration), WindowError> {
    let bad = || WindowError::Hours(hours.to_owned());
    let minutes = |hm: &str| -> Option<i64> {
        let (h, m) = hm.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 24 * 60)
            .then_some(h * 60 + m)
    };
    let (from, to) = hours.split_once('-').ok_or_else(bad)?;
    let (from, to) = (minutes(from).ok_or_else(bad)?, minutes(to).ok_or_else(bad)?);
    if from == 24 * 60 {
        return Err(bad());
    }
    let length = match to - from {
        0 => return Err(WindowError::EmptyHours(hours.to_owned())),
        n if n < 0 => n + 24 * 60,
        n => n,
    };
    let opens = Time::new(
        i8::try_from(from / 60).map_err(|_| bad())?,
        i8::try_from(from % 60).map_err(|_| bad())?,
        0,
        0,
    )
    .map_err(|_| bad())?;
    Ok((opens, SignedDuration::from_mins(length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> SystemTime {
        SystemTime::from(s.parse::<Timestamp>().unwrap())
    }

    fn shown(t: SystemTime) -> String {
        Timestamp::try_from(t).unwrap().to_string()
    }

    fn weekdays() -> Vec<Weekday> {
        use Weekday::*;
        vec![Monday, Tuesday, Wednesday, Thursday, Friday]
    }

    fn rule(window: Option<Window>, jitter: Duration) -> Rule {
        Rule {
            label: "test".into(),
            selector: Selector::default(),
            max_age: Spelled::parse("90d").unwrap(),
            before_expiry: None,
            strategy: Strategy::Immediate,
            window,
            jitter,
            dry_run: false,
        }
    }

    /// When a client without jitter that is `max_age` old at a time is due under `window`.
    fn due_under(window: Window) -> impl Fn(&str) -> String {
        let r = rule(Some(window), Duration::ZERO);
        let id = ClientId::parse("abc").unwrap();
        move |old_at| {
            let last = utc(old_at) - r.max_age.get();
            shown(r.due(&id, Some(last), None, utc("2026-01-01T00:00:00Z")))
        }
    }

    #[test]
    fn a_client_is_due_max_age_after_its_last_rotation_and_at_once_without_one() {
        let id = ClientId::parse("abc").unwrap();
        let r = rule(None, Duration::ZERO);
        let last = utc("2026-01-01T10:00:00Z");
        assert_eq!(
            shown(r.due(&id, Some(last), None, utc("2026-11-01T00:00:00Z"))),
            "2026-04-01T10:00:00Z"
        );
        assert_eq!(
            shown(r.due(&id, None, None, utc("2026-11-01T00:00:00Z"))),
            "2026-11-01T00:00:00Z"
        );
    }

    #[test]
    fn a_credential_is_due_before_expiry_when_that_comes_before_max_age() {
        let id = ClientId::parse("abc").unwrap();
        let r = Rule {
            before_expiry: Some(Duration::from_secs(14 * 86_400)),
            ..rule(None, Duration::ZERO)
        };
        let since = utc("2026-11-01T00:00:00Z");
        let last = Some(utc("2026-01-01T10:00:00Z"));
        // Expires 30 days after the rotation: due 14 days before, at day 16.
        let expires = Some(utc("2026-01-31T10:00:00Z"));
        assert_eq!(
            shown(r.due(&id, last, expires, since)),
            "2026-01-17T10:00:00Z"
        );
        // Expires after max_age would: max_age governs; so it does without an expiry.
        let later = Some(utc("2027-01-01T00:00:00Z"));
        assert_eq!(
            shown(r.due(&id, last, later, since)),
            "2026-04-01T10:00:00Z"
        );
        assert_eq!(shown(r.due(&id, last, None, since)), "2026-04-01T10:00:00Z");
        // A rule without before_expiry ignores expiry.
        let plain = rule(None, Duration::ZERO);
        assert_eq!(
            shown(plain.due(&id, last, expires, since)),
            "2026-04-01T10:00:00Z"
        );
    }

    #[test]
    fn jitter_delays_each_client_by_its_own_share_the_same_on_every_replica() {
        let r = rule(None, Duration::from_secs(3600));
        let last = utc("2026-01-01T10:00:00Z");
        let since = utc("2026-01-01T00:00:00Z");
        let offsets: Vec<Duration> = (0..50)
            .map(|n| {
                let id = ClientId::parse(&format!("client{n}")).unwrap();
                let due = r.due(&id, Some(last), None, since);
                assert_eq!(due, r.due(&id, Some(last), None, since), "deterministic");
                due.duration_since(last + r.max_age.get()).unwrap()
            })
            .collect();
        assert!(offsets.iter().all(|o| *o < Duration::from_secs(3600)));
        let spread =
            offsets.iter().max().unwrap().as_secs() - offsets.iter().min().unwrap().as_secs();
        assert!(
            spread > 1800,
            "50 clients spread over the hour, not bunched: {offsets:?}"
        );
    }

    #[test]
    fn a_due_time_outside_the_window_moves_to_its_next_opening_in_the_time_zone() {
        let berlin = Window::new(&weekdays(), Some("09:00-17:00"), "Europe/Berlin").unwrap();
        let due = due_under(berlin);
        // Wednesday 10:00 in Berlin (09:00 UTC in winter): inside.
        assert_eq!(due("2026-11-25T09:00:00Z"), "2026-11-25T09:00:00Z");
        // Wednesday 17:30 in Berlin: Thursday 09:00 Berlin = 08:00 UTC.
        assert_eq!(due("2026-11-25T16:30:00Z"), "2026-11-26T08:00:00Z");
        // Friday evening: Monday 09:00.
        assert_eq!(due("2026-11-27T18:00:00Z"), "2026-11-30T08:00:00Z");
        // Summer time: Monday 09:00 Berlin is 07:00 UTC.
        assert_eq!(due("2026-07-05T12:00:00Z"), "2026-07-06T07:00:00Z");
    }

    #[test]
    fn a_window_past_midnight_is_open_until_it_closes_the_next_day() {
        let night = Window::new(&[Weekday::Saturday], Some("22:00-06:00"), "UTC").unwrap();
        let due = due_under(night);
        // Sunday 03:00 belongs to Saturday's window.
        assert_eq!(due("2026-11-29T03:00:00Z"), "2026-11-29T03:00:00Z");
        // Sunday 07:00: next Saturday 22:00.
        assert_eq!(due("2026-11-29T07:00:00Z"), "2026-12-05T22:00:00Z");
    }

    #[test]
    fn clients_waiting_for_a_window_are_spread_inside_it() {
        let window = Window::new(&weekdays(), Some("09:00-10:00"), "UTC").unwrap();
        let r = rule(Some(window), Duration::from_secs(6 * 3600));
        let since = utc("2026-01-01T00:00:00Z");
        let saturday = Some(utc("2026-11-28T12:00:00Z") - r.max_age.get());
        for n in 0..20 {
            let id = ClientId::parse(&format!("client{n}")).unwrap();
            let due = r.due(&id, saturday, None, since);
            assert!(
                due >= utc("2026-11-30T09:00:00Z") && due < utc("2026-11-30T10:00:00Z"),
                "{}",
                shown(due)
            );
        }
    }

    #[test]
    fn bad_windows_are_refused_with_what_is_wrong() {
        assert_eq!(
            Window::new(&[], None, "UTC").unwrap_err(),
            WindowError::NoDays
        );
        for hours in ["9-17", "09:00", "09:00-25:00", "24:00-01:00", "09:60-10:00"] {
            assert_eq!(
                Window::new(&weekdays(), Some(hours), "UTC").unwrap_err(),
                WindowError::Hours(hours.into())
            );
        }
        assert!(matches!(
            Window::new(&weekdays(), Some("09:00-09:00"), "UTC"),
            Err(WindowError::EmptyHours(_))
        ));
        assert!(matches!(
            Window::new(&weekdays(), None, "Mars/Olympus"),
            Err(WindowError::TimeZone(_))
        ));
        assert!(Window::new(&weekdays(), Some("00:00-24:00"), "UTC").is_ok());
    }
}
