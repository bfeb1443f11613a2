//! `decide/` holds the protocol's rules as pure logic: it must not reach for the async
//! runtime, the store, the `runtime` module or the clock. This reads its sources and fails on
//! any such use, so the rule cannot erode unnoticed.

use std::path::{Path, PathBuf};

/// What decision logic must not mention (outside comments).
const FORBIDDEN: &[&str] = &[
    "tokio",
    "crate::store",
    "crate::runtime",
    "super::runtime",
    "async fn",
    ".await",
    "SystemTime",
];

/// Reading the clock is forbidden outside tests (tests make their own instants).
const CLOCK: &str = "Instant::now";

/// Whether `code` mentions `word` as a whole token (not inside a longer identifier, so that
/// `self.awaiting` is not `.await`).
fn mentions(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        let starts_clean = !word.starts_with(ident) || !before.is_some_and(ident);
        let ends_clean = !word.ends_with(ident) || !after.is_some_and(ident);
        starts_clean && ends_clean
    })
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading decide/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn decide_does_no_io_and_reads_no_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/decide");
    let mut files = Vec::new();
    sources(&dir, &mut files);
    assert!(files.len() >= 5, "found only {files:?}");
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("reading a source");
        let is_test_file = file.file_name().is_some_and(|name| name == "tests.rs");
        let mut in_tests = is_test_file;
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains("#[cfg(test)]") {
                in_tests = true;
            }
            for word in FORBIDDEN {
                if mentions(code, word) {
                    violations.push(format!("{}:{}: {word}", file.display(), number + 1));
                }
            }
            if !in_tests && mentions(code, CLOCK) {
                violations.push(format!("{}:{}: {CLOCK}", file.display(), number + 1));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "decide/ must stay free of I/O and the clock:\n{}",
        violations.join("\n")
    );
}
