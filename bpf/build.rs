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
    let src = manifest.join("src").join("retrace.bpf.c");
    let include = manifest.join("include").join(include_arch);
    let src_dir = manifest.join("src");
    SkeletonBuilder::new()
        .source(&src)
        // kept in OUT_DIR: lib.rs embeds it for `object()` (the static stack check reads it)
        .obj(out.join("retrace.bpf.o"))
        .clang_args([
            "-I".into(),
            include.clone().into_os_string(),
            "-I".into(),
            src_dir.into_os_string(),
            "-Wall".into(),
            target_define.into(),
        ])
        .build_and_generate(out.join("retrace.skel.rs"))
        .expect("compiling src/retrace.bpf.c (needs clang; see bpf/README or build-notes)");
    println!("cargo:rerun-if-changed=src/retrace.bpf.c");
    println!("cargo:rerun-if-changed=src/retrace.h");
    println!(
        "cargo:rerun-if-changed={}",
        include.join("vmlinux.h").display()
    );
}
