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
    // The Python backends get a hostile name too (it reaches the traces' waterfalls, the
    // time breakdown and the map).
    let services = dir.path().join("services.yaml");
    std::fs::write(
        &services,
        "services:\n  - name: '<script>alert(2)</script>\"''b'\n    cmdline: 'app\\.py'\n",
    )
    .expect("services file");
    let out = dir.path().join("report");
    let st = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(["analyze", "--quiet"])
        .arg(&cap)
        .arg("--services")
        .arg(&services)
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
    assert!(!html.contains("<script>alert(2)"), "nor the service's");
    let traces = html
        .find("<section id=\"traces\">")
        .expect("traces section");
    assert!(
        html[traces..].contains("&lt;script&gt;alert(2)&lt;/script&gt;\"'b</div>"),
        "the hostile service names a waterfall row, as text"
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

/// `retrace analyze` of a bundled scenario capture (with the scenarios' services file) into
/// `out`.
fn analyze_scenario(name: &str, out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let st = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(["analyze", "--quiet"])
        .arg(root.join(name).join("capture"))
        .arg("--services")
        .arg(root.join("common/services.yaml"))
        .arg("--out")
        .arg(out)
        .status()
        .expect("analyze");
    assert!(st.success(), "analyze {name}");
}

/// Values of `attr="prefix…"` in `html`, in document order.
fn attr_values(html: &str, attr: &str, prefix: &str) -> Vec<String> {
    let pat = format!("{attr}=\"{prefix}");
    html.match_indices(&pat)
        .filter_map(|(i, _)| {
            let rest = &html[i + pat.len()..];
            rest.find('"').map(|e| rest[..e].to_string())
        })
        .collect()
}

fn console_errors(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("ERR_FILE"))
        .map(str::to_string)
        .collect()
}

/// The traces section of real scenario captures: the slowest traces of `checkout` and the
/// failed ones of `api-down` render as waterfalls (one row per span, the first of each list
/// open), a link into a closed waterfall opens it (no script: `<details>` open on fragment
/// navigation), and a screenshot of the section is written.
#[test]
fn trace_waterfalls_render_in_headless_chromium() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var_os("RETRACE_REQUIRE_BPF").is_none_or(|v| v != "1"),
            "chromium is not installed but RETRACE_REQUIRE_BPF=1 requires this test to run"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install -y chromium)");
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");

    // checkout: 22-span traces, nginx -> api -> users, redis, postgres.
    let out = dir.path().join("checkout");
    analyze_scenario("checkout", &out);
    let url = format!("file://{}", out.join("index.html").display());
    let dom = run_chromium(&bin, &dir.path().join("p1"), &["--dump-dom".into()], &url);
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(html.contains("<section id=\"traces\">"), "the section");
    let traces = attr_values(&html, "id", "trace-");
    let waterfalls: Vec<&String> = traces.iter().filter(|t| t.len() == 32).collect();
    assert_eq!(
        waterfalls.len(),
        10,
        "the 10 slowest (no failed traces here)"
    );
    let spans = attr_values(&html, "id", "span-");
    assert!(spans.len() >= 10 * 20, "one row per span: {}", spans.len());
    assert!(html.contains("wf-bar client") && html.contains("wf-bar server"));
    assert!(
        !html.contains("wf-bar client err"),
        "checkout has no failures"
    );
    for svc in ["nginx", "api", "users", "redis", "postgres"] {
        assert!(
            html.contains(&format!("</span>{svc}</div>")),
            "{svc} has a waterfall row"
        );
    }
    assert!(html.contains("SELECT price FROM products WHERE id = ?"));
    assert!(html.contains("id=\"time-breakdown\"") && html.contains("class=\"tb-bar\""));
    assert!(html.contains("id=\"trace-coverage\""));
    let console = console_errors(&dom.stderr);
    assert!(console.is_empty(), "console messages: {console:?}");

    // A link to a request (the requests table is closed when loaded): the browser opens the
    // <details> holding it.
    let req = attr_values(&html, "id", "req-")
        .pop()
        .expect("a request row");
    let last = waterfalls.last().expect("a waterfall");
    let closed = format!("<details class=\"trace\" id=\"trace-{last}\">");
    assert!(html.contains(&closed), "closed when loaded");
    let dom = run_chromium(
        &bin,
        &dir.path().join("p2"),
        &["--dump-dom".into()],
        &format!("{url}#req-{req}"),
    );
    let opened = String::from_utf8_lossy(&dom.stdout);
    assert!(
        opened.contains("<details id=\"trace-requests\" open=\"\">"),
        "the requests table opened"
    );
    let console = console_errors(&dom.stderr);
    assert!(console.is_empty(), "console messages: {console:?}");
    // And a link to a row of the last waterfall opens that waterfall.
    let row = attr_values(&html[html.find(&closed).expect("last")..], "id", "span-")
        .first()
        .cloned()
        .expect("a row of the last waterfall");
    let dom = run_chromium(
        &bin,
        &dir.path().join("p5"),
        &["--dump-dom".into()],
        &format!("{url}#span-{row}"),
    );
    let opened = String::from_utf8_lossy(&dom.stdout);
    assert!(
        opened.contains(&format!(
            "<details class=\"trace\" id=\"trace-{last}\" open=\"\">"
        )),
        "the waterfall opened"
    );

    // api-down: failed traces, red and open-ended (no response, refused).
    let out = dir.path().join("api-down");
    analyze_scenario("api-down", &out);
    let url = format!("file://{}", out.join("index.html").display());
    let dom = run_chromium(&bin, &dir.path().join("p3"), &["--dump-dom".into()], &url);
    let html = String::from_utf8_lossy(&dom.stdout);
    let failed = html.find("id=\"failed-traces\"").expect("failed traces");
    let part = &html[failed..];
    assert!(
        part.matches("<details class=\"trace\"").count() >= 5,
        "failed traces shown"
    );
    assert!(part.contains("wf-bar client err open"), "unanswered calls");
    assert!(part.contains("ECONNREFUSED"));
    assert!(part.contains("failed at <a href=\"#span-"));

    // A screenshot of the section alone (the page's head, then the section).
    let head_end = html.find("<main>").expect("main") + "<main>".len();
    let start = html.find("<section id=\"traces\">").expect("section");
    let end = start + html[start..].find("</section>").expect("end") + "</section>".len();
    let page = dir.path().join("traces.html");
    std::fs::write(
        &page,
        format!(
            "{}{}</main></body></html>",
            &html[..head_end],
            &html[start..end]
        ),
    )
    .expect("write");
    let shot = dir.path().join("traces.png");
    let r = run_chromium(
        &bin,
        &dir.path().join("p4"),
        &[format!("--screenshot={}", shot.display())],
        &format!("file://{}", page.display()),
    );
    let len = shot.metadata().map(|m| m.len()).unwrap_or(0);
    assert!(
        len > 100_000,
        "screenshot written ({len} bytes): {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let keep = std::env::var_os("RETRACE_TRACES_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("retrace-traces.png"));
    std::fs::copy(&shot, &keep).expect("copy screenshot");
    eprintln!("screenshot: {}", keep.display());
}
