//! When records go out: the settings of a run, its time line (lead-in,
//! warm-up, measured window, drain) and, for each record of a producer,
//! whether and from when it is sent.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::stamp::Stamp;

/// How one run offers load.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Producers, each driving one sink.
    pub producers: usize,
    /// Records per second offered in total, split evenly among the
    /// producers (open loop); `None` sends as fast as the window of
    /// outstanding records lets (closed loop).
    pub rate_per_sec: Option<f64>,
    /// Most records one producer has handed to its sink without seeing them
    /// acknowledged; `None` leaves the sink's own buffer as the only bound.
    pub max_outstanding: Option<usize>,
    /// Size of each record value in bytes, stamp included (a smaller size
    /// still carries the whole stamp).
    pub record_size: usize,
    /// What each value starts with.
    pub stamp: Stamp,
    /// From fixing the clock to the first intended send: time for the
    /// producers' tasks to start, so the first records are not late by that.
    pub lead_in: Duration,
    /// Load before the measured window, not counted.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// After the window, how long outstanding records may still complete
    /// before they count as failed.
    pub drain: Duration,
    /// Keep the id of every acknowledged record, to check afterwards that
    /// none of them was lost.
    pub track_acks: bool,
}

impl Schedule {
    /// Records per second one producer offers, in open loop.
    pub fn rate_per_producer(&self) -> Option<f64> {
        self.rate_per_sec.map(|rate| rate / self.producers as f64)
    }
}

/// The time origins of one run, shared by all its tasks.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Intended send time of every producer's first record.
    pub start: Instant,
    /// `start` in nanoseconds since the Unix epoch: the origin of stamps.
    pub start_unix_ns: u64,
    pub window_start: Instant,
    pub window_end: Instant,
    /// When records still outstanding count as failed and the run ends.
    pub drain_deadline: Instant,
}

/// Where in its time line a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the measured window (lead-in included).
    WarmUp,
    Measure,
    /// After the window, while outstanding records complete.
    Drain,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::WarmUp => "warm-up",
            Phase::Measure => "measure",
            Phase::Drain => "drain",
        }
    }
}

/// What a producer does with its next record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    /// Send it, its latency counted from this instant (in open loop, wait
    /// until then first).
    At(Instant),
    /// The schedule is complete.
    Done,
    /// The drain deadline passed before the schedule was sent: the system
    /// fell so far behind that this many records were never sent.
    GiveUp { unsent: u64 },
}

impl Clock {
    /// A clock whose start lies `schedule.lead_in` from now.
    pub fn new(schedule: &Schedule) -> Clock {
        let now_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Clock::starting(Instant::now(), now_unix_ns, schedule)
    }

    fn starting(now: Instant, now_unix_ns: u64, schedule: &Schedule) -> Clock {
        let start = now + schedule.lead_in;
        let window_start = start + schedule.warmup;
        let window_end = window_start + schedule.duration;
        Clock {
            start,
            start_unix_ns: now_unix_ns + schedule.lead_in.as_nanos() as u64,
            window_start,
            window_end,
            drain_deadline: window_end + schedule.drain,
        }
    }

    /// `at` in nanoseconds since the Unix epoch, as stamps carry it.
    pub fn unix_ns(&self, at: Instant) -> u64 {
        self.start_unix_ns + at.saturating_duration_since(self.start).as_nanos() as u64
    }

    pub fn now_unix_ns(&self) -> u64 {
        self.unix_ns(Instant::now())
    }

    pub fn in_window(&self, at: Instant) -> bool {
        at >= self.window_start && at < self.window_end
    }

    /// Whether a stamp (nanoseconds since the Unix epoch) lies in the window.
    pub fn unix_ns_in_window(&self, unix_ns: u64) -> bool {
        unix_ns >= self.unix_ns(self.window_start) && unix_ns < self.unix_ns(self.window_end)
    }

    pub fn phase(&self, at: Instant) -> Phase {
        if at < self.window_start {
            Phase::WarmUp
        } else if at < self.window_end {
            Phase::Measure
        } else {
            Phase::Drain
        }
    }

