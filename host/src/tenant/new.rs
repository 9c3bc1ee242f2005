//! `ferry new NAME [--lang rust|python|js] [--dir DIR]`: a processor project that
//! builds wherever it is created.
//!
//! The project is a copy of the language's template in the ferry checkout
//! (`guest-sdk/template`, `guest-sdk/python/template`, `guest-sdk/js/template`: a
//! processor that upper-cases values, with its unit tests and a README), plus what
//! every language shares: `ferry.toml` (the pipeline it runs in, read by its unit
//! tests, `ferry test` and `ferry dev`), `sample.jsonl` (records for `ferry test`
//! and `ferry dev`) and `admin.token` (a fresh token for `ferry dev`'s admin API).
//!
//! The SDK is referred to where it is: a path dependency on the checkout's
//! `guest-sdk` for Rust (its `wit-bindgen` comes from the registry), the checkout's
//! Python and JavaScript SDK directories for the others. Nothing is copied, so a
//! project built against a newer checkout gets the SDK that matches its host. A Rust
//! project starts with the checkout's `Cargo.lock`: its dependencies at the versions
//! the SDK was built and tested with (cargo keeps those and drops the rest), and the
//! same compiled dependencies as the checkout's own guests.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::{Language, checkout};

/// Options of `ferry new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The processor's name: lowercase letters, digits, `-` and `_`, starting with
    /// a letter. It also names its pipeline and topics in `ferry.toml`.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value_t = Language::Rust)]
    pub lang: Language,
    /// Where to create it (default: ./NAME); must not exist, or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const FERRY_TOML: &str = include_str!("templates/ferry.toml");
const SAMPLE: &str = include_str!("templates/sample.jsonl");

/// Runs `ferry new`.
pub(crate) fn run(args: NewArgs) -> anyhow::Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    create(&args.name, args.lang, &dir, &checkout()?)?;
    let shown = dir.display();
    let (unit_tests, build_first) = match args.lang {
        Language::Rust => ("src/lib.rs, with its unit tests", "cargo test"),
        Language::Python => ("processor.py, its unit tests in tests/", "python3 -m pytest"),
        Language::Js => ("src/processor.js, its unit tests in test/", "npm install && npm test"),
    };
    println!(
        "created {shown}: a {} processor ({unit_tests}), ferry.toml (its pipeline), sample.jsonl, README.md",
        args.lang.name()
    );
    println!("next: cd {shown} && {build_first} && ferry build");
    Ok(())
}

/// Creates the project `name` in `dir` from the templates of `checkout`.
pub(crate) fn create(name: &str, lang: Language, dir: &Path, checkout: &Path) -> anyhow::Result<()> {
    check_name(name)?;
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty: choose another name or --dir", dir.display());
    }
    let sdk = checkout.join("guest-sdk");
    let (template, sdk_path, component) = match lang {
        Language::Rust => {
            let component = format!("target/wasm32-wasip2/guest/{}.wasm", name.replace('-', "_"));
            (sdk.join("template"), sdk.clone(), component)
        }
        Language::Python => (sdk.join("python").join("template"), sdk.join("python"), format!("{name}.wasm")),
        Language::Js => (sdk.join("js").join("template"), sdk.join("js"), format!("{name}.wasm")),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk_path}}", &sdk_path.display().to_string())
            .replace("{{docs}}", &checkout.join("docs").join("tenants.md").display().to_string())
            .replace("{{component}}", &component)
    };
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    copy_template(&template, dir, &fill)
        .with_context(|| format!("failed to copy the template {}", template.display()))?;
    write(&dir.join("ferry.toml"), &fill(FERRY_TOML))?;
    write(&dir.join("sample.jsonl"), SAMPLE)?;
    let lock = checkout.join("Cargo.lock");
    if lang == Language::Rust && lock.is_file() {
        std::fs::copy(&lock, dir.join("Cargo.lock")).with_context(|| format!("failed to copy {}", lock.display()))?;
    }
    write_token(&dir.join("admin.token"))?;
    ignore(&dir.join(".gitignore"), &["admin.token", "deploy/", "*.wasm", ".ferry/"])?;
    Ok(())
}

/// Names become crate, package, pipeline and topic names: keep them plain.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if !valid {
        bail!(
            "`{name}` cannot name a processor: use 1 to 64 lowercase letters, digits, `-` and `_`, starting with a letter"
        );
    }
    Ok(())
}

