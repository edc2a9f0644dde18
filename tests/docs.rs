//! The docs lead somewhere and say what the code does: every relative link in the
//! repository's Markdown files names a file or folder that exists, so a newcomer can follow
//! README → docs without a dead end, and the configuration reference is the one the code makes.

mod common;

use std::path::{Path, PathBuf};

/// Markdown files of the repository (not build output, installed tools or dependencies).
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && !matches!(name.as_str(), "target" | "node_modules") {
                markdown_files(&path, out);
            }
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// The targets of `[text](target)` links in `markdown`, outside code spans and blocks.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_block = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        // Drop inline code spans: `[a](b)` inside backticks is not a link.
        let text: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = text.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].trim().to_string());
            rest = &after[end + 1..];
        }
    }
    targets
}

#[test]
fn every_relative_link_in_the_markdown_files_resolves() {
    let root = common::repo_root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(files.iter().any(|f| f.ends_with("README.md")) && files.iter().any(|f| f.starts_with(root.join("docs"))));
    let mut dead = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link_targets(&text) {
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let resolved = file.parent().unwrap().join(path.trim_start_matches('<').trim_end_matches('>'));
            if !resolved.canonicalize().is_ok_and(|p| p.starts_with(&root)) {
                dead.push(format!("{}: {target}", file.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    assert!(checked > 10, "only {checked} relative links found: is the scan broken?");
    assert!(dead.is_empty(), "dead or out-of-repository links:\n{}", dead.join("\n"));
}

#[test]
fn the_configuration_reference_is_the_one_the_code_makes() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_costline"))
        .args(["config", "reference"])
        .output()
        .expect("running costline config reference");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let generated = String::from_utf8(output.stdout).expect("UTF-8 reference");
    let path = common::repo_root().join("docs/configuration.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/configuration.md is stale: run `costline config reference > docs/configuration.md`"
    );
}

#[test]
fn links_in_code_are_not_links() {
    let text = "see [design](docs/design.md#fencing) and `[x](nowhere)`\n```\n[y](nowhere)\n```\n[z](<a>)";
    assert_eq!(link_targets(text), ["docs/design.md#fencing", "<a>"]);
}
