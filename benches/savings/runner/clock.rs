//! The time scale of a run. Waiting in real time for iDenfy's guide (`2^attempt` second sleeps),
//! a 60 s outage and the gateway's 30 s deadline would make a run last an hour, so every duration
//! of a run is given in simulated time and divided by [`SPEED`] before it is slept or configured:
//! the app's retry sleeps and click offsets, when faults start and stop, the simulator's latency,
//! `Retry-After`, and every duration and rate of the gateway's config. Measured times are
//! multiplied back. What does not scale is listed in `docs/savings.md`.

use std::time::Duration;

/// Simulated seconds per real second.
pub const SPEED: u32 = 20;

/// The real duration of a simulated one.
pub fn real(simulated: Duration) -> Duration {
    simulated / SPEED
}

/// The simulated duration of a real one (a measurement).
pub fn simulated(real: Duration) -> Duration {
    real * SPEED
}

/// Simulated whole seconds.
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A simulated duration as a gateway config value, in real milliseconds (`"1500ms"`).
pub fn config(simulated: Duration) -> String {
    format!("{}ms", real(simulated).as_millis())
}

/// A simulated `Retry-After` as the whole real seconds the header carries; it must scale to a
/// whole number (`Retry-After` has no fractions).
pub fn retry_after_header(simulated: Duration) -> u64 {
    let real = real(simulated);
    assert!(
        real.subsec_nanos() == 0 && real.as_secs() > 0,
        "Retry-After {simulated:?} does not scale to whole seconds"
    );
    real.as_secs()
}
