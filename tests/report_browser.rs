//! The HTML report opened in headless Chromium (Debian package `chromium`): it renders, the
//! service map is in the DOM, there are no console errors, and a screenshot is written.
//!
//! Skipped (with a message) when `chromium` is not installed, except under
//! `RETRACE_REQUIRE_BPF=1` (CI), where that fails. `RETRACE_REPORT_SCREENSHOT=PATH`
//! copies the screenshot there (used to refresh docs/report.png).

use std::path::{Path, PathBuf};
use std::process::Command;

use retrace_analyze::synth::{write_shop_capture, ShopOptions};

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

fn run_chromium(bin: &Path, profile: &Path, extra: &[String], url: &str) -> std::process::Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium")
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(bin) = chromium() else {
        // CI (RETRACE_REQUIRE_BPF=1, as root on a machine set up by scripts/install-deps.sh)
        // must run every test against the real thing: there, a missing browser is a failure.
        assert!(
            std::env::var_os("RETRACE_REQUIRE_BPF").is_none_or(|v| v != "1"),
            "chromium is not installed but RETRACE_REQUIRE_BPF=1 requires this test to run \
             (scripts/install-deps.sh installs it)"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let cap = dir.path().join("cap");
    let evil = "/<script>alert(1)</script>\"";
    let opts = ShopOptions {
        requests: 3000,
        odd_path: Some(evil.into()),
        ..Default::default()
    };
    write_shop_capture(&cap, &opts).expect("capture");
    let out = dir.path().join("report");
    let st = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(["analyze", "--quiet"])
        .arg(&cap)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("analyze");
    assert!(st.success());
    let url = format!("file://{}", out.join("index.html").display());

    let dom = run_chromium(
        &bin,
        &dir.path().join("p1"),
        &["--dump-dom".to_string()],
        &url,
    );
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        html.contains("<svg id=\"service-map\""),
        "the map SVG is in the DOM"
    );
    assert!(html.contains("nginx:8080"), "services are named in the DOM");
    assert!(
        !html.contains("<script>alert(1)"),
        "captured markup did not become an element"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "it is shown as text"
    );
    let log = String::from_utf8_lossy(&dom.stderr);
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("ERR_FILE"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:?}");

    let shot = dir.path().join("report.png");
    let r = run_chromium(
        &bin,
        &dir.path().join("p2"),
        &[format!("--screenshot={}", shot.display())],
        &url,
    );
    let len = shot.metadata().map(|m| m.len()).unwrap_or(0);
    assert!(
        len > 20_000,
        "screenshot written ({len} bytes): {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let keep = std::env::var_os("RETRACE_REPORT_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("retrace-report.png"));
    std::fs::copy(&shot, &keep).expect("copy screenshot");
    eprintln!("screenshot: {}", keep.display());
}
