//! Every captured string is hostile: a capture (built with `synth`, no root needed) whose
//! paths, HTTP targets and headers, SQL, Redis keys, log lines, process names, command lines,
//! DNS names and services-file names carry HTML, CSV and JSON breakers, terminal control
//! characters and spreadsheet formulas, then every output read by something that is not
//! retrace:
//! - `index.html` parsed by Python's `html.parser` (no injected element or attribute, every
//!   hostile marker shown as text) and loaded in headless Chromium (`--dump-dom`: the
//!   injected scripts did not run);
//! - every CSV parsed by Python's `csv` module (same number of columns in every row, no cell a
//!   spreadsheet would take for a formula);
//! - `summary.json` and the OTLP export parsed as JSON, the hostile strings found intact;
//! - `retrace replay`'s text output: no control character reaches the terminal.
//!
//! The checks on the files are in `tests/hostile/check_outputs.py` (Debian's python3, the
//! standard library only); this file builds the capture, runs retrace and asserts on its
//! figures.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{path, retrace, root, text};
use retrace_analyze::synth::{synth_node, Synth};
use retrace_segment::{CaptureOptions, CaptureWriter, Event, EventBody, LogWrite};

/// What a script injected into the report would do if it ran (never seen as an attribute in
/// the DOM unless it did).
const PWNED: &str = "data-pwned";

/// Hostile strings, each with a marker (`HX1`...) that the checks look for.
fn html_payloads() -> Vec<String> {
    vec![
        format!("HX1<script>document.body.setAttribute('{PWNED}','1')</script>"),
        format!("HX2\"><img src=x onerror=\"document.body.setAttribute('{PWNED}','2')\">"),
        "HX3'><svg onload=alert(3)>".to_string(),
    ]
}

/// Cells that spreadsheets take for formulas, and CSV/JSON breakers.
const FORMULAS: [&str; 6] = [
    "=cmd|' /C calc'!A0",
    "+SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
];
const BREAKERS: &str = "a,b\"c\nd\"},{\"x\":\"\\u0000";
/// Terminal control sequences: set the window title, clear the screen, ring, carriage return,
/// NUL.
const TERMINAL: &str = "\x1b]0;TITLE\x07\x1b[2J\x1b[31mRED\r\x00END";

fn http_request(target: &str, header: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: shop\r\nX-Request-ID: {header}\r\nUser-Agent: {header}\r\n\r\n"
    )
    .into_bytes()
}

