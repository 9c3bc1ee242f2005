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
            GuestLanguage::Python => &["ferry_sdk", "build.py"],
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
    let out_dir = root.join("target").join("guests").join(language.name());
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
