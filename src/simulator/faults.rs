//! Faults on demand: error answers at a rate or for the next N requests, added latency, and
//! connections closed without an answer. Set at start (CLI flags) or at run time (`/__sim/faults`).
//!
//! An error answer normally replaces the request before iDenfy did anything. A share of them
//! (`after_effect`) may instead come after the endpoint ran: the session exists, billed, but the
//! caller sees the error, as when a load balancer gives up on a request iDenfy went on to serve.
//! That is the case that makes retrying a token request risky (idenfy-api.md §7).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The fault settings. Every field is optional in JSON; absent fields take the defaults (no faults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Status of injected error answers (400–599; iDenfy-like: 429, 500, 502, 503).
    #[arg(long = "fault-status", default_value_t = 503)]
    pub status: u16,
    /// Fraction (0.0–1.0) of API requests answered with `status`.
    #[arg(long = "fault-rate", default_value_t = 0.0)]
    pub rate: f64,
    /// The next N API requests are answered with `status`, whatever the rate.
    #[arg(skip)]
    pub next: u32,
    /// `Retry-After` seconds sent with injected answers; none when absent.
    #[arg(long = "fault-retry-after")]
    pub retry_after: Option<u64>,
    /// Fraction (0.0–1.0) of API requests whose connection is closed without an answer.
    #[arg(long = "drop-rate", default_value_t = 0.0)]
    pub drop_rate: f64,
    /// The next N API requests have their connection closed without an answer.
    #[arg(skip)]
    pub drop_next: u32,
    /// Milliseconds added before every API answer (and before a drop).
    #[arg(long = "latency-ms", default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction (0.0–1.0) of injected error answers given after the endpoint ran (a token request
    /// created its session; the caller sees only the error).
    #[arg(long = "fault-after-effect", default_value_t = 0.0)]
    pub after_effect: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            status: 503,
            rate: 0.0,
            next: 0,
            retry_after: None,
            drop_rate: 0.0,
            drop_next: 0,
            latency_ms: 0,
            after_effect: 0.0,
        }
    }
}

/// What happens to one API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Served normally.
    None,
    /// Answered with this status instead.
    Error {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Served (a session may be created), then answered with this status instead of the answer.
    ErrorAfterEffect {
        status: u16,
        retry_after: Option<u64>,
    },
    /// The connection is closed without an answer.
    Drop,
}

impl Faults {
    /// Faults that answer every request with `status`: iDenfy "down".
    pub fn down(status: u16) -> Self {
        Faults {
            status,
            rate: 1.0,
            ..Faults::default()
        }
    }

