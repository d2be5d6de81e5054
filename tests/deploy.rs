//! The deployment files: the systemd unit and its ring-mode drop-in checked by systemd's own
//! `systemd-analyze verify`, the DaemonSet parsed and its fields that matter checked, every
//! `retrace capture` command line in them accepted by the binary's own argument parser, and
//! `deploy/collect.sh` choosing the segments of a window.

mod common;

use std::path::Path;
use std::process::Command;

use common::{path, root, text, RunDir};
use serde_yaml_ng::Value;

const BIN: &str = env!("CARGO_BIN_EXE_retrace");

fn tmp(tag: &str) -> RunDir {
    RunDir(
        tempfile::Builder::new()
            .prefix(&format!("retrace-deploy-{tag}-"))
            .tempdir()
            .expect("tmp")
            .keep(),
    )
}

/// `retrace ARGS --help`: clap parses (and validates) every argument before it sees `--help`,
/// so exit 0 means the command line is one the binary accepts.
fn accepted(args: &[String]) -> Result<(), String> {
    let o = Command::new(BIN)
        .args(args)
        .arg("--help")
        .output()
        .expect("run retrace");
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", text(&o)))
    }
}

/// The `ExecStart=` lines of a unit file (continuations joined), empty resets included.
fn exec_starts(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ExecStart="))
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn systemd_analyze_available() -> bool {
    let ok = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("RETRACE_REQUIRE_BPF").is_none_or(|v| v != "1"),
            "systemd-analyze is missing (scripts/install-deps.sh installs systemd)"
        );
        eprintln!("skipped: systemd-analyze is missing");
    }
    ok
}

/// `systemd-analyze verify` of the unit with its drop-in beside it (the binary's path made
/// this build's); `Ok` only when it exits 0 and says nothing (an unknown key is a warning).
fn verify(unit: &str, dropin: Option<&str>, dir: &Path) -> Result<(), String> {
    let unit_path = dir.join("retrace-capture.service");
    let d = dir.join("retrace-capture.service.d");
    let _ = std::fs::remove_dir_all(&d);
    let here = |s: &str| s.replace("/usr/local/bin/retrace", BIN);
    std::fs::write(&unit_path, here(unit)).expect("write the unit");
    if let Some(dropin) = dropin {
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("ring.conf"), here(dropin)).expect("write the drop-in");
    }
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no", path(&unit_path)])
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .output()
        .expect("run systemd-analyze");
    if o.status.success() && o.stderr.is_empty() && o.stdout.is_empty() {
        Ok(())
    } else {
        Err(text(&o))
    }
}

#[test]
fn systemd_unit_and_ring_dropin_verify() {
    if !systemd_analyze_available() {
        return;
    }
    let unit = std::fs::read_to_string(root().join("deploy/systemd/retrace-capture.service"))
        .expect("the unit");
    let dropin =
        std::fs::read_to_string(root().join("deploy/systemd/retrace-capture.service.d/ring.conf"))
            .expect("the drop-in");
    let dir = tmp("systemd");
    verify(&unit, None, &dir.0).expect("systemd-analyze verify of the unit");
    verify(&unit, Some(&dropin), &dir.0).expect("systemd-analyze verify with the drop-in");

    // The check can fail: a key systemd does not know, a command that does not exist.
    let bad = tmp("systemd-bad");
    let broken = dropin.replace("[Service]", "[Service]\nProtectEverything=yes");
    let err = verify(&unit, Some(&broken), &bad.0).expect_err("an unknown key is reported");
    assert!(err.contains("ProtectEverything"), "{err}");
    let missing = dropin.replace("/usr/local/bin/retrace", "/nonexistent/retrace");
    let err = verify(&unit, Some(&missing), &bad.0).expect_err("a missing binary is reported");
    assert!(err.contains("/nonexistent/retrace"), "{err}");

    // The drop-in resets ExecStart and sets one ring-mode command; both command lines are
    // accepted by `retrace capture`.
    let base = exec_starts(&unit);
    assert_eq!(base.len(), 1, "{base:?}");
    let ring = exec_starts(&dropin);
    assert_eq!(ring.len(), 2, "{ring:?}");
    assert_eq!(ring[0], "", "the drop-in first resets ExecStart");
    assert!(ring[1].contains("--keep") && ring[1].contains("--max-size"));
    for cmd in [&base[0], &ring[1]] {
        let args: Vec<String> = cmd
            .replace("%H", "node-1")
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect();
        assert_eq!(args[0], "capture");
        accepted(&args).expect("retrace accepts the unit's command line");
    }
    // Hardening present; the options that break BPF absent.
    for key in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectKernelModules=yes",
    ] {
        assert!(unit.lines().any(|l| l == key), "{key}");
    }
    for key in [
        "PrivateDevices=",
        "ProtectKernelTunables=",
        "PrivateNetwork=",
    ] {
        assert!(
            !unit.lines().any(|l| l.starts_with(key)),
            "{key} breaks the capture"
        );
    }
}

