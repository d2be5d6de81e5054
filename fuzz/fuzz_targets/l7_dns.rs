//! Feeds DNS over TCP (length-prefixed queries and answers) to one L7 `Session`: an opener makes the session
//! recognize the protocol, then the input's messages follow (framing: `retrace_fuzz`). No
//! panic, bounded and printable strings in every exchange, statistics that count what was
//! returned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrace_fuzz::{openers, run_session};
use retrace_protocols::Protocol;

fuzz_target!(|data: &[u8]| {
    // The whole input as one DNS message, as the UDP stream hands them over.
    if let Some(m) = retrace_protocols::dns::parse(data) {
        assert!(
            !m.name.chars().any(char::is_control),
            "control character in {:?}",
            m.name
        );
    }
    run_session(data, openers::DNS, Some(Protocol::Dns));
});
