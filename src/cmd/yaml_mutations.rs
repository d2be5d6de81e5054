//! Mutation tests of the YAML the binary reads itself (the fuzz targets in `fuzz/` reach only
//! the library crates): `check`'s expectations file and `scenario.yaml` (through
//! [`super::check::parse_expectations`], which reads a scenario file's `expect:` and its
//! sections through `scenario::spec`), and `diff --fail-on` rules. Every committed scenario
//! file, mutated thousands of times (truncated, lines dropped or doubled, bytes replaced by
//! YAML's own syntax, anchors, tags, huge numbers inserted), must parse or give an error that
//! names the file, never panic. Deterministic (a seeded xorshift).

use std::path::{Path, PathBuf};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const BYTES: &[u8] = b":- \n{}[]\"'*&!#%|>,?0x\t~";
const SNIPPETS: [&str; 12] = [
    "? ",
    "<<: *a\n",
    "&a ",
    "*a",
    "!!binary ",
    "~",
    "1e999",
    "-1",
    "99999999999999999999",
    "0.5%",
    "{ min: -5, max: 1e400 }",
    "\u{0}",
];

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut b = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(5) {
            0 => b.truncate(rng.below(b.len() + 1)),
            1 | 2 => {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] = BYTES[rng.below(BYTES.len())];
                }
            }
            3 => {
                let i = rng.below(b.len() + 1);
                let s = SNIPPETS[rng.below(SNIPPETS.len())].as_bytes();
                b.splice(i..i, s.iter().copied());
            }
            _ => {
                let text = String::from_utf8_lossy(&b).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = rng.below(lines.len());
                    if rng.below(2) == 0 {
                        lines.remove(i);
                    } else {
                        lines.insert(i, lines[i]);
                    }
                }
                b = lines.join("\n").into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn scenario_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("scenarios/")
        .flatten()
        .map(|e| e.path().join("scenario.yaml"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn mutated_scenario_and_expectation_files_never_panic() {
    let files = scenario_files();
    assert!(files.len() >= 4, "{files:?}");
    let mut rng = Rng(0x5eed_f00d);
    let (mut ok, mut errors) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        // The file as committed is valid.
        super::check::parse_expectations(f, &text).expect("a committed scenario parses");
        for _ in 0..400 {
            let m = mutate(&text, &mut rng);
            let name = Path::new("mutated/scenario.yaml");
            match super::check::parse_expectations(name, &m) {
                Ok(_) => ok += 1,
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains("mutated/scenario.yaml"), "no file in {msg:?}");
                    errors += 1;
                }
            }
        }
    }
    eprintln!("{} mutations: {ok} parsed, {errors} errors", ok + errors);
    assert!(errors > 0 && ok > 0, "the mutations reach both outcomes");
}

#[test]
fn mutated_fail_on_rules_never_panic() {
    let mut rng = Rng(42);
    let base = "p99 > +20%, errors > +0.5pp, new-edge, p50 > +5ms, requests < -10";
    for _ in 0..5000 {
        let m = mutate(base, &mut rng);
        if let Err(e) = super::diff::parse_rules(&m) {
            assert!(!e.to_string().is_empty());
        }
    }
}