fn get<'a>(v: &'a Value, keys: &[&str]) -> &'a Value {
    let mut cur = v;
    for k in keys {
        cur = cur
            .get(*k)
            .unwrap_or_else(|| panic!("missing {k} in {keys:?}"));
    }
    cur
}

#[test]
fn daemonset_manifest_has_what_the_capture_needs() {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/daemonset.yaml"))
        .expect("the manifest");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let ns = docs
        .iter()
        .find(|d| d["kind"] == "Namespace")
        .expect("a Namespace");
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(
        get(ds, &["metadata", "namespace"]),
        get(ns, &["metadata", "name"])
    );
    assert_eq!(
        get(
            ns,
            &["metadata", "labels", "pod-security.kubernetes.io/enforce"]
        ),
        "privileged"
    );
    let selector = get(ds, &["spec", "selector", "matchLabels"])
        .as_mapping()
        .expect("matchLabels");
    let labels = get(ds, &["spec", "template", "metadata", "labels"]);
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "the selector matches the pods");
    }
    let pod = get(ds, &["spec", "template", "spec"]);
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    let tolerations = pod["tolerations"].as_sequence().expect("tolerations");
    assert!(tolerations
        .iter()
        .any(|t| t["operator"] == "Exists" && t.get("key").is_none()));
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(
        get(c, &["securityContext", "privileged"]).as_bool(),
        Some(true)
    );
    assert!(get(c, &["resources", "limits", "memory"]).is_string());
    assert!(get(c, &["resources", "requests", "cpu"]).is_string());
    let env = c["env"].as_sequence().expect("env");
    assert!(env.iter().any(|e| e["name"] == "NODE_NAME"
        && get(e, &["valueFrom", "fieldRef", "fieldPath"]) == "spec.nodeName"));

    // Volumes: hostPaths mounted where the capture looks.
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    let mounts = c["volumeMounts"].as_sequence().expect("volumeMounts");
    let host_path_at = |mount_path: &str| -> String {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        let v = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("no volume {:?}", m["name"]));
        get(v, &["hostPath", "path"])
            .as_str()
            .expect("a hostPath")
            .to_string()
    };
    assert_eq!(host_path_at("/sys/kernel/btf"), "/sys/kernel/btf");
    assert_eq!(host_path_at("/sys/kernel/debug"), "/sys/kernel/debug");
    assert_eq!(host_path_at("/sys/kernel/tracing"), "/sys/kernel/tracing");
    assert_eq!(host_path_at("/var/lib/retrace"), "/var/lib/retrace");

    // The command: `retrace capture` in ring mode with a hard quota, into the hostPath,
    // accepted by the binary (the node's name as Kubernetes would expand it).
    let mut args: Vec<String> = c["command"]
        .as_sequence()
        .expect("command")
        .iter()
        .chain(c["args"].as_sequence().expect("args"))
        .map(|a| {
            a.as_str()
                .expect("string")
                .replace("$(NODE_NAME)", "node-1")
        })
        .collect();
    assert_eq!(args.remove(0), "retrace");
    assert_eq!(args[0], "capture");
    let flag = |name: &str| -> String {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .to_string()
    };
    let out = flag("--out");
    assert!(out.starts_with("/var/lib/retrace/"), "{out}");
    assert_eq!(flag("--node"), "node-1");
    flag("--keep");
    flag("--max-size");
    accepted(&args).expect("retrace accepts the DaemonSet's command line");
    // The liveness probe looks at the daemon's pid file in that directory.
    let probe = get(c, &["livenessProbe", "exec", "command"])
        .as_sequence()
        .expect("probe");
    assert_eq!(
        probe.last().and_then(Value::as_str),
        Some(format!("{out}/daemon.pid").as_str())
    );
}

