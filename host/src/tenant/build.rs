//! `ferry build [DIR]`: the one way to build a processor project into a component,
//! whatever its language, found by its project file:
//!
//! | file | language | how |
//! | --- | --- | --- |
//! | `Cargo.toml` | Rust | `cargo build --lib --profile guest --target wasm32-wasip2` (the target is added with rustup if missing) |
//! | `pyproject.toml` with `[tool.ferry]` | Python | `guest-sdk/python/build.py` (componentize-py) |
//! | `package.json` with `"ferry"` | JavaScript | `guest-sdk/js/build.mjs` (componentize-js) |
//!
//! It then prints the component's path and what `ferry check` says about it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{Language, checkout, shown};
use crate::config::Config;

/// Options of `ferry build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
}

/// Runs `ferry build`.
pub(crate) fn run(args: BuildArgs) -> anyhow::Result<()> {
    let component = build(&args.dir)?;
    println!("built {}", shown(&component).display());
    crate::cli::check(&shown(&component))?;
    note_if_unused(&args.dir, &component);
    Ok(())
}

/// Builds the project in `dir` and returns its component's path.
pub(crate) fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    match Language::of_project(dir)? {
        Language::Rust => build_rust(dir),
        Language::Python => build_with(dir, "python3", "guest-sdk/python/build.py", python_name(dir)?),
        Language::Js => build_with(dir, "node", "guest-sdk/js/build.mjs", js_name(dir)?),
    }
}

fn build_rust(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let output = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(&manifest)
        .output()
        .context("failed to run cargo (is Rust installed? https://rustup.rs)")?;
    if !output.status.success() {
        bail!("cargo cannot read {}:\n{}", manifest.display(), String::from_utf8_lossy(&output.stderr).trim_end());
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed something else than JSON")?;
    let manifest = manifest.canonicalize().with_context(|| format!("failed to resolve {}", manifest.display()))?;
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .with_context(|| {
            format!(
                "{} defines no package (a workspace?): run ferry build in the processor's own directory",
                manifest.display()
            )
        })?;
    let library = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["crate_types"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib")))
        .and_then(|t| t["name"].as_str())
        .with_context(|| {
            format!(
                "{} builds no cdylib, and a component is one: add\n\n[lib]\ncrate-type = [\"cdylib\", \"rlib\"]   # cdylib: the component; rlib: for cargo test\n",
                manifest.display()
            )
        })?
        .replace('-', "_");
    let workspace_root =
        PathBuf::from(metadata["workspace_root"].as_str().context("cargo metadata has no workspace_root")?);
    check_guest_profile(&workspace_root.join("Cargo.toml"))?;
    crate::devtools::ensure_wasm_target(dir)?;
    let status = Command::new("cargo")
        .args(["build", "--lib", "--profile", "guest", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .status()
        .context("failed to run cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status}); its errors are above");
    }
    let target_dir =
        PathBuf::from(metadata["target_directory"].as_str().context("cargo metadata has no target_directory")?);
    let component = target_dir.join("wasm32-wasip2").join("guest").join(format!("{library}.wasm"));
    if !component.is_file() {
        bail!("cargo built the project, but {} is missing", component.display());
    }
    Ok(component)
}

/// The `guest` profile must exist where cargo reads profiles: the workspace root.
fn check_guest_profile(root_manifest: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(root_manifest)
        .with_context(|| format!("failed to read {}", root_manifest.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", root_manifest.display()))?;
    if table.get("profile").and_then(|p| p.get("guest")).is_some() {
        return Ok(());
    }
    bail!(
        "{} has no [profile.guest], which ferry build builds components with; add\n\n\
         [profile.guest]\ninherits = \"release\"\nopt-level = 3\nlto = true\ncodegen-units = 1\npanic = \"abort\"\n\
         debug = false\nstrip = true\n",
        root_manifest.display()
    )
}

/// Runs an SDK's build script on `dir`, writing `dir/<name>.wasm`.
fn build_with(dir: &Path, interpreter: &str, script: &str, name: String) -> anyhow::Result<PathBuf> {
    let script = checkout()?.join(script);
    let dir = dir.canonicalize().with_context(|| format!("failed to resolve {}", dir.display()))?;
    let component = dir.join(format!("{name}.wasm"));
    let status = Command::new(interpreter).arg(&script).arg(&dir).arg(&component).status().with_context(|| {
        format!("failed to run `{interpreter} {}`: is {interpreter} installed and on PATH?", script.display())
    })?;
    if !status.success() {
        bail!("{} failed ({status}); its errors are above", script.display());
    }
    Ok(component)
}

/// The component name of a Python project: `[project] name`, else the directory's.
fn python_name(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("pyproject.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?;
    let name = table.get("project").and_then(|p| p.get("name")).and_then(|n| n.as_str()).map(str::to_owned);
    Ok(file_name(name, dir))
}

/// The component name of a JavaScript project: its package name, else the directory's.
fn js_name(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("package.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
    let manifest: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    // A scoped package (`@team/name`) is named by its last part.
    let name = manifest["name"].as_str().map(|n| n.rsplit('/').next().unwrap_or(n).to_owned());
    Ok(file_name(name, dir))
}

fn file_name(name: Option<String>, dir: &Path) -> String {
    let name = name.or_else(|| dir.canonicalize().ok()?.file_name().map(|n| n.to_string_lossy().into_owned()));
    let name: String = name
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' })
        .collect();
    if name.is_empty() { "processor".to_owned() } else { name }
}

/// Says so when the project's `ferry.toml` runs another file than the one built.
fn note_if_unused(dir: &Path, component: &Path) {
    let Ok(config) = Config::load(&dir.join("ferry.toml")) else { return };
    let built = component.canonicalize().ok();
    if config.pipelines.iter().any(|p| p.component.canonicalize().ok() == built) {
        return;
    }
    let runs: Vec<String> =
        config.pipelines.iter().map(|p| format!("{} runs {}", p.name, p.component.display())).collect();
    println!("note: no pipeline of {} runs this file ({})", dir.join("ferry.toml").display(), runs.join("; "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_are_file_names() {
        let dir = Path::new("/nonexistent/my-proc");
        assert_eq!(file_name(Some("clicks".into()), dir), "clicks");
        assert_eq!(file_name(Some("a b/c".into()), dir), "a-b-c");
        assert_eq!(file_name(None, dir), "processor", "an unreadable directory has no name");
    }

    #[test]
    fn a_project_without_the_guest_profile_is_told_how_to_add_it() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(&manifest, "[package]\nname = \"x\"\n").unwrap();
        let error = check_guest_profile(&manifest).unwrap_err().to_string();
        assert!(error.contains("has no [profile.guest]") && error.contains("panic = \"abort\""), "{error}");
        std::fs::write(&manifest, "[package]\nname = \"x\"\n[profile.guest]\ninherits = \"release\"\n").unwrap();
        check_guest_profile(&manifest).unwrap();
    }
}