/// Copies `from` into `to`, filling placeholders in every file and naming
/// `*.tmpl` files without the suffix. Skips what tools leave behind.
fn copy_template(from: &Path, to: &Path, fill: &dyn Fn(&str) -> String) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .with_context(|| format!("failed to read {}", from.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ["node_modules", "__pycache__", ".pytest_cache", "target"].contains(&name.as_str())
            || name.ends_with(".wasm")
        {
            continue;
        }
        let target = to.join(name.strip_suffix(".tmpl").unwrap_or(&name));
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_template(&entry.path(), &target, fill)?;
        } else {
            let text = std::fs::read_to_string(entry.path())
                .with_context(|| format!("failed to read {}", entry.path().display()))?;
            write(&target, &fill(&text))?;
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))
}

/// A random token, readable by its owner only.
fn write_token(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut random = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("failed to read /dev/urandom for the admin token")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    writeln!(file, "{}", hex::encode(random)).with_context(|| format!("failed to write {}", path.display()))
}

/// Adds `lines` to a `.gitignore` unless it has them.
fn ignore(path: &Path, lines: &[&str]) -> anyhow::Result<()> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    for line in lines {
        if !text.lines().any(|l| l.trim() == *line) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text += line;
            text.push('\n');
        }
    }
    write(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "urgent", "click-counter", "v2_orders"] {
            check_name(good).unwrap();
        }
        for bad in ["", "Urgent", "2fast", "-x", "a b", "a.b", &"x".repeat(65)] {
            let error = check_name(bad).unwrap_err().to_string();
            assert!(error.contains("cannot name a processor"), "{error}");
        }
    }

    #[test]
    fn every_language_gets_its_template_and_the_shared_files() {
        let root = checkout().unwrap();
        for lang in [Language::Rust, Language::Python, Language::Js] {
            let dir = tempfile::tempdir().unwrap();
            let project = dir.path().join("clicks");
            create("clicks", lang, &project, &root).unwrap();
            let config = crate::config::Config::load(&project.join("ferry.toml")).unwrap();
            let pipeline = &config.pipelines[0];
            assert_eq!((pipeline.name.as_str(), pipeline.settings["output_topic"].as_str()), ("clicks", "clicks.out"));
            assert_eq!(Language::of_project(&project).unwrap(), lang);
            let samples = crate::tenant::records::read(&project.join("sample.jsonl"), "clicks.in").unwrap();
            assert_eq!(samples.len(), 4);
            let token = std::fs::read_to_string(project.join("admin.token")).unwrap();
            assert_eq!(token.trim().len(), 48);
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(project.join("admin.token")).unwrap().permissions().mode() & 0o777, 0o600);
            let ignored = std::fs::read_to_string(project.join(".gitignore")).unwrap();
            assert!(ignored.lines().any(|l| l == "admin.token"), "{ignored}");
            let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
            assert!(!readme.contains("{{") && readme.contains("clicks"), "{readme}");
            let error = create("clicks", lang, &project, &root).unwrap_err().to_string();
            assert!(error.contains("already exists"), "{error}");
        }
    }

    #[test]
    fn the_rust_project_depends_on_this_checkouts_sdk() {
        let root = checkout().unwrap();
        let dir = tempfile::tempdir().unwrap();
        create("my-proc", Language::Rust, dir.path(), &root).unwrap();
        let manifest: toml::Table = std::fs::read_to_string(dir.path().join("Cargo.toml")).unwrap().parse().unwrap();
        let sdk = manifest["dependencies"]["ferry-sdk"]["path"].as_str().unwrap();
        assert_eq!(Path::new(sdk), root.join("guest-sdk"));
        assert!(manifest["profile"]["guest"]["panic"].as_str() == Some("abort"));
        let config = std::fs::read_to_string(dir.path().join("ferry.toml")).unwrap();
        assert!(config.contains("component = \"target/wasm32-wasip2/guest/my_proc.wasm\""), "{config}");
        let lib = std::fs::read_to_string(dir.path().join("src").join("lib.rs")).unwrap();
        assert!(lib.contains("Harness::from_config(\"ferry.toml\", \"my-proc\")"), "{lib}");
        let lock = std::fs::read_to_string(dir.path().join("Cargo.lock")).unwrap();
        assert_eq!(lock, std::fs::read_to_string(root.join("Cargo.lock")).unwrap(), "the checkout's versions");
    }
}
