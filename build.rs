//! Links libgcc's unwinder statically on glibc targets, so the dynamic
//! build does not load libgcc_s.so.1 at every start.
//!
//! Rust's standard library asks for `-lgcc_s` on *-linux-gnu (its
//! unwinder, used here only to print a backtrace: the release profile
//! aborts on panic). Loading it costs every lockwrap run an extra library
//! to map and relocate and its constructor's `cpuid` probe, which traps to
//! the hypervisor on a virtual machine: about 50 µs of a 1.2 ms run
//! (BENCHMARKS.md, issue 15), when flock(1) links libc alone. Here a linker
//! script named `libgcc_s.so`, found first on the search path, stands for
//! the static `libgcc_eh.a` of the same compiler, which is what a
//! `crt-static` build links anyway.
//!
//! Nothing is done when the compiler does not know a `libgcc_eh.a` (clang
//! without gcc's runtime, for one), for static and non-glibc targets, or
//! when `LOCKWRAP_DYNAMIC_LIBGCC` is set: the build then links libgcc_s as
//! usual.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LOCKWRAP_DYNAMIC_LIBGCC");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let glibc = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let crt_static = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if !glibc || crt_static || std::env::var_os("LOCKWRAP_DYNAMIC_LIBGCC").is_some() {
        return;
    }
    // rustc links through `cc` unless a linker is configured for the target.
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    let Some(libgcc_eh) = Command::new(&linker)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        // A compiler that does not know the file prints its bare name.
        .filter(|path| path.is_absolute() && path.is_file())
    else {
        return;
    };
    let Some(path) = libgcc_eh.to_str().filter(|p| !p.contains('"')) else {
        return;
    };
    let dir = PathBuf::from(var("OUT_DIR")).join("static-libgcc");
    if std::fs::create_dir_all(&dir).is_err()
        || std::fs::write(dir.join("libgcc_s.so"), format!("INPUT(\"{path}\")\n")).is_err()
    {
        return;
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
}
