//! Feeds the PostgreSQL frontend/backend protocol (startup, simple and extended query) to one L7 `Session`: an opener makes the session
//! recognize the protocol, then the input's messages follow (framing: `retrace_fuzz`). No
//! panic, bounded and printable strings in every exchange, statistics that count what was
//! returned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrace_fuzz::{openers, run_session};
use retrace_protocols::Protocol;

fuzz_target!(|data: &[u8]| {
    run_session(data, openers::POSTGRES, Some(Protocol::Postgres));
});
