//! Compiles the eBPF programs in `bpf/` with clang (`-O2 -g -target bpf`) into `$OUT_DIR`, where
//! `src/probes.rs` embeds the object with `include_bytes!`. Needs only clang and libbpf-dev's
//! headers; either missing fails the build with the command that installs them.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const INSTALL: &str = "apt-get install clang libbpf-dev";
const SOURCES: &[&str] = &["bpf/usage.bpf.c", "bpf/usage.h"];

fn main() {
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    let multiarch = match Command::new(&clang).arg("-print-multiarch").output() {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_string(),
        Ok(output) => {
            fail(&format!("`{clang} -print-multiarch` failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
        }
        Err(error) => fail(&format!("clang not found ({clang}: {error}); it compiles the eBPF programs")),
    };
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail("libbpf-dev's headers are missing (/usr/include/bpf/bpf_helpers.h)");
    }

    let object = out.join("usage.bpf.o");
    // The kernel's uapi <linux/types.h> includes <asm/types.h>, which Debian keeps in the
    // multiarch directory; -mcpu=v3 for the atomic adds and 32-bit jumps (kernel >= 5.1).
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror"])
        .arg("-Ibpf")
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/usage.bpf.c", "-o"])
        .arg(&object)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("clang failed to compile bpf/usage.bpf.c ({status})")),
        Err(error) => fail(&format!("could not run {clang}: {error}")),
    }
}

fn fail(reason: &str) -> ! {
    eprintln!("error: {reason}\nInstall the eBPF toolchain with: {INSTALL}");
    println!("cargo:warning={reason}; install with: {INSTALL}");
    std::process::exit(1);
}
