//! Protocol detection and whatever parser it picks, from arbitrary messages with no opener:
//! the input's first message is what `detect` sees (as a request, or as a response when the
//! session follows the server side and it was written by it). Same checks as the protocol
//! targets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrace_fuzz::run_session;

fuzz_target!(|data: &[u8]| {
    let _ = retrace_protocols::detect(data);
    run_session(data, &[], None);
});
