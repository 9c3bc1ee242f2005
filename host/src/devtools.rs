//! Building the workspace's guest crates from source, for the demo and the tests.
//! (No `.wasm` is checked in: every component is built from its Rust source.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The workspace root, as seen when this crate was compiled.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ is inside the workspace").to_path_buf()
}

/// Builds the guest crate `package` for `wasm32-wasip2` (profile `guest`, target
/// dir `target/guests`) and returns the component's path.
pub fn build_guest(package: &str) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "--profile", "guest", "--target", "wasm32-wasip2", "-p", package, "--target-dir"])
        .arg(&target_dir)
        .status()
        .with_context(|| format!("failed to run cargo to build guest {package}"))?;
    if !status.success() {
        bail!(
            "building guest {package} failed ({status}); is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)"
        );
    }
    let path = target_dir.join("wasm32-wasip2").join("guest").join(format!("{}.wasm", package.replace('-', "_")));
    if !path.exists() {
        bail!("guest {package} built, but {} is missing", path.display());
    }
    Ok(path)
}

/// Makes sure the Rust toolchain that cargo uses in `dir` (its `rust-toolchain.toml`,
/// or the default) can build for `wasm32-wasip2`, adding the target with rustup when
/// it is missing: rustup adds the targets a `rust-toolchain.toml` lists only when it
/// installs the toolchain itself.
pub fn ensure_wasm32_wasip2(dir: &Path) -> anyhow::Result<()> {
    if wasm32_wasip2_installed(dir)? {
        return Ok(());
    }
    eprintln!("the wasm32-wasip2 target is missing: adding it (rustup target add wasm32-wasip2)");
    let status = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .context("failed to run `rustup target add wasm32-wasip2` (is rustup on PATH?)")?;
    if !status.success() || !wasm32_wasip2_installed(dir)? {
        bail!("`rustup target add wasm32-wasip2` failed ({status}); add the target to the toolchain you build with");
    }
    Ok(())
}

/// Whether the `rustc` cargo would use in `dir` has the target's standard library.
fn wasm32_wasip2_installed(dir: &Path) -> anyhow::Result<bool> {
    let output = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .current_dir(dir)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .context("failed to run rustc (is Rust installed? https://rustup.rs)")?;
    if !output.status.success() {
        bail!(
            "`rustc --print target-libdir --target wasm32-wasip2` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_std = std::fs::read_dir(libdir)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        .unwrap_or(false);
    Ok(has_std)
}