/// A PostgreSQL simple query message.
fn pg_query(sql: &str) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend_from_slice(&(4 + sql.len() as u32 + 1).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

fn redis_get(key: &str) -> Vec<u8> {
    format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes()
}

/// Writes the hostile capture into `dir`.
fn write_capture(dir: &Path) {
    let html = html_payloads();
    let mut s = Synth::new(Vec::new());
    let ms = 1_000_000u64;
    let mut t = 1_000_000 * ms;
    // Processes: the load generator's exe, comm and arguments are hostile.
    let client_exe = format!("/opt/{}/{}", html[0].replace('/', "|"), FORMULAS[0]);
    let args: Vec<String> = [html[1].as_str(), FORMULAS[1], BREAKERS, TERMINAL]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let argv: Vec<&str> = std::iter::once(client_exe.as_str())
        .chain(args.iter().map(String::as_str))
        .collect();
    s.exec(t, 100, 1, &client_exe, &argv);
    s.fork(t + ms, 100, 101, &format!("{}{TERMINAL}", FORMULAS[2]));
    s.exec(
        t,
        200,
        1,
        "/usr/sbin/nginx",
        &["nginx", "-g", "daemon off;"],
    );
    s.exec(
        t,
        300,
        1,
        "/usr/bin/python3.11",
        &["python3", "/srv/app.py"],
    );
    s.exec(t, 400, 1, "/usr/bin/redis-server", &["redis-server"]);
    s.exec(
        t,
        500,
        1,
        "/usr/lib/postgresql/15/bin/postgres",
        &["postgres"],
    );
    s.listen(t, 200, 8080);
    s.listen(t, 300, 9000);
    s.listen(t, 400, 6379);
    s.listen(t, 500, 5432);
    t += 10 * ms;

    // HTTP: hostile targets (httparse takes `<`, `>`, `"`, `'`, `|`, `!` in a target) and
    // header values (trace ids, user agent).
    let targets = [
        format!("/{}", html[0].replace(' ', "%20")),
        format!("/{}", html[1].replace(' ', "")),
        format!("/x?q={}", html[2].replace(' ', "")),
        format!("/{}", FORMULAS[0].replace(' ', "")),
        "/a,b\"c".to_string(),
    ];
    for (i, target) in targets.iter().enumerate() {
        let c = s.connect(t, 101, 200, 8080);
        let header =
            format!("{}{}", html[i % 3], FORMULAS[i % FORMULAS.len()]).replace(['\r', '\n'], " ");
        s.exchange(
            &c,
            t + ms,
            &http_request(target, &header),
            0,
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
            0,
            2 * ms,
        );
        // nginx passes it on to the Python backend.
        let up = s.connect(t + 2 * ms, 200, 300, 9000);
        s.exchange(
            &up,
            t + 2 * ms + 100_000,
            &http_request(target, &header),
            0,
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
            0,
            ms,
        );
        s.close(&up, t + 5 * ms, 100, 60);
        s.close(&c, t + 6 * ms, 100, 60);
        t += 20 * ms;
    }
    // SQL and Redis keys from the backend.
    let db = s.connect(t, 300, 500, 5432);
    let rd = s.connect(t, 300, 400, 6379);
    for (i, sql) in [
        format!("SELECT '{}' FROM \"{}\"", html[0], BREAKERS),
        format!("SELECT 1 -- {}{}", FORMULAS[3], TERMINAL),
        FORMULAS[0].to_string(),
    ]
    .iter()
    .enumerate()
    {
        s.exchange(
            &db,
            t + ms,
            &pg_query(sql),
            0,
            b"C\x00\x00\x00\x0dSELECT 1\x00Z\x00\x00\x00\x05I",
            0,
            ms,
        );
        let key = format!("{}{}", html[i % 3], FORMULAS[(i + 4) % FORMULAS.len()]);
        s.exchange(&rd, t + 3 * ms, &redis_get(&key), 0, b"$-1\r\n", 0, ms / 2);
        t += 10 * ms;
    }
    // DNS names: labels with markup, quotes, commas and control characters.
    s.dns(
        t,
        300,
        &format!("{}.{}.example", html[2].replace('.', ""), "=1+1,\"x\x1b[2J"),
        Ipv4Addr::new(10, 0, 0, 9),
    );
    t += ms;
    let events = s.finish();

    let opts = CaptureOptions {
        dir: dir.to_path_buf(),
        node: synth_node(&format!(
            "node-{}",
            FORMULAS[0].replace(['|', ' ', '\'', '!'], "")
        )),
        streams: vec![
            "tcp".into(),
            "l7".into(),
            "proc".into(),
            "dns".into(),
            "log".into(),
        ],
        ..Default::default()
    };
    let mut w = CaptureWriter::create(opts, Default::default()).expect("capture writer");
    for ev in events {
        w.append(ev).expect("append");
    }
    // Log lines of the backend: markup, formulas and terminal escapes, to a hostile path.
    for (i, line) in [html[0].as_str(), FORMULAS[0], TERMINAL, BREAKERS]
        .iter()
        .enumerate()
    {
        let payload = format!("{line}\n").into_bytes();
        w.append(Event::new(
            t + i as u64 * ms,
            EventBody::Log(LogWrite {
                pid: 300,
                tid: 300,
                fd: 5,
                path: format!("/var/log/{}{}.log", html[1].replace('/', "|"), FORMULAS[2]),
                size: payload.len() as u64,
                payload,
            }),
        ))
        .expect("append log");
    }
    w.close().expect("close capture");
}

/// Hostile service names (given in the services file).
fn service_names() -> [String; 2] {
    [
        format!("{}{}", html_payloads()[0], FORMULAS[0]),
        format!("{}{}", FORMULAS[3], BREAKERS.replace('\n', " ")),
    ]
}

/// The services file: hostile service names.
fn write_services(dir: &Path) -> PathBuf {
    let p = dir.join("services.yaml");
    let quote = |s: &str| serde_json::to_string(s).expect("json string");
    let [api, redis] = service_names();
    let text = format!(
        "services:\n  - name: {}\n    cmdline: 'app\\.py'\n  - name: {}\n    exe: 'redis-server'\n",
        quote(&api),
        quote(&redis),
    );
    std::fs::write(&p, text).expect("services file");
    p
}

fn python() -> &'static str {
    "/usr/bin/python3"
}

