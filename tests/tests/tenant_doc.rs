//! docs/tenants.md, run: every command of the page, in order, in a scratch
//! directory, with the output the page shows checked. From `ferry new` to a
//! processor deployed on a running host (`ferry dev`, on the embedded broker) and its
//! outputs, in Rust, and in Python and JavaScript where their toolchains are
//! installed (scripts/test.sh installs them).
//!
//! How the page is read is described in the comment at its top. Every fenced block
//! is either run, checked, written to a file or a known kind of illustration: a
//! block of any other kind (```bash, ```console, ...) fails the test, so a command
//! the test does not run cannot appear on the page. Nothing is timed: background
//! output is waited for line by line, with [`PATIENCE`] only as the ceiling for a
//! broken build.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ferry_tests::{PATIENCE, free_port, wait_until};

/// The admin address the page uses; each run replaces it with a free port.
const PAGE_ADMIN: &str = "127.0.0.1:9464";
/// The port of the page's HTTP service; each run replaces it with a free one.
const PAGE_SERVICE_PORT: &str = "8089";
/// Languages of blocks that only illustrate (unless they have `file=`).
const ILLUSTRATIONS: &[&str] = &["rust", "toml", "json", "python", "js", "text"];
/// Set by scripts/test.sh (which installs every toolchain): a section is never
/// skipped for a missing toolchain, it fails.
const REQUIRE_ALL: &str = "FERRY_DOC_TEST_ALL_LANGUAGES";

#[derive(Debug)]
enum Item {
    /// A `## ` heading.
    Section(String),
    /// `<!-- doc-test: needs X -->`.
    Needs(String),
    /// A fenced block: its info string, its text, its first line in the page.
    Block { info: String, text: String, line: usize },
}

fn parse(page: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut lines = page.lines().enumerate();
    let mut in_comment = false;
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim();
        if in_comment {
            in_comment = !trimmed.contains("-->");
            continue;
        }
        if let Some(need) = trimmed.strip_prefix("<!-- doc-test: needs ").and_then(|r| r.strip_suffix(" -->")) {
            items.push(Item::Needs(need.to_owned()));
        } else if trimmed.starts_with("<!--") {
            in_comment = !trimmed.contains("-->");
        } else if let Some(title) = line.strip_prefix("## ") {
            items.push(Item::Section(title.to_owned()));
        } else if let Some(info) = line.strip_prefix("```") {
            let mut text = String::new();
            for (_, line) in lines.by_ref() {
                if line.starts_with("```") {
                    break;
                }
                text += line;
                text.push('\n');
            }
            items.push(Item::Block { info: info.trim().to_owned(), text, line: number + 1 });
        }
    }
    items
}

/// Whether the test knows what to do with a block of this info string (the same
/// kinds as the `match` in the test).
fn known(info: &str) -> bool {
    match info.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["sh"] | ["sh", "fails" | "background"] | ["text", "stdout" | "stderr" | "background"] => true,
        [_, file] => file.starts_with("file="),
        [language] => ILLUSTRATIONS.contains(language),
        _ => false,
    }
}

