//! Filter expressions of `retrace replay` (`retrace_replay::Filter`) from arbitrary text: an
//! expression parses or gives an error whose column lies within the text (or just after
//! it), never a panic or a stack overflow; a parsed filter keeps its text and reparses to
//! the same filter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrace_replay::Filter;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Filter::parse(&text) {
        Ok(f) => {
            assert_eq!(f.as_str(), text);
            let _ = f.kinds();
            assert_eq!(Filter::parse(&f.to_string()).as_ref(), Ok(&f));
        }
        Err(e) => {
            let chars = text.chars().count();
            assert!(
                (1..=chars + 1).contains(&e.column),
                "column {} for {chars} characters: {e}",
                e.column
            );
        }
    }
});
