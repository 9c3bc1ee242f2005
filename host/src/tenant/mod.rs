//! The tenant's path from an idea to a running processor, as `ferry` commands
//! (docs/tenants.md walks through it, and a test runs every command in it):
//!
//! | module | command |
//! | --- | --- |
//! | [`new`] | `ferry new NAME [--lang rust\|python\|js]`: a project that builds anywhere |
//! | [`build`] | `ferry build [DIR]`: its component, for any language |
//! | [`trial`] | `ferry test`: the component on sample records in the real sandbox, with a golden file |
//! | [`dev`] | `ferry dev`: a local host on an embedded broker, sending the samples and printing the outputs |
//! | [`records`] | the sample-record format (JSON lines) those commands read and print |

pub(crate) mod build;
pub(crate) mod dev;
mod diff;
pub(crate) mod new;
pub(crate) mod records;
pub(crate) mod state_file;
pub(crate) mod trial;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::bail;

/// The languages a processor can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, with the `ferry-sdk` crate.
    Rust,
    /// Python, with `guest-sdk/python` and componentize-py.
    Python,
    /// JavaScript (with TypeScript declarations), with `guest-sdk/js` and componentize-js.
    Js,
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
        })
    }
}

impl Language {
    /// Its name, for people.
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::Js => "JavaScript",
        }
    }

    /// The language of the project in `dir`, by its project file.
    pub fn of_project(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        if dir.join("Cargo.toml").is_file() {
            return Ok(Language::Rust);
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("pyproject.toml"))
            && text.parse::<toml::Table>().is_ok_and(|t| t.get("tool").and_then(|t| t.get("ferry")).is_some())
        {
            return Ok(Language::Python);
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("package.json"))
            && serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|m| m.get("ferry").is_some())
        {
            return Ok(Language::Js);
        }
        bail!(
            "{} is not a processor project: it needs a Cargo.toml (Rust), a pyproject.toml with [tool.ferry] \
             (Python) or a package.json with a \"ferry\" section (JavaScript); `ferry new` creates one",
            dir.display()
        )
    }
}

/// The ferry source checkout this binary was built from: where the SDKs, their
/// templates and build scripts are. Tenant projects refer to the SDKs there.
pub(crate) fn checkout() -> anyhow::Result<PathBuf> {
    let root = crate::devtools::workspace_root();
    if root.join("guest-sdk").join("Cargo.toml").is_file() && root.join("wit").join("processor.wit").is_file() {
        return Ok(root);
    }
    bail!(
        "this ferry binary was built from {}, which is no longer a ferry checkout: the SDKs and templates live \
         there; rebuild ferry from a checkout (cargo install --path host)",
        root.display()
    )
}

/// `path` relative to the current directory when it is inside it, for messages a
/// person reads (and that docs show).
pub(crate) fn shown(path: &Path) -> PathBuf {
    let Ok(cwd) = std::env::current_dir() else { return path.to_path_buf() };
    for base in [Some(cwd.clone()), cwd.canonicalize().ok()].into_iter().flatten() {
        if let Ok(relative) = path.strip_prefix(&base) {
            return relative.to_path_buf();
        }
    }
    path.to_path_buf()
}