/// Whether `line` holds `pattern`, where `...` stands for any text.
fn matches(line: &str, pattern: &str) -> bool {
    let mut rest = line;
    for part in pattern.split("...") {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The lines of `text` that are not blank.
fn expected(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim().is_empty())
}

/// Checks that every line of `expected_text` is found, in order, in `actual`.
fn check_in_order(what: &str, expected_text: &str, actual: &str) {
    let lines: Vec<&str> = actual.lines().collect();
    let mut from = 0;
    for pattern in expected(expected_text) {
        match lines[from..].iter().position(|l| matches(l, pattern)) {
            Some(at) => from += at + 1,
            None => panic!("{what}: expected a line with\n  {pattern}\n(after line {from}) in:\n{actual}"),
        }
    }
}

/// A command running in the background, its output collected line by line.
struct Background {
    command: String,
    child: Child,
    stdout: Arc<(Mutex<Vec<String>>, Condvar)>,
    stderr: Arc<Mutex<String>>,
    /// How many lines it had printed when the last foreground block started.
    mark: usize,
}

impl Background {
    fn start(command: &str, cwd: &Path, env: &[(String, String)]) -> Self {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(format!("exec {command}"))
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash runs");
        let stdout = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let out = child.stdout.take().expect("piped");
        let lines = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.0.lock().unwrap().push(line);
                lines.1.notify_all();
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped");
        let text = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                text.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Background { command: command.to_owned(), child, stdout, stderr, mark: 0 }
    }

    /// Waits until every line of `expected_text` was printed since the mark.
    fn wait_for(&mut self, expected_text: &str, line: usize) {
        let started = Instant::now();
        let (lines, printed) = &*self.stdout;
        let mut lines = lines.lock().unwrap();
        loop {
            let missing: Vec<&str> =
                expected(expected_text).filter(|p| !lines[self.mark..].iter().any(|l| matches(l, p))).collect();
            if missing.is_empty() {
                return;
            }
            let ended = self.child.try_wait().expect("waitable");
            if ended.is_some() || started.elapsed() > PATIENCE {
                panic!(
                    "docs/tenants.md line {line}: `{}` did not print\n  {}\n({}); it printed:\n{}\nand on stderr:\n{}",
                    self.command,
                    missing.join("\n  "),
                    ended.map_or("still running".to_owned(), |s| format!("it ended: {s}")),
                    lines.join("\n"),
                    self.stderr.lock().unwrap()
                );
            }
            lines = printed.wait_timeout(lines, Duration::from_millis(200)).unwrap().0;
        }
    }

    /// Stops it as Ctrl-C would; it must exit cleanly.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
        assert!(killed.success(), "could not signal `{}`", self.command);
        let mut status = None;
        wait_until(&format!("`{}` to stop after SIGINT", self.command), || {
            status = self.child.try_wait().expect("waitable");
            status.is_some()
        });
        let status = status.expect("it stopped");
        assert!(
            status.success(),
            "`{}` ended with {status} after SIGINT; stderr:\n{}",
            self.command,
            self.stderr.lock().unwrap()
        );
    }
}

/// What a foreground block printed.
struct Ran {
    stdout: String,
    stderr: String,
}

/// The page's session, one `## ` section at a time.
struct Session {
    scratch: PathBuf,
    cwd: PathBuf,
    admin: String,
    /// Stands for [`PAGE_SERVICE_PORT`].
    service_port: String,
    env: Vec<(String, String)>,
    last: Option<Ran>,
    background: Option<Background>,
}

impl Session {
    fn localize(&self, text: &str) -> String {
        // The service's port first: the admin address's free port may hold its digits.
        text.replace(PAGE_SERVICE_PORT, &self.service_port).replace(PAGE_ADMIN, &self.admin)
    }

    fn run(&mut self, script: &str, must_fail: bool, line: usize) {
        if let Some(background) = &mut self.background {
            background.mark = background.stdout.0.lock().unwrap().len();
        }
        let cwd_file = self.scratch.join(".cwd");
        let script = format!(
            "set -euo pipefail\ncd {}\n{}\npwd > {}\n",
            shell_quote(&self.cwd),
            self.localize(script),
            shell_quote(&cwd_file)
        );
        let output = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("bash runs");
        let ran = Ran {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert_eq!(
            output.status.success(),
            !must_fail,
            "docs/tenants.md line {line}: the block {} ({}):\n{script}\nstdout:\n{}\nstderr:\n{}",
            if must_fail { "should fail but succeeded" } else { "failed" },
            output.status,
            ran.stdout,
            ran.stderr
        );
        if output.status.success() {
            let cwd = std::fs::read_to_string(&cwd_file).expect("the block wrote its directory");
            self.cwd = PathBuf::from(cwd.trim());
        }
        // `ferry new` writes the page's admin address into ferry.toml: use this run's.
        let config = self.cwd.join("ferry.toml");
        if let Ok(text) = std::fs::read_to_string(&config)
            && text.contains(PAGE_ADMIN)
        {
            std::fs::write(&config, self.localize(&text)).unwrap();
        }
        self.last = Some(ran);
    }

    fn stop_background(&mut self) {
        if let Some(background) = self.background.take() {
            background.stop();
        }
    }
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// Whether the toolchain a section needs is installed.
fn installed(need: &str, checkout: &Path) -> Result<(), String> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program).args(args).output().map(|o| o.status.success()).unwrap_or(false)
    };
    match need {
        "python" if works("python3", &["-c", "import componentize_py, pytest"]) => Ok(()),
        "python" => Err("python3 with componentize-py and pytest".into()),
        "js" => {
            let tools = checkout.join("guest-sdk/js/node_modules/@bytecodealliance/componentize-js");
            if works("node", &["--version"]) && works("npm", &["--version"]) && tools.is_dir() {
                Ok(())
            } else {
                Err("node, npm and guest-sdk/js/node_modules (npm ci in guest-sdk/js)".into())
            }
        }
        other => panic!("docs/tenants.md needs an unknown toolchain `{other}`"),
    }
}

