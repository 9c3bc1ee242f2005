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
pub fn guest_target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    target.join("guests")
}

/// Builds the guest crate `package` for `wasm32-wasip2` (profile `guest`) and
/// returns the component's path. Adds the target first if it is missing.
pub fn build_guest(package: &str) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    ensure_wasm_target(&root)?;
    let target_dir = guest_target_dir();
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
    let path = guest_path(package);
    if !path.exists() {
        bail!("guest {package} built, but {} is missing", path.display());
    }
    Ok(path)
}

/// Where [`build_guest`] puts the component of `package`.
pub fn guest_path(package: &str) -> PathBuf {
    guest_target_dir().join(WASM_TARGET).join("guest").join(format!("{}.wasm", package.replace('-', "_")))
}

/// A guest language built by its SDK's own build script rather than cargo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GuestLanguage {
    /// componentize-py 0.25.1, through `guest-sdk/python/build.py`.
    Python,
    /// componentize-js 0.23.0, through `guest-sdk/js/build.mjs`.
    JavaScript,
}

impl GuestLanguage {
    /// Both of them.
    pub const ALL: [GuestLanguage; 2] = [GuestLanguage::Python, GuestLanguage::JavaScript];

    /// Short name: `python` or `js` (directories, file names, table rows).
    pub fn name(self) -> &'static str {
        match self {
            GuestLanguage::Python => "python",
            GuestLanguage::JavaScript => "js",
        }
    }

    /// The SDK directory, relative to the workspace root.
    fn sdk_dir(self) -> &'static str {
        match self {
            GuestLanguage::Python => "guest-sdk/python",
            GuestLanguage::JavaScript => "guest-sdk/js",
        }
    }

    /// What the build reads besides the project and the WIT files (relative to the
    /// SDK directory): the SDK's sources, its build script and the pinned tools.
    fn sdk_inputs(self) -> &'static [&'static str] {
        match self {
            GuestLanguage::Python => &["ferry_sdk", "build.py", "wasi-wit"],
            GuestLanguage::JavaScript => &["src", "build.mjs", "package-lock.json"],
        }
    }

    /// The build command for `project` into `output`.
    fn command(self, root: &Path, project: &Path, output: &Path) -> Command {
        let mut command = match self {
            GuestLanguage::Python => {
                let mut c = Command::new(std::env::var("FERRY_PYTHON").unwrap_or_else(|_| "python3".to_owned()));
                c.arg(root.join("guest-sdk/python/build.py"));
                c
            }
            GuestLanguage::JavaScript => {
                let mut c = Command::new("node");
                c.arg(root.join("guest-sdk/js/build.mjs"));
                c
            }
        };
        command.arg(project).arg(output).current_dir(root);
        command
    }

    /// What to install when the build cannot run.
    fn toolchain_hint(self) -> &'static str {
        match self {
            GuestLanguage::Python => {
                "is componentize-py installed? (python3 -m pip install componentize-py==0.25.1; scripts/test.sh does it)"
            }
            GuestLanguage::JavaScript => {
                "are node and npm installed, and did `npm ci` run in guest-sdk/js? (scripts/test.sh does it)"
            }
        }
    }
}

/// Builds the Python or JavaScript processor project in `project` (a directory
/// relative to the workspace root, such as `examples/python/orders`) with its SDK's
/// build script and returns the component's path under `target/guests/<language>/`.
///
/// The file name carries a sha256 of everything the build reads (the project's
/// files, the SDK's sources and build script, the pinned tool versions, `wit/`), so
/// an unchanged project is not built again (these builds take 10-40 s) and a
/// changed one never reuses a stale component. Builds go to a temporary name and
/// are renamed into place, so concurrent test processes never see half a file.
pub fn build_polyglot_guest(language: GuestLanguage, project: &str) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let project_dir = root.join(project);
    if !project_dir.is_dir() {
        bail!("no {} project at {}", language.name(), project_dir.display());
    }
    let digest = polyglot_inputs_digest(&root, language, &project_dir)
        .with_context(|| format!("failed to read the sources of {project}"))?;
    let out_dir = guest_target_dir().join(language.name());
    std::fs::create_dir_all(&out_dir).with_context(|| format!("failed to create {}", out_dir.display()))?;
    let stem = project.trim_end_matches('/').rsplit('/').next().unwrap_or(project);
    let path = out_dir.join(format!("{stem}-{}.wasm", &digest[..16]));
    if path.is_file() {
        return Ok(path);
    }
    let temp = out_dir.join(format!(".{stem}-{}.{}.tmp.wasm", &digest[..16], std::process::id()));
    let output = language.command(&root, &project_dir, &temp).output().with_context(|| {
        format!("failed to run the {} build for {project}; {}", language.name(), language.toolchain_hint())
    })?;
    if !output.status.success() || !temp.is_file() {
        let _ = std::fs::remove_file(&temp);
        bail!(
            "building {project} ({}) failed ({}); {}\n{}",
            language.name(),
            output.status,
            language.toolchain_hint(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    std::fs::rename(&temp, &path)
        .with_context(|| format!("failed to move the built component to {}", path.display()))?;
    Ok(path)
}

/// sha256 over the relative path and content of every file a build reads.
fn polyglot_inputs_digest(root: &Path, language: GuestLanguage, project: &Path) -> std::io::Result<String> {
    use sha2::{Digest as _, Sha256};
    let sdk = root.join(language.sdk_dir());
    let mut files = Vec::new();
    collect_files(project, &mut files)?;
    for input in language.sdk_inputs() {
        collect_files(&sdk.join(input), &mut files)?;
    }
    collect_files(&root.join("wit"), &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    hasher.update(language.name());
    for file in files {
        let name = file.strip_prefix(root).unwrap_or(&file).to_string_lossy().into_owned();
        let bytes = std::fs::read(&file)?;
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Every file under `path` (or `path` itself), leaving out installed packages,
/// caches and hidden entries.
fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "node_modules" || name == "__pycache__" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
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
