//! Records the compiler version for `--version` and `/_status` (the reference reports its Go
//! toolchain the same way), and packs the release binary's relative relocations when the build
//! machine's glibc can load them.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=GHOSTUNNEL_TOOLCHAIN=rustc{version}");
    println!("cargo:rerun-if-env-changed=RUSTC");

    // DT_RELR (`-z pack-relative-relocs`) stores the ~5,700 relative relocations of a PIE in
    // 1.5 KB instead of 135 KB, which keeps the release binary under 4 MiB. The loader must know
    // it: glibc 2.36 or later (the binary then needs the GLIBC_ABI_DT_RELR version), so the flag
    // is only passed for native release builds on such a glibc, where the binary would need that
    // glibc's symbols anyway. rust-lld (the default linker since Rust 1.90) and GNU ld 2.38+
    // understand it. GHOSTUNNEL_NO_RELR=1 turns it off, e.g. to build on Debian 12 for an older
    // distribution.
    println!("cargo:rerun-if-env-changed=GHOSTUNNEL_NO_RELR");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu");
    let opted_out = std::env::var_os("GHOSTUNNEL_NO_RELR").is_some_and(|v| v != "0");
    if release && native && gnu && !opted_out && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The build machine's glibc version, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Some(out) = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .filter(|o| o.status.success())
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .trim()
        .trim_start_matches("glibc ")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