#[test]
fn hostile_strings_stay_inert_in_every_output() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cap = tmp.path().join("cap");
    write_capture(&cap);
    let services = write_services(tmp.path());
    let out = tmp.path().join("report");
    let o = retrace(&[
        "analyze",
        "--quiet",
        path(&cap),
        "--services",
        path(&services),
        "--out",
        path(&out),
    ]);
    assert!(o.status.success(), "analyze: {}", text(&o));
    let otlp = tmp.path().join("otlp.json");
    let o = retrace(&[
        "export",
        "otlp",
        "--quiet",
        path(&cap),
        "--services",
        path(&services),
        "--out",
        path(&otlp),
    ]);
    assert!(o.status.success(), "export: {}", text(&o));

    // The files, read by Python's own parsers.
    let markers: Vec<&str> = vec!["HX1", "HX2", "HX3"];
    let mut exact = Vec::new();
    for name in service_names() {
        exact.push("--exact".to_string());
        exact.push(name);
    }
    let o = Command::new(python())
        .arg(root().join("tests/hostile/check_outputs.py"))
        .arg(&out)
        .arg(&otlp)
        .args(&exact)
        .args(&markers)
        .output()
        .expect("run python3");
    let report = text(&o);
    eprintln!("{report}");
    assert!(
        o.status.success(),
        "the outputs failed the checks:\n{report}"
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("the checker prints JSON figures");
    // Every kind of output was actually checked, with hostile content in it.
    for (what, min) in [
        ("html_hostile_texts", 3),
        ("csv_files", 8),
        ("csv_formula_cells_neutralised", 1),
        ("json_hostile_strings", 1),
        ("otlp_hostile_strings", 1),
        ("json_hostile_strings_exact", 2),
        ("otlp_hostile_strings_exact", 2),
        ("csv_exact", 2),
    ] {
        let n = figures[what].as_u64().unwrap_or(0);
        assert!(n >= min, "{what}: {n} < {min}: {figures}");
    }

    // The report in a real browser: the page loads, no injected script ran.
    if let Some(dom) = chromium_dom(&out.join("index.html"), tmp.path()) {
        assert!(
            dom.contains("<svg id=\"service-map\""),
            "the report rendered"
        );
        assert!(
            !dom.contains(&format!("{PWNED}=\"")),
            "an injected script ran in the browser"
        );
        for m in &markers {
            assert!(dom.contains(m), "{m} is shown as text in the page");
        }
    }

    // `retrace replay`: text, CSV and JSON Lines, no raw control character on the terminal.
    for format in ["text", "csv", "jsonl"] {
        let o = retrace(&["replay", path(&cap), "-o", format, "--payload-bytes", "256"]);
        assert!(o.status.success(), "replay -o {format}: {}", text(&o));
        let bad: Vec<(usize, u8)> = o
            .stdout
            .iter()
            .enumerate()
            .filter(|(_, &b)| (b < 0x20 && b != b'\n') || b == 0x7f)
            .map(|(i, &b)| (i, b))
            .take(5)
            .collect();
        assert!(
            bad.is_empty(),
            "replay -o {format} wrote control bytes {bad:?}:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("HX1"),
            "replay -o {format} shows the hostile strings"
        );
        if format == "jsonl" {
            for line in out.lines() {
                serde_json::from_str::<serde_json::Value>(line).expect("a JSON line");
            }
        }
    }
}

fn chromium_dom(html: &Path, tmp: &Path) -> Option<String> {
    let bin = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    let Some(bin) = bin else {
        assert!(
            std::env::var_os("RETRACE_REQUIRE_BPF").is_none_or(|v| v != "1"),
            "chromium is not installed but RETRACE_REQUIRE_BPF=1 requires this test to run"
        );
        eprintln!("chromium not installed: the browser check is skipped");
        return None;
    };
    let o = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            tmp.join("chromium").display()
        ))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}