    /// Checks the ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(400..=599).contains(&self.status) {
            return Err("status must be from 400 to 599".to_owned());
        }
        let rates = [
            ("rate", self.rate),
            ("drop_rate", self.drop_rate),
            ("after_effect", self.after_effect),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be from 0.0 to 1.0"));
            }
        }
        Ok(())
    }

    /// The latency to add before answering.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    /// Decides one request's fate, spending one of `drop_next` or `next` first. `roll` draws from
    /// `[0, 1)`; a rate of 1.0 always hits and 0.0 never does, so tests need no luck.
    pub fn decide(&mut self, mut roll: impl FnMut() -> f64) -> Fault {
        if self.drop_next > 0 {
            self.drop_next -= 1;
            return Fault::Drop;
        }
        if self.next > 0 {
            self.next -= 1;
            return self.error(roll);
        }
        if self.drop_rate > 0.0 && roll() < self.drop_rate {
            return Fault::Drop;
        }
        if self.rate > 0.0 && roll() < self.rate {
            return self.error(roll);
        }
        Fault::None
    }

    /// An injected error answer: after the effect for a share `after_effect` of them.
    fn error(&self, mut roll: impl FnMut() -> f64) -> Fault {
        let (status, retry_after) = (self.status, self.retry_after);
        if self.after_effect > 0.0 && roll() < self.after_effect {
            Fault::ErrorAfterEffect {
                status,
                retry_after,
            }
        } else {
            Fault::Error {
                status,
                retry_after,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> f64 {
        panic!("no roll expected")
    }

    #[test]
    fn no_faults_by_default() {
        let mut faults = Faults::default();
        assert_eq!(faults.decide(never), Fault::None);
        assert!(faults.validate().is_ok());
    }

    #[test]
    fn next_n_are_spent_in_order_drops_first() {
        let mut faults = Faults {
            next: 1,
            drop_next: 1,
            retry_after: Some(2),
            ..Faults::default()
        };
        assert_eq!(faults.decide(never), Fault::Drop);
        let error = Fault::Error {
            status: 503,
            retry_after: Some(2),
        };
        assert_eq!(faults.decide(never), error);
        assert_eq!(faults.decide(never), Fault::None);
    }

    #[test]
    fn rate_one_always_hits_and_rate_compares_the_roll() {
        let mut down = Faults::down(502);
        for roll in [0.0, 0.5, 0.999] {
            assert!(matches!(
                down.decide(|| roll),
                Fault::Error { status: 502, .. }
            ));
        }
        let mut half = Faults {
            rate: 0.5,
            ..Faults::default()
        };
        assert!(matches!(half.decide(|| 0.49), Fault::Error { .. }));
        assert_eq!(half.decide(|| 0.5), Fault::None);
        let mut drops = Faults {
            drop_rate: 1.0,
            ..Faults::default()
        };
        assert_eq!(drops.decide(|| 0.999), Fault::Drop);
    }

    #[test]
    fn after_effect_shares_the_error_answers() {
        let mut late = Faults {
            next: 2,
            after_effect: 1.0,
            retry_after: Some(4),
            ..Faults::down(503)
        };
        let after = Fault::ErrorAfterEffect {
            status: 503,
            retry_after: Some(4),
        };
        assert_eq!(late.decide(|| 0.999), after, "a `next` answer");
        assert_eq!(late.decide(|| 0.999), after);
        assert_eq!(late.decide(|| 0.5), after, "an answer at the rate");
        let mut some = Faults {
            after_effect: 0.25,
            ..Faults::down(502)
        };
        assert!(matches!(
            some.decide(|| 0.25),
            Fault::Error { status: 502, .. }
        ));
        assert!(matches!(
            some.decide(|| 0.2),
            Fault::ErrorAfterEffect { status: 502, .. }
        ));
        let bad = Faults {
            after_effect: -0.1,
            ..Faults::default()
        };
        assert!(bad.validate().unwrap_err().contains("after_effect"));
    }

    #[test]
    fn after_effect_has_a_flag() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            faults: Faults,
        }
        let cli =
            Cli::try_parse_from(["sim", "--fault-rate", "0.3", "--fault-after-effect", "0.2"])
                .unwrap();
        assert_eq!((cli.faults.rate, cli.faults.after_effect), (0.3, 0.2));
        let none = Cli::try_parse_from(["sim"]).unwrap();
        assert_eq!(none.faults, Faults::default());
    }

    #[test]
    fn validate_names_the_bad_field() {
        let bad_status = Faults {
            status: 200,
            ..Faults::default()
        };
        assert!(bad_status.validate().unwrap_err().contains("status"));
        let bad_rate = Faults {
            drop_rate: 1.5,
            ..Faults::default()
        };
        assert!(bad_rate.validate().unwrap_err().contains("drop_rate"));
    }

    #[test]
    fn json_fields_are_optional() {
        let faults: Faults = serde_json::from_str(r#"{"next":3,"status":429}"#).unwrap();
        assert_eq!((faults.next, faults.status, faults.rate), (3, 429, 0.0));
        assert!(serde_json::from_str::<Faults>(r#"{"nxt":3}"#).is_err());
    }
}
