//! The YAML configuration files the analyzer reads from users: the services file
//! (`--services`), objectives (`--slo`), alert rules (`--alerts`) and findings thresholds
//! (`--findings-config`), plain or as ConfigMaps. The first byte picks the parser, the rest
//! is the file's text. A file parses or gives an error that names the file; never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use retrace_analyze::alerts::AlertRules;
use retrace_analyze::slo::SloConfig;
use retrace_analyze::{FindingsConfig, ServicesFile};

fuzz_target!(|data: &[u8]| {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let path = Path::new("fuzz-config.yaml");
    let err = match which % 4 {
        0 => ServicesFile::parse(&text, path).err(),
        1 => SloConfig::parse(&text, path).err(),
        2 => AlertRules::parse(&text, path).err(),
        _ => FindingsConfig::parse(&text, path).err(),
    };
    if let Some(e) = err {
        let msg = e.to_string();
        assert!(
            msg.contains("fuzz-config.yaml"),
            "error without the file: {msg}"
        );
    }
});
