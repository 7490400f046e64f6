//! The config loader on any text: TOML, `${VAR}` interpolation (from a fixed table, never the
//! process environment), deserialisation and validation. It reports problems; it never panics,
//! and every problem names its key path and says what is wrong.
#![no_main]

use idenfy_gateway::fuzzing::config;
use libfuzzer_sys::fuzz_target;

/// The variables `${VAR}` may name.
const VARS: &[(&str, &str)] = &[
    ("IDENFY_API_KEY", "key"),
    ("IDENFY_API_SECRET", "secret"),
    ("ADDR", "127.0.0.1:0"),
    ("URL", "http://127.0.0.1:9"),
    ("PAYMENTS_GATEWAY_TOKEN", "t1"),
    ("ONBOARDING_GATEWAY_TOKEN", "t2"),
    ("BUSINESS_GATEWAY_TOKEN", "t3"),
    ("EMPTY", ""),
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text, VARS) {
        Ok(config) => {
            assert!(!config.accounts.is_empty(), "a valid config has an account");
            assert!(!config.teams.is_empty(), "a valid config has a team");
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without a problem");
            for e in &errors.0 {
                assert!(
                    !e.message.is_empty(),
                    "a problem without a message at {}",
                    e.path
                );
            }
        }
    }
});
