//! Building the workspace's guest crates from source, for the demo and the tests.
//! (No `.wasm` is checked in: every component is built from its Rust source.)
//!
//! A fresh machine has rustup and a Rust toolchain but not the `wasm32-wasip2`
//! target: rustup does not add the targets of `rust-toolchain.toml` to a toolchain
//! that is already installed. So building a guest first makes sure the target is
//! there, and adds it (one line on stderr) when it is not.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use anyhow::{Context as _, bail};

/// The target guests are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The workspace root, as seen when this crate was compiled.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ is inside the workspace").to_path_buf()
}

/// Where guests are built: `guests/` under the workspace's target directory
/// (`CARGO_TARGET_DIR` when set), apart from native builds so that neither waits
/// for the other's lock.
fn guest_target_dir(root: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("guests")
}

/// Builds the guest crate `package` for `wasm32-wasip2` (profile `guest`) and
/// returns the component's path. Adds the target first if it is missing.
pub fn build_guest(package: &str) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    ensure_wasm_target(&root)?;
    let target_dir = guest_target_dir(&root);
    // `cargo run` and `cargo test` tell their children which cargo they are.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "--profile", "guest", "--target", WASM_TARGET, "-p", package, "--target-dir"])
        .arg(&target_dir)
        .status()
        .map_err(|error| missing_tool(error, "cargo", "build guests"))
        .with_context(|| format!("failed to build guest {package}"))?;
    if !status.success() {
        bail!("building guest {package} for {WASM_TARGET} failed ({status}); cargo's errors are above");
    }
    let path = target_dir.join(WASM_TARGET).join("guest").join(format!("{}.wasm", package.replace('-', "_")));
    if !path.exists() {
        bail!("guest {package} built, but {} is missing", path.display());
    }
    Ok(path)
}

/// Makes sure the toolchain that builds in `root` (the one `rust-toolchain.toml`
/// pins, or `RUSTUP_TOOLCHAIN`) has the wasm target, adding it with rustup if not.
/// Once per process; concurrent callers wait for the first.
pub fn ensure_wasm_target(root: &Path) -> anyhow::Result<()> {
    static READY: Mutex<bool> = Mutex::new(false);
    let mut ready = READY.lock().unwrap_or_else(|p| p.into_inner());
    if *ready {
        return Ok(());
    }
    if !wasm_target_installed(root)? {
        eprintln!(
            "the {WASM_TARGET} target is missing: adding it (rustup target add {WASM_TARGET}), once per toolchain"
        );
        let output = match Command::new("rustup").current_dir(root).args(["target", "add", WASM_TARGET]).output() {
            Ok(output) => output,
            Err(error) if error.kind() == ErrorKind::NotFound => bail!(
                "the {WASM_TARGET} target is not installed for this Rust toolchain, and `rustup` is not on PATH to \
                 add it: add the target the way this Rust was installed, or install Rust with rustup (https://rustup.rs)"
            ),
            Err(error) => {
                return Err(
                    anyhow::Error::new(error).context(format!("failed to run `rustup target add {WASM_TARGET}`"))
                );
            }
        };
        if !output.status.success() {
            bail!(
                "`rustup target add {WASM_TARGET}` failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            );
        }
        if !wasm_target_installed(root)? {
            bail!("`rustup target add {WASM_TARGET}` succeeded, but the toolchain still has no {WASM_TARGET} library");
        }
    }
    *ready = true;
    Ok(())
}

/// Whether the `rustc` that cargo will use in `root` has the wasm target's
/// standard library (its target libdir exists even before anything is built).
fn wasm_target_installed(root: &Path) -> anyhow::Result<bool> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output: Output = Command::new(&rustc)
        .current_dir(root)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .map_err(|error| missing_tool(error, "rustc", "build guests"))?;
    if !output.status.success() {
        bail!(
            "`rustc --print target-libdir --target {WASM_TARGET}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_std = std::fs::read_dir(&libdir)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        .unwrap_or(false);
    Ok(has_std)
}

/// A tool that could not be started: say which, and how to get it.
fn missing_tool(error: std::io::Error, tool: &str, purpose: &str) -> anyhow::Error {
    if error.kind() == ErrorKind::NotFound {
        anyhow::anyhow!(
            "`{tool}` is not on PATH, and it is needed to {purpose}: install Rust with rustup \
             (https://rustup.rs), then open a new shell (or add ~/.cargo/bin to PATH)"
        )
    } else {
        anyhow::Error::new(error).context(format!("failed to run `{tool}` to {purpose}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_says_which_and_how_to_get_it() {
        let error = missing_tool(std::io::Error::from(ErrorKind::NotFound), "rustup", "add the wasm32-wasip2 target");
        let text = format!("{error:#}");
        assert!(text.contains("`rustup` is not on PATH"), "{text}");
        assert!(text.contains("https://rustup.rs"), "{text}");
    }
}
