//! Prints what the parsers make of every corpus (run with `--nocapture` to look).

mod util;

#[test]
fn dump_all() {
    let dir = util::data_path("");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("data dir")
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).expect("dir").flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rec"))
        .collect();
    files.sort();
    for f in files {
        let rel = f
            .strip_prefix(&dir)
            .expect("prefix")
            .to_string_lossy()
            .to_string();
        let msgs = util::messages(&util::load(&rel), 512);
        let (xs, infos) = util::replay_full(&msgs, retrace_protocols::Role::Client);
        println!("== {rel}");
        for (s, p, st) in infos {
            println!("  stream {s}: {p:?} {st:?}");
        }
        for (s, x) in xs {
            println!(
                "  [{s}] {} {:?} {:?} route={:?} status={:?} err={} lat={:?} req={} resp={} trunc={} trace={:?} rid={:?} host={:?}",
                x.protocol, x.method, x.target, x.route, x.status, x.error, x.latency_ns(), x.request_bytes, x.response_bytes, x.truncated, x.trace_id, x.request_id, x.host
            );
        }
    }
}
