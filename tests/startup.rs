//! What a lockwrap run loads and maps at start-up (issue 15): properties of
//! the build that cost every run time, checked on the real binary.

mod common;

use common::Sandbox;

/// The libraries mapped into the wrapper while it runs its command: the
/// command prints its parent's (the wrapper's) /proc maps.
fn wrapper_maps(sb: &Sandbox) -> String {
    let out = sb.run(sb.lockwrap(["maps.lock", "sh", "-c", "cat /proc/$PPID/maps"]));
    out.assert_code(0);
    out.stdout
}

#[test]
fn the_dynamic_build_does_not_load_libgcc_s() {
    let sb = Sandbox::new("startup-libgcc");
    let maps = wrapper_maps(&sb);
    if !maps.contains("libc.so") && !maps.contains("libc-") {
        println!("skipped: this build is static, it loads no library at all");
        return;
    }
    if std::env::var_os("LOCKWRAP_DYNAMIC_LIBGCC").is_some() {
        println!("skipped: LOCKWRAP_DYNAMIC_LIBGCC asks for libgcc_s");
        return;
    }
    assert!(
        !maps.contains("libgcc_s"),
        "lockwrap maps libgcc_s.so (build.rs should link libgcc_eh statically):\n{maps}"
    );
}
