//! The Auth0 answer parser against arbitrary bytes: it must never panic, and whatever it
//! accepts carries a non-empty secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;

fuzz_target!(|data: &[u8]| {
    if let Ok(issued) = secret_rotator::auth0::parse_rotation(data) {
        assert!(!issued.secret.expose_secret().is_empty());
    }
});
