//! Compiles src/retrace.bpf.c with clang and generates its Rust skeleton (libbpf-cargo).
//! vmlinux.h comes from include/<arch>/ (committed, see gen-vmlinux.sh), never from this host.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("set by cargo");
    let (include_arch, target_define) = match arch.as_str() {
        "x86_64" => ("x86_64", "-D__TARGET_ARCH_x86"),
        other => {
            panic!("retrace-bpf: no vmlinux.h committed for {other} (run gen-vmlinux.sh there)")
        }
    };
    let include = manifest.join("include").join(include_arch);
    let src_dir = manifest.join("src");
    // Two objects: the capture's programs, and the profiler's (loaded only when a profile
    // stream is on).
    for name in ["retrace", "profile"] {
        let src = src_dir.join(format!("{name}.bpf.c"));
        SkeletonBuilder::new()
            .source(&src)
            // kept in OUT_DIR: lib.rs embeds it for `object()` (the static stack check reads it)
            .obj(out.join(format!("{name}.bpf.o")))
            .clang_args([
                "-I".into(),
                include.clone().into_os_string(),
                "-I".into(),
                src_dir.clone().into_os_string(),
                "-Wall".into(),
                target_define.into(),
            ])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| {
                panic!("compiling src/{name}.bpf.c (needs clang; see build-notes): {e}")
            });
    }
    println!("cargo:rerun-if-changed=src/retrace.bpf.c");
    println!("cargo:rerun-if-changed=src/retrace.h");
    println!("cargo:rerun-if-changed=src/profile.bpf.c");
    println!("cargo:rerun-if-changed=src/profile.h");
    println!("cargo:rerun-if-changed=src/exp_table.h");
    println!(
        "cargo:rerun-if-changed={}",
        include.join("vmlinux.h").display()
    );
}
