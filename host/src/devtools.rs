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