    /// Intended send time of record `sequence` of a producer offering
    /// `rate_per_sec` records per second.
    pub fn intended(&self, sequence: u64, rate_per_sec: f64) -> Instant {
        self.start + Duration::from_secs_f64(sequence as f64 / rate_per_sec)
    }

    /// What a producer offering `rate_per_sec` (open loop) or as much as it
    /// can (`None`, closed loop) does with its record `sequence` at `now`.
    pub fn next(&self, sequence: u64, rate_per_sec: Option<f64>, now: Instant) -> Next {
        match rate_per_sec {
            Some(rate) => {
                let intended = self.intended(sequence, rate);
                if intended >= self.window_end {
                    Next::Done
                } else if now >= self.drain_deadline {
                    let scheduled = ((self.window_end - self.start).as_secs_f64() * rate).ceil() as u64;
                    Next::GiveUp { unsent: scheduled.saturating_sub(sequence) }
                } else {
                    Next::At(intended)
                }
            }
            None if now >= self.window_end => Next::Done,
            None => Next::At(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rate_per_sec: Option<f64>) -> Schedule {
        Schedule {
            producers: 4,
            rate_per_sec,
            max_outstanding: None,
            record_size: 1024,
            stamp: Stamp::Time,
            lead_in: Duration::from_millis(50),
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            drain: Duration::from_secs(30),
            track_acks: false,
        }
    }

    #[test]
    fn the_time_line_is_lead_in_warmup_window_drain() {
        let now = Instant::now();
        let clock = Clock::starting(now, 1_000_000_000, &schedule(None));
        assert_eq!(clock.start, now + Duration::from_millis(50));
        assert_eq!(clock.start_unix_ns, 1_050_000_000);
        assert_eq!(clock.window_start, clock.start + Duration::from_secs(1));
        assert_eq!(clock.window_end, clock.window_start + Duration::from_secs(2));
        assert_eq!(clock.drain_deadline, clock.window_end + Duration::from_secs(30));
        assert_eq!(clock.phase(now), Phase::WarmUp);
        assert_eq!(clock.phase(clock.window_start), Phase::Measure);
        assert_eq!(clock.phase(clock.window_end), Phase::Drain);
        assert!(!clock.in_window(clock.start));
        assert!(clock.in_window(clock.start + Duration::from_millis(1500)));
        assert!(!clock.in_window(clock.window_end));
        assert_eq!(clock.unix_ns(clock.window_start), 2_050_000_000);
        assert!(clock.unix_ns_in_window(clock.unix_ns(clock.window_start)));
        assert!(!clock.unix_ns_in_window(clock.start_unix_ns));
        assert!(!clock.unix_ns_in_window(clock.unix_ns(clock.window_end)));
    }

    #[test]
    fn open_loop_spaces_records_evenly_and_ends_with_the_window() {
        let schedule = schedule(Some(4000.0));
        let rate = schedule.rate_per_producer().expect("open loop");
        assert_eq!(rate, 1000.0);
        let clock = Clock::starting(Instant::now(), 0, &schedule);
        // Records are due on their schedule, however late the producer is.
        assert_eq!(clock.next(0, Some(rate), clock.start), Next::At(clock.start));
        let late = clock.window_end - Duration::from_millis(1);
        assert_eq!(clock.next(1500, Some(rate), late), Next::At(clock.start + Duration::from_millis(1500)));
        // 3 s of schedule at 1000/s: records 0..3000, then done.
        assert_eq!(clock.next(2999, Some(rate), clock.start), Next::At(clock.start + Duration::from_millis(2999)));
        assert_eq!(clock.next(3000, Some(rate), clock.start), Next::Done);
        // Past the drain deadline the rest of the schedule is given up and counted.
        assert_eq!(clock.next(1000, Some(rate), clock.drain_deadline), Next::GiveUp { unsent: 2000 });
    }

    #[test]
    fn closed_loop_sends_now_until_the_window_ends() {
        let schedule = schedule(None);
        assert_eq!(schedule.rate_per_producer(), None);
        let clock = Clock::starting(Instant::now(), 0, &schedule);
        let now = clock.window_start + Duration::from_millis(10);
        assert_eq!(clock.next(12_345, None, now), Next::At(now));
        assert_eq!(clock.next(12_345, None, clock.window_end), Next::Done);
    }
}
