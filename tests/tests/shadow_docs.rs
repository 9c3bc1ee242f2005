//! The "Prove a version on live traffic" sections of docs/tenants.md and
//! docs/operators.md, checked: every `ferry` command of their ```sh blocks is one
//! the command line accepts, and every ```toml block with a `shadow` section is a
//! valid pipeline config with that section. (docs/tenants.md's runnable sections are
//! run by tenant_doc.rs; these blocks name a fleet's hosts and keys, so they are
//! parsed, not run.)

use ferry_host::cli::Cli;
use ferry_host::config::Config;

/// The fenced blocks (info string, text) of the `###` section of `page` whose
/// title starts with `title`.
fn blocks(page: &str, title: &str) -> Vec<(String, String)> {
    let start = page.find(&format!("### {title}")).unwrap_or_else(|| panic!("no section `### {title}`"));
    let rest = &page[start + 4..];
    let section = &rest[..rest.find("\n### ").or_else(|| rest.find("\n## ")).unwrap_or(rest.len())];
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let text: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            out.push((info.trim().to_owned(), text.join("\n")));
        }
    }
    out
}

/// The `ferry` commands of a ```sh block.
fn commands(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ferry "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// A whole config around a block's pipeline lines (`# ...` stands for the rest).
fn config_around(block: &str) -> String {
    let pipeline = if block.contains("[[pipeline]]") {
        block.replace("# ...", "inputs = [\"in\"]\ngroup = \"g\"\ncomponent = \"orders.wasm\"")
    } else {
        format!(
            "[[pipeline]]\nname = \"orders\"\ninputs = [\"in\"]\ngroup = \"g\"\ncomponent = \"orders.wasm\"\n{block}"
        )
    };
    format!("brokers = \"127.0.0.1:9092\"\n{pipeline}\n")
}

fn check(page_path: &str, title: &str, min_commands: usize) {
    let page = std::fs::read_to_string(ferry_host::devtools::workspace_root().join(page_path)).unwrap();
    let mut checked = 0;
    let mut configs = 0;
    for (info, text) in blocks(&page, title) {
        match info.as_str() {
            "sh" => {
                for command in commands(&text) {
                    if let Err(error) = Cli::try_parse_args(&command) {
                        panic!("{page_path}: `{}` is refused by the command line:\n{error}", command.join(" "));
                    }
                    checked += 1;
                }
            }
            "toml" if text.contains("shadow") => {
                let config = config_around(&text);
                let parsed = Config::parse(&config).unwrap_or_else(|e| panic!("{page_path}: {e:#}\n{config}"));
                assert!(parsed.pipelines[0].shadow.is_some(), "{page_path}: no shadow section in\n{config}");
                configs += 1;
            }
            _ => {}
        }
    }
    assert!(checked >= min_commands, "{page_path}: {checked} commands checked");
    assert!(configs >= 1, "{page_path}: no shadow config checked");
}

#[test]
fn the_operators_shadow_section_holds_valid_commands_and_config() {
    check("docs/operators.md", "Prove a version on live traffic", 4);
}

#[test]
fn the_tenants_shadow_section_holds_valid_config() {
    check("docs/tenants.md", "Prove a version on live traffic", 0);
}