/// The page's sections that run as tests of their own: they are independent (each
/// starts in the scratch directory with nothing running), and the languages' builds
/// are the suite's longest waits, so they run side by side.
const OWN_TESTS: &[&str] = &["Rust", "Python", "JavaScript", "Calling HTTP services"];

#[test]
fn the_rust_section_works() {
    run_sections(|title| title == "Rust");
}

#[test]
fn the_python_section_works() {
    run_sections(|title| title == "Python");
}

#[test]
fn the_javascript_section_works() {
    run_sections(|title| title == "JavaScript");
}

#[test]
fn the_http_section_works() {
    run_sections(|title| title == "Calling HTTP services");
}

#[test]
fn every_other_section_works() {
    run_sections(|title| !OWN_TESTS.contains(&title));
}

/// Runs every command of the sections whose title `chosen` picks (the page's text
/// before its first section always runs), in order, in one scratch directory.
fn run_sections(chosen: impl Fn(&str) -> bool) {
    let checkout = ferry_host::devtools::workspace_root();
    let page = std::fs::read_to_string(checkout.join("docs/tenants.md")).unwrap();
    let items = parse(&page);
    assert!(items.iter().filter(|i| matches!(i, Item::Block { info, .. } if info == "sh")).count() >= 10);
    for title in OWN_TESTS {
        assert!(
            items.iter().any(|i| matches!(i, Item::Section(t) if t == title)),
            "docs/tenants.md has no section `## {title}`, which a test of its own runs"
        );
    }

    let ferry = ferry_tests::ferry_bin();
    // The SDK and its dependencies built for wasm32 in the `guest` profile, as the
    // page's project builds them (see the build directory below).
    ferry_tests::guest("ferry-example-passthrough");
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let path = format!("{}:{}", ferry.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    // The page's commands as a tenant types them: their own target directories, a
    // compile cache of their own, nothing of this workspace's cargo environment; but
    // cargo's intermediate files go to the build directory of this workspace's guests.
    // `ferry new` gives the project this checkout's Cargo.lock, so its dependencies
    // are the guests' own, already compiled: only the project itself is built (and,
    // once, the SDK for the project's native unit tests).
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !(k.starts_with("CARGO_") && k != "CARGO_HOME") && k != "RUSTFLAGS")
        .filter(|(k, _)| k != "PATH" && k != "XDG_CACHE_HOME" && k != "NODE_TEST_CONTEXT")
        .collect();
    env.push(("PATH".into(), path));
    env.push(("XDG_CACHE_HOME".into(), scratch.path().join("cache").display().to_string()));
    env.push(("NO_COLOR".into(), "1".into()));
    env.push(("CARGO_BUILD_BUILD_DIR".into(), ferry_host::devtools::guest_target_dir().display().to_string()));
    let mut session = Session {
        scratch: scratch.path().to_path_buf(),
        cwd: work.clone(),
        admin: format!("127.0.0.1:{}", free_port()),
        service_port: free_port().to_string(),
        env,
        last: None,
        background: None,
    };

    let mut skipping: Option<String> = None;
    // Sections this test leaves to another: their blocks are only checked to be known.
    let mut elsewhere = false;
    for item in &items {
        match item {
            Item::Section(title) => {
                session.stop_background();
                session.cwd = work.clone();
                session.last = None;
                skipping = None;
                elsewhere = !chosen(title);
                if !elsewhere {
                    eprintln!("docs/tenants.md: ## {title}");
                }
            }
            Item::Needs(_) | Item::Block { .. } if elsewhere => {
                if let Item::Block { info, line, .. } = item {
                    assert!(known(info), "docs/tenants.md line {line}: a ```{info} block the test would not run");
                }
            }
            Item::Needs(need) => {
                if let Err(missing) = installed(need, &checkout) {
                    assert!(
                        std::env::var_os(REQUIRE_ALL).is_none(),
                        "{REQUIRE_ALL} is set, and docs/tenants.md needs {missing}"
                    );
                    eprintln!("docs/tenants.md: skipping this section: it needs {missing}");
                    skipping = Some(missing);
                }
            }
            Item::Block { info, line, .. } if skipping.is_some() => {
                assert!(known(info), "docs/tenants.md line {line}: a ```{info} block the test would not run");
            }
            Item::Block { info, text, line } => {
                let started = Instant::now();
                let words: Vec<&str> = info.split_whitespace().collect();
                match words.as_slice() {
                    ["sh"] => session.run(text, false, *line),
                    ["sh", "fails"] => session.run(text, true, *line),
                    ["sh", "background"] => {
                        assert!(session.background.is_none(), "line {line}: one background command at a time");
                        let command = session.localize(text.trim());
                        session.background = Some(Background::start(&command, &session.cwd, &session.env));
                    }
                    ["text", stream @ ("stdout" | "stderr")] => {
                        let last = session.last.as_ref().unwrap_or_else(|| panic!("line {line}: no command before"));
                        let actual = if *stream == "stdout" { &last.stdout } else { &last.stderr };
                        check_in_order(&format!("docs/tenants.md line {line}"), &session.localize(text), actual);
                    }
                    ["text", "background"] => {
                        let expected = session.localize(text);
                        let background =
                            session.background.as_mut().unwrap_or_else(|| panic!("line {line}: nothing runs"));
                        background.wait_for(&expected, *line);
                    }
                    [_, file] if file.starts_with("file=") => {
                        let path = session.cwd.join(&file["file=".len()..]);
                        std::fs::write(&path, session.localize(text)).unwrap();
                    }
                    [language] if ILLUSTRATIONS.contains(language) => {}
                    _ => panic!(
                        "docs/tenants.md line {line}: a ```{info} block: the test does not know what to do \
                         with it (commands go in ```sh blocks; illustrations are {ILLUSTRATIONS:?})"
                    ),
                }
                if started.elapsed() > Duration::from_secs(1) {
                    eprintln!("docs/tenants.md line {line}: {:.1} s", started.elapsed().as_secs_f64());
                }
            }
        }
    }
    session.stop_background();
}

#[test]
fn the_page_reader_finds_blocks_markers_and_patterns() {
    let page = "intro\n<!--\n```sh\nnot a block\n-->\n## A\n<!-- doc-test: needs js -->\n```sh fails\nfalse\n```\n";
    let items = parse(page);
    assert!(matches!(&items[0], Item::Section(t) if t == "A"));
    assert!(matches!(&items[1], Item::Needs(n) if n == "js"));
    assert!(matches!(&items[2], Item::Block { info, text, line: 8 } if info == "sh fails" && text == "false\n"));
    assert_eq!(items.len(), 3);
    assert!(matches("digest: sha256:abc", "digest: sha256:..."));
    assert!(matches("[u] now running 0123 (rollback from 4567)", "[u] now running ... (rollback from ...)"));
    assert!(!matches("[u] now running 0123 (deployed from watch:x)", "[u] now running ... (rollback from ...)"));
    for info in ["sh", "sh fails", "sh background", "text stdout", "text background", "rust file=src/lib.rs", "toml"] {
        assert!(known(info), "{info}");
    }
    for info in ["", "bash", "console", "shell", "sh later", "text elsewhere"] {
        assert!(!known(info), "{info}");
    }
}
