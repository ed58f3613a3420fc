//! Logging failures without flooding the log: a source that stays offline for days is retried
//! every few minutes, and a warning at every retry buries everything else.
//!
//! Each object's failures are logged when its state changes (the first failure, or a failure
//! with another message than the last one), then again as the same failure keeps repeating, at
//! the 2nd, 4th, 8th, ... consecutive occurrence (each line says how many), and from the 64th
//! on every 64th: with a 10-minute retryInterval that is about twice a day. The first success
//! after failures is logged once, with how many there were. The status API and the metrics
//! still show every attempt; this only decides what reaches the log.

use std::collections::HashMap;

/// Failures repeat at most this many times between two log lines.
const MAX_GAP: u32 = 64;

/// What to say about an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Say {
    Nothing,
    /// A new failure (the first, or another message than before).
    Failed,
    /// The same failure, `streak` times in a row now.
    StillFailing {
        streak: u32,
    },
    /// A success after `after` consecutive failures.
    Recovered {
        after: u32,
    },
}

#[derive(Debug)]
struct Streak {
    message: String,
    /// Consecutive failures with any message.
    count: u32,
    /// Consecutive failures with this message.
    same: u32,
    /// The `same` count at which to log next.
    next: u32,
}

/// Failure streaks by object (a loop's source and kustomizations).
#[derive(Debug, Default)]
pub struct FailureLog {
    streaks: HashMap<String, Streak>,
}

impl FailureLog {
    pub fn failed(&mut self, key: &str, message: &str) -> Say {
        match self.streaks.get_mut(key) {
            Some(s) if s.message == message => {
                s.count = s.count.saturating_add(1);
                s.same = s.same.saturating_add(1);
                if s.same < s.next {
                    return Say::Nothing;
                }
                s.next = if s.next < MAX_GAP {
                    s.next * 2
                } else {
                    s.next.saturating_add(MAX_GAP)
                };
                Say::StillFailing { streak: s.same }
            }
            previous => {
                let count = previous.map_or(1, |s| s.count.saturating_add(1));
                self.streaks.insert(
                    key.to_string(),
                    Streak {
                        message: message.to_string(),
                        count,
                        same: 1,
                        next: 2,
                    },
                );
                Say::Failed
            }
        }
    }

    pub fn succeeded(&mut self, key: &str) -> Say {
        match self.streaks.remove(key) {
            Some(s) => Say::Recovered { after: s.count },
            None => Say::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_failure_is_logged_at_a_slowing_rate_and_a_change_at_once() {
        let mut log = FailureLog::default();
        let said: Vec<u32> = (1..=200)
            .filter_map(|n| match log.failed("s", "offline") {
                Say::Failed => Some(1),
                Say::StillFailing { streak } => {
                    assert_eq!(streak, n);
                    Some(streak)
                }
                _ => None,
            })
            .collect();
        assert_eq!(said, [1, 2, 4, 8, 16, 32, 64, 128, 192]);
        assert_eq!(log.failed("s", "authentication failed"), Say::Failed);
        assert_eq!(
            log.failed("s", "authentication failed"),
            Say::StillFailing { streak: 2 }
        );
        assert_eq!(log.succeeded("s"), Say::Recovered { after: 202 });
        assert_eq!(log.succeeded("s"), Say::Nothing);
        assert_eq!(log.failed("s", "offline"), Say::Failed);
    }
}
