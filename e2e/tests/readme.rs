//! The README and docs/ stay true: every shell block in them runs here and must exit 0,
//! unless it is marked `<!-- not run: REASON -->` (a cluster, a docker daemon); every
//! relative link reaches a file and heading that exist; every `make` target their code
//! blocks name is one; and the Quick start's apt line installs everything `.ci/run`
//! installs, so a machine set up from the README runs what CI runs. Run with `make e2e`
//! (the blocks use the binaries it builds).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The markdown users read: the README, docs/ and the architecture guide.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md"), repo().join("ARCHITECTURE.md")];
    let mut docs: Vec<_> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// One fenced code block.
#[derive(Debug)]
struct Block {
    file: PathBuf,
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    body: String,
    /// The reason of a `<!-- not run: … -->` marker on the line before the fence.
    not_run: Option<String>,
}

impl Block {
    fn at(&self) -> String {
        format!(
            "{}:{}",
            self.file.strip_prefix(repo()).unwrap().display(),
            self.line
        )
    }
}

/// The fenced blocks of a markdown text, indented ones (in list items) included.
fn blocks(file: &Path, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            let indent = lines[i].len() - trimmed.len();
            let not_run = i
                .checked_sub(1)
                .and_then(|p| lines[p].trim().strip_prefix("<!-- not run:"))
                .map(|r| r.trim_end_matches("-->").trim().to_owned());
            let start = i;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                body.push(lines[i].get(indent..).unwrap_or("").to_owned());
                i += 1;
            }
            out.push(Block {
                file: file.to_owned(),
                line: start + 1,
                lang: lang.trim().to_owned(),
                body: body.join("\n"),
                not_run,
            });
        }
        i += 1;
    }
    out
}

fn all_blocks() -> Vec<Block> {
    markdown_files()
        .iter()
        .flat_map(|f| blocks(f, &std::fs::read_to_string(f).unwrap()))
        .collect()
}

/// The text outside code blocks and code spans, where links are.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            // Drop `code spans`: a link-like text inside one is not a link.
            let mut in_code = false;
            for c in line.chars() {
                if c == '`' {
                    in_code = !in_code;
                } else if !in_code {
                    out.push(c);
                }
            }
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#').replace('`', "").as_str()));
        }
    }
    out
}

/// `(text)(target)` pairs of inline links.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_reaches_a_file_and_a_heading() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for link in links(&prose(&text)) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !target.exists() {
                broken.push(format!("{}: {link}: no file {}", file.display(), path));
                continue;
            }
            if !anchor.is_empty() {
                let text = std::fs::read_to_string(&target).unwrap();
                if !anchors(&text).contains(anchor) {
                    broken.push(format!("{}: {link}: no heading #{anchor}", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
}

/// Every shell block runs, from the repository's root, and exits 0.
#[test]
fn every_shell_block_runs() {
    let root = repo();
    // The blocks call target/debug/…: the binaries this suite was built with.
    let exe = std::env::current_exe().unwrap();
    let bins = exe.parent().unwrap().parent().unwrap();
    assert_eq!(
        bins.canonicalize().unwrap(),
        root.join("target/debug").canonicalize().unwrap(),
        "the README's blocks use target/debug: run this suite with the default target directory"
    );
    let mut ran = 0;
    let mut skipped = Vec::new();
    for block in all_blocks() {
        if !matches!(block.lang.as_str(), "sh" | "bash" | "shell") {
            continue;
        }
        if let Some(reason) = &block.not_run {
            assert!(
                !reason.is_empty(),
                "{}: a `not run` marker must say why",
                block.at()
            );
            skipped.push(format!("{}: {reason}", block.at()));
            continue;
        }
        run(&block, &root);
        ran += 1;
    }
    eprintln!("ran {ran} shell blocks; not run, as marked:");
    for s in &skipped {
        eprintln!("  {s}");
    }
    assert!(ran >= 1, "no shell block ran");
}

fn run(block: &Block, root: &Path) {
    let started = Instant::now();
    // Output to files, not pipes: a block that prints much, or leaves a process holding
    // its output open, must not hang the test.
    let stdout = tempfile::tempfile().unwrap();
    let stderr = tempfile::tempfile().unwrap();
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block.body])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap())
        // Its own process group, so whatever it leaves running is stopped with it.
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > BLOCK_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut text = String::new();
        f.rewind().unwrap();
        let _ = f.read_to_string(&mut text);
        text
    };
    let report = format!(
        "{}: the block\n{}\n--- stdout\n{}\n--- stderr\n{}",
        block.at(),
        block.body,
        read(stdout),
        read(stderr)
    );
    match status {
        Some(s) if s.success() => eprintln!("{}: ran in {:?}", block.at(), started.elapsed()),
        Some(s) => panic!("{report}\nexited with {s}"),
        None => panic!("{report}\nstill running after {BLOCK_TIMEOUT:?}"),
    }
}

/// The make targets the Makefile defines.
fn make_targets() -> BTreeSet<String> {
    std::fs::read_to_string(repo().join("Makefile"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('\t') && !l.starts_with('.') && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .filter(|(_, rest)| !rest.starts_with('='))
        .map(|(name, _)| name.trim().to_owned())
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .collect()
}

#[test]
fn every_make_target_the_docs_name_exists() {
    let targets = make_targets();
    assert!(
        targets.contains("test") && targets.contains("release"),
        "{targets:?}"
    );
    let mut unknown = Vec::new();
    let mut seen = 0;
    for block in all_blocks() {
        for line in block.body.lines() {
            let code = line.split('#').next().unwrap_or("");
            for (at, _) in code.match_indices("make ") {
                let before = &code[..at];
                if !(before.is_empty() || before.ends_with(' ') || before.ends_with(';')) {
                    continue;
                }
                // The first word that is not a VAR=value or a flag.
                let Some(target) = code[at + 5..]
                    .split_whitespace()
                    .find(|w| !w.contains('=') && !w.starts_with('-'))
                else {
                    continue;
                };
                seen += 1;
                if !targets.contains(target) {
                    unknown.push(format!("{}: make {target}", block.at()));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "no such make target:\n{}",
        unknown.join("\n")
    );
    assert!(seen >= 10, "only {seen} make commands found");
}

/// The packages of the Quick start's `apt-get install` line.
fn quick_start_packages() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("apt-get install -y build-essential"))
        .expect("the Quick start has an apt-get install line");
    line.split("install -y")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_quick_start_installs_what_ci_installs() {
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    // `[command]=package` lines of .ci/run's table.
    let ci_packages: BTreeSet<String> = ci
        .lines()
        .filter_map(|l| l.trim().strip_prefix('['))
        .filter_map(|l| l.split_once("]="))
        .map(|(_, package)| package.trim().to_owned())
        .collect();
    assert!(ci_packages.len() >= 8, "{ci_packages:?}");
    let readme = quick_start_packages();
    // Packages the README's line brings in as dependencies.
    let covered_by: &[(&str, &str)] = &[
        ("make", "build-essential"),
        ("gcc", "build-essential"),
        ("python3", "python3-venv"),
    ];
    let missing: Vec<_> = ci_packages
        .iter()
        .filter(|p| !readme.contains(*p))
        .filter(|p| {
            !covered_by
                .iter()
                .any(|(pkg, by)| pkg == p && readme.contains(*by))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the Quick start's apt line lacks what .ci/run installs: {missing:?} (README has {readme:?})"
    );
}