#[test]
fn collect_picks_the_segments_of_the_window() {
    let src = root().join("tests/fleet/capture/node-a");
    let seg = std::fs::read_dir(&src)
        .expect("committed capture")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "rseg"))
        .expect("a segment");
    let dir = tmp("collect");
    let node = dir.0.join("node-x");
    std::fs::create_dir(&node).expect("mkdir");
    // Four segments sealed at t0, t0+300 s, t0+600 s, t0+900 s.
    let t0: u64 = 1_796_000_000;
    for k in 0..4u64 {
        let p = node.join(format!("20261206T120000Z-{:06}.rseg", k + 1));
        std::fs::copy(&seg, &p).expect("copy");
        let st = Command::new("touch")
            .arg("-d")
            .arg(format!("@{}", t0 + 300 * k))
            .arg(&p)
            .status()
            .expect("touch");
        assert!(st.success());
    }
    let rfc = |s: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
            .to_string()
    };
    let run = |from: u64, to: u64, margin: u64, out: &Path| -> Vec<String> {
        let o = Command::new("bash")
            .arg(root().join("deploy/collect.sh"))
            .args(["--from", &rfc(from), "--to", &rfc(to), "--out", path(out)])
            .args(["--margin", &margin.to_string()])
            .arg("--local")
            .arg(format!("node-x={}", node.display()))
            .output()
            .expect("run collect.sh");
        assert!(o.status.success(), "{}", text(&o));
        let mut got: Vec<String> = std::fs::read_dir(out.join("node-x"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        got.sort();
        got
    };
    let seq = |ks: &[u32]| -> Vec<String> {
        ks.iter()
            .map(|k| format!("20261206T120000Z-{k:06}.rseg"))
            .collect()
    };
    // The window inside the third segment's span (t0+300 .. t0+600).
    assert_eq!(run(t0 + 350, t0 + 500, 0, &dir.0.join("a")), seq(&[3]));
    // A margin of 100 s reaches the second (sealed at t0+300) and the fourth (started at
    // t0+600).
    assert_eq!(
        run(t0 + 350, t0 + 500, 100, &dir.0.join("b")),
        seq(&[2, 3, 4])
    );
    // Before everything: only the first segment can hold it.
    assert_eq!(run(t0 - 1000, t0 - 10, 0, &dir.0.join("c")), seq(&[1]));
    // After everything: nothing.
    assert!(run(t0 + 2000, t0 + 3000, 0, &dir.0.join("d")).is_empty());
    // What was collected is a capture `retrace` reads.
    let o = Command::new(BIN)
        .args(["replay", "--stats"])
        .arg(dir.0.join("a/node-x"))
        .output()
        .expect("replay");
    assert!(o.status.success(), "{}", text(&o));
    // Bad input: exit 2 and what was expected.
    let o = Command::new("bash")
        .arg(root().join("deploy/collect.sh"))
        .args(["--from", "yesterday-ish", "--to", "now", "--out"])
        .arg(dir.0.join("e"))
        .args(["--local", "n=/nonexistent"])
        .output()
        .expect("run collect.sh");
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--from 'yesterday-ish'"), "{}", text(&o));
}
